"""Generic image + mask folders (format ``masks``): binary 0/255 masks or integer label PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.data.readers.base import (
    UNKNOWN, SegDataset, SegSample, _meta_list, _read_json, _require_dir, identity_lut, pair_folders,
    read_label,
)
from kseg.errors import KsegError


def open_masks(path, class_names=None, binary: bool | None = None, image_dir=None, mask_dir=None, strict=True) -> SegDataset:
    """Image + mask folders (``images/`` with ``masks/`` or ``labels/``), matched by stem.

    Args:
        path: the dataset root.
        class_names: class names; default from ``classes.json`` (key ``classes`` or
            ``labels``) or ``("background", "person")`` for binary masks.
        binary: masks are 0/255 (→ 0/1). Default: detected from the first mask's values.
        image_dir, mask_dir: folder names if not the standard ones.
        strict: a missing pair is an error (else such images are left out; the folder
            readers all take this option, which ``kseg data check`` uses to list them).

    Example:
        ds = open_masks("../shared/data/people-masks")  # 0/255 masks → background/person
    """
    root = Path(path)
    _require_dir(root, "dataset")
    im_dir = root / (image_dir or "images")
    if mask_dir:
        m_dir = root / mask_dir
    else:
        m_dir = next((root / d for d in ("masks", "labels", "annotations") if (root / d).is_dir()), root / "masks")
    pairs = pair_folders(im_dir, m_dir, strict=strict)
    if class_names is None and (root / "classes.json").is_file():
        meta = _read_json(root / "classes.json", "class list")
        class_names = _meta_list(meta, "classes" if "classes" in meta else "labels", root / "classes.json")
    if binary is None:
        values = np.unique(read_label(pairs[0][1]))
        binary = class_names is None and (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1})
    if binary:
        names = tuple(class_names or ("background", "person"))
        if len(names) != 2:
            raise KsegError(f"binary masks in {m_dir} need exactly 2 class names, got {list(names)}")
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[0], lut[255] = 0, 1
        lut[1] = 1  # masks saved as 0/1 are binary too
    else:
        if class_names is None:
            raise KsegError(
                f"label masks in {m_dir} need class names: pass class_names=... or add "
                f"{root / 'classes.json'} with {{\"classes\": [...]}}"
            )
        names = tuple(class_names)
        lut = identity_lut(len(names))
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    return SegDataset(root.name, names, samples, lut[None], (root.name,))
