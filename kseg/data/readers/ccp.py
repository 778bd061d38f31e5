"""Clothing Co-Parsing / people-parsing (format ``ccp``): 59 raw labels → class groups."""

from __future__ import annotations

import ast

from pathlib import Path

from kseg.data.readers.base import (
    SegDataset, SegSample, _meta_list, _read_json, _require_dir, grouping_lut, identity_lut, pair_folders,
)
from kseg.errors import KsegError


def _ccp_groups(root: Path, groups):
    meta_path = root / "classes.json"
    if not meta_path.is_file():
        raise KsegError(f"{meta_path} not found; the ccp format needs the 59 label names in classes.json")
    meta = _read_json(meta_path, "class list")
    raw = list(_meta_list(meta, "labels", meta_path))
    if groups in (None, "suggested"):
        g = meta.get("suggested_groups")
        if isinstance(g, str):
            try:  # a Python-literal dict in a string: parsed as data, never executed
                g = ast.literal_eval(g)
            except (ValueError, SyntaxError):
                g = None
        if not isinstance(g, dict):
            raise KsegError(f"{meta_path} has no readable 'suggested_groups' map; pass groups=person, raw or a JSON map path")
        return grouping_lut(raw, g)
    if groups == "person":
        return grouping_lut(raw, {"background": ["background"], "person": [n for n in raw if n != "background"]})
    if groups == "raw":
        return tuple(raw), identity_lut(len(raw))
    p = Path(groups)
    if not p.is_file():
        raise KsegError(f"groups={groups!r}: use suggested, person, raw or the path of a JSON map {{class: [labels]}}")
    g = _read_json(p, "label map")
    if not isinstance(g, dict) or not all(isinstance(v, list) for v in g.values()):
        raise KsegError(f"label map {p} must be a JSON object {{class: [raw labels...]}}")
    return grouping_lut(raw, g)


def open_ccp(path, groups="suggested", strict=True) -> SegDataset:
    """Clothing Co-Parsing / people-parsing: ``images/*.jpg``, ``labels/*.png`` (59 labels).

    Args:
        path: dataset root.
        groups: ``"suggested"`` (8 groups of classes.json), ``"person"`` (background/person),
            ``"raw"`` (59 labels) or a path to a JSON ``{class: [raw label names]}`` map.
            Raw labels in no group are ignored (255).
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_ccp("../shared/data/people-parsing", groups="person")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    names, lut = _ccp_groups(root, groups)
    pairs = pair_folders(root / "images", root / "labels", strict=strict)
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    return SegDataset(root.name, names, samples, lut[None], (root.name,))
