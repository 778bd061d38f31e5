"""Oxford-IIIT Pets trimaps (format ``pets``): 1 pet, 2 background, 3 border."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.data.readers.base import IGNORE, UNKNOWN, SegDataset, SegSample, _require_dir, pair_folders
from kseg.errors import KsegError


PET_BREEDS = ("Abyssinian", "Bengal", "american_bulldog")


def open_pets(path, border="ignore", breeds=False, strict=True) -> SegDataset:
    """Oxford-IIIT Pets trimaps: 1 pet, 2 background, 3 border.

    Args:
        border: ``"ignore"`` (255, the usual choice), ``"pet"``, or ``"class"``: the trimap's
            three classes (background, pet, border) as in the TensorFlow segmentation tutorial.
        breeds: ``False`` → classes (background, pet); ``True`` → background + one class per
            breed found in the file names (``Abyssinian_12.jpg`` → Abyssinian), sorted; on
            the shared sample that is ("background", "Abyssinian", "Bengal",
            "american_bulldog"): 3 breeds + background, one LUT row (source) per breed.
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_pets("../shared/data/pets", border="ignore")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    if border not in ("ignore", "pet", "class"):
        raise KsegError(f"pets border={border!r}: use ignore, pet or class")
    pairs = pair_folders(root / "images", root / "trimaps", strict=strict)

    def breed(p: Path) -> str:
        return p.stem.rsplit("_", 1)[0]

    if border == "class" and breeds:
        raise KsegError("pets border='class' with breeds=True is not supported; use border ignore or pet with breeds")
    if not breeds:
        names = ("background", "pet", "border") if border == "class" else ("background", "pet")
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[1], lut[2], lut[3], lut[255] = 1, 0, {"ignore": IGNORE, "pet": 1, "class": 2}[border], IGNORE
        samples = [SegSample(str(i), str(m)) for i, m in pairs]
        return SegDataset(root.name, names, samples, lut[None], (root.name,))
    kinds = sorted({breed(i) for i, _ in pairs})
    names = ("background", *kinds)
    luts = []
    for k, _ in enumerate(kinds):
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[1], lut[2], lut[3], lut[255] = k + 1, 0, (IGNORE if border == "ignore" else k + 1), IGNORE
        luts.append(lut)
    samples = [SegSample(str(i), str(m), kinds.index(breed(i))) for i, m in pairs]
    return SegDataset(root.name, names, samples, np.stack(luts), tuple(kinds))
