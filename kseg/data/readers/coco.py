"""COCO instance JSON (format ``coco``): semantic masks of chosen categories, or instances.

``open_coco`` renders the categories' masks into a ``SegDataset``; ``open_instances`` keeps
them per instance in an ``InstanceDataset`` (for Mask R-CNN). Both use pycocotools.
"""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np

from kseg.data.readers.base import (
    IGNORE, InstanceDataset, SegDataset, SegSample, _require_dir, identity_lut,
)
from kseg.errors import KsegError


def _coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    if split not in ("train", "val"):
        raise KsegError(f"coco split {split!r} does not exist; use train or val")
    ann = root / "annotations" / f"instances_{split}2017.json"
    if not ann.is_file():
        raise KsegError(f"COCO annotation file {ann} not found; expected annotations/instances_{split}2017.json")
    for cand in (root / f"{split}2017", root / "images" / f"{split}2017"):
        if cand.is_dir():
            return ann, cand
    raise KsegError(f"COCO image folder for {split} not found in {root} (looked for {split}2017/ and images/{split}2017/)")


def _load_coco(ann: Path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann))
    except json.JSONDecodeError as e:
        raise KsegError(f"COCO file {ann} is not valid JSON (line {e.lineno}); re-copy it") from None
    except (KeyError, TypeError) as e:
        raise KsegError(f"COCO file {ann} lacks the field {e} of an instances file") from None


def _coco_category_ids(coco, categories):
    cats = coco.loadCats(coco.getCatIds())
    by_name = {c["name"]: c["id"] for c in cats}
    if categories is None:
        return [c["id"] for c in sorted(cats, key=lambda c: c["id"])], [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    ids = []
    for n in categories:
        if n not in by_name:
            raise KsegError(f"COCO category {n!r} not in the annotations; known: {', '.join(sorted(by_name)[:12])}...")
        ids.append(by_name[n])
    return ids, list(categories)


def _ann_mask(coco, ann, h, w) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6]  # fewer than 3 points has no area
            if not polys:
                return np.zeros((h, w), np.uint8)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg, dict):
            rle = seg
        else:
            raise TypeError(type(seg).__name__)
        m = mask_utils.decode(rle).astype(np.uint8)
    except Exception as e:  # pycocotools raises bare Exceptions for bad RLE
        raise KsegError(
            f"COCO annotation id {ann.get('id')} (image id {ann.get('image_id')}) has an unreadable "
            f"segmentation ({type(e).__name__}: {str(e).strip() or 'bad value'}); fix or remove that annotation"
        ) from None
    if m.shape != (h, w):
        raise KsegError(
            f"COCO annotation id {ann.get('id')} is an RLE of {m.shape[1]}×{m.shape[0]} but its image "
            f"(id {ann.get('image_id')}) is {w}×{h} in the JSON; fix the annotation's size"
        )
    return m


def open_coco(path, split="train", categories=("person",), keep_empty=False) -> SegDataset:
    """COCO instances → semantic masks of the chosen categories (crowd regions ignored).

    Masks are rendered once with pycocotools and kept as PNG bytes in the samples.

    Args:
        path: a COCO subset folder (``annotations/instances_{split}2017.json`` + images).
        split: ``"train"`` or ``"val"``.
        categories: category names, in class order after background.
        keep_empty: keep images that contain none of the categories.

    Example:
        ds = open_coco("../shared/data/coco/coco-mini", "val", categories=("person",))
    """
    import cv2

    root = Path(path)
    _require_dir(root, "dataset")
    ann_path, img_dir = _coco_paths(root, split)
    coco = _load_coco(ann_path)
    cat_ids, names = _coco_category_ids(coco, categories)
    cls_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    samples = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        h, w = info["height"], info["width"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=cat_ids, iscrowd=None))
        if not anns and not keep_empty:
            continue
        mask = np.zeros((h, w), np.uint8)
        # crowd regions first: an outlined instance inside a crowd keeps its class
        for a in sorted(anns, key=lambda a: -a.get("iscrowd", 0)):
            m = _ann_mask(coco, a, h, w).astype(bool)
            mask[m] = IGNORE if a.get("iscrowd", 0) else cls_of[a["category_id"]]
        ok, png = cv2.imencode(".png", mask)
        samples.append(SegSample(str(img_dir / info["file_name"]), png.tobytes()))
    if not samples:
        raise KsegError(f"no image in {ann_path} contains {', '.join(names)}; choose other categories or keep_empty=True")
    lut = identity_lut(len(names) + 1)
    return SegDataset(f"{root.name}-{split}", ("background", *names), samples, lut[None], (f"{root.name}-{split}",))


def open_instances(path, split="train", categories=None) -> InstanceDataset:
    """COCO instances of the chosen categories as an ``InstanceDataset`` (for Mask R-CNN).

    Images without any instance of the categories are left out. Crowd annotations are kept
    with ``iscrowd=True`` (train code usually ignores them; COCO evaluation needs them).

    Args:
        path: a COCO subset folder (``annotations/instances_{split}2017.json`` + images in
            ``{split}2017/`` or ``images/{split}2017/``).
        split: ``"train"`` or ``"val"``.
        categories: category names (classes 1..K in this order); ``None``: every category of
            the file, in COCO id order.

    Returns:
        An InstanceDataset; ``coco_category_ids[k - 1]`` is the COCO id of class ``k`` and
        ``image_ids`` the COCO image ids, for COCO-format results.

    Example:
        inst = open_instances("../shared/data/coco/coco-mini", "val", categories=("person",))
        image, target = inst.load(0)  # target["masks"]: (N, H, W) uint8
    """
    root = Path(path)
    _require_dir(root, "dataset")
    ann_path, img_dir = _coco_paths(root, split)
    coco = _load_coco(ann_path)
    cat_ids, names = _coco_category_ids(coco, categories)
    cls_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    paths, loaders, ids = [], [], []
    for img_id in sorted(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=cat_ids, iscrowd=None))
        if not anns:
            continue
        info = coco.loadImgs(img_id)[0]

        def load(anns=anns, h=info["height"], w=info["width"]):
            masks = np.stack([_ann_mask(coco, a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
            return {
                "masks": masks,
                "boxes": boxes,
                "category_ids": np.array([cls_of[a["category_id"]] for a in anns], np.int32),
                "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            }

        paths.append(str(img_dir / info["file_name"]))
        loaders.append(load)
        ids.append(img_id)
    return InstanceDataset(f"{root.name}-{split}", ("background", *names), paths, loaders, tuple(cat_ids), ids)


# --------------------------------------------------------------------------------------
# panoptic ground truth from instance annotations

BACKGROUND_STUFF = 0  # category id of "background" stuff: not a COCO id (COCO's start at 1)


def panoptic_from_instances(masks, category_ids, iscrowd, background: int | None = BACKGROUND_STUFF):
    """A panoptic map (segment ids + segments) from the instance masks of one image.

    Non-crowd instances are things, one segment each; crowd regions of a category are merged
    into one crowd segment (``iscrowd: 1``: not matched, predictions on them not counted as
    false positives); pixels where two non-crowd instances overlap are void (0), as they
    cannot be given to either. With ``background``, every pixel no annotation covers is one
    stuff segment of that category: "everything but these things".

    Args:
        masks: ``(N, H, W)`` 0/1 instance masks.
        category_ids: ``(N,)`` category id of each.
        iscrowd: ``(N,)`` bool.
        background: the category id of the background stuff segment (``None``: leave those
            pixels void).

    Returns:
        ``(ids, segments)``: ``(H, W)`` int32 segment ids (0 = void) and COCO panoptic
        ``segments_info`` dicts ``{"id", "category_id", "iscrowd", "area"}``; segments left
        without pixels are not listed.

    Example:
        image, target = open_instances(path, "val", ("person",)).load(0)
        ids, segments = panoptic_from_instances(target["masks"], target["category_ids"], target["iscrowd"])
    """
    masks = np.asarray(masks, bool)
    n = len(masks)
    ids = np.zeros(masks.shape[1:], np.int32)
    segments = []
    crowd = np.asarray(iscrowd, bool).reshape(n)
    cats = np.asarray(category_ids).reshape(n)
    covered = masks.any(axis=0) if n else np.zeros(ids.shape, bool)
    for cat in sorted(set(cats[crowd].tolist())):  # crowd first: an outlined instance on it keeps its pixels
        sid = len(segments) + 1
        ids[masks[crowd & (cats == cat)].any(axis=0)] = sid
        segments.append({"id": sid, "category_id": int(cat), "iscrowd": 1})
    things = np.nonzero(~crowd)[0]
    count = masks[things].sum(axis=0) if len(things) else np.zeros(ids.shape, np.int64)
    for k in things:
        sid = len(segments) + 1
        ids[masks[k] & (count == 1)] = sid
        segments.append({"id": sid, "category_id": int(cats[k]), "iscrowd": 0})
    ids[count > 1] = 0
    if background is not None:
        sid = len(segments) + 1
        ids[~covered] = sid
        segments.append({"id": sid, "category_id": int(background), "iscrowd": 0})
    areas = np.bincount(ids.ravel(), minlength=len(segments) + 1)
    segments = [{**s, "area": int(areas[s["id"]])} for s in segments if areas[s["id"]] > 0]
    return ids, segments


class PanopticDataset:
    """COCO images with a panoptic ground truth built from their instance annotations.

    ``load(i)`` → ``(image, ids, segments)`` (see ``panoptic_from_instances``).

    Attributes:
        name: ``"{folder}-{split}"``.
        categories: COCO-style ``{"id", "name", "isthing"}`` of the things and the stuff.
        image_paths, image_ids: every image of the split (with or without things).
    """

    def __init__(self, name, categories, image_paths, image_ids, loaders):
        self.name = name
        self.categories = categories
        self.image_paths = image_paths
        self.image_ids = image_ids
        self._loaders = loaders

    def __len__(self):
        return len(self.image_paths)

    def load(self, i):
        from kseg.data.readers.base import read_image

        image = read_image(self.image_paths[i])
        masks, cats, crowd = self._loaders[i]()
        if len(masks) and masks.shape[1:] != image.shape[:2]:
            raise KsegError(f"annotations of {self.image_paths[i]} are for a {masks.shape[2]}×{masks.shape[1]} image "
                            f"but the file is {image.shape[1]}×{image.shape[0]}; the image does not match its annotation")
        if not len(masks):
            masks = np.zeros((0, *image.shape[:2]), np.uint8)
        ids, segments = panoptic_from_instances(masks, cats, crowd, BACKGROUND_STUFF)
        return image, ids, segments


def open_coco_panoptic(path, split="val", things=("person",), limit=None) -> PanopticDataset:
    """Every image of a COCO split, with a panoptic ground truth of ``things`` + background stuff.

    The shared COCO subsets have instance annotations only (no COCO panoptic PNGs, no stuff
    annotations), so the ground truth is built from them: each instance of ``things`` is a thing
    segment (crowds as crowd regions), and every other pixel, other COCO objects included, is one
    "background" stuff segment (category id 0).

    Args:
        path: a COCO subset folder (``annotations/instances_{split}2017.json`` + images).
        split: ``"train"`` or ``"val"``.
        things: thing category names.
        limit: only the first ``limit`` images (by image id).

    Example:
        ds = open_coco_panoptic("../shared/data/coco/coco-mini", "val")
        image, ids, segments = ds.load(0)
    """
    root = Path(path)
    _require_dir(root, "dataset")
    ann_path, img_dir = _coco_paths(root, split)
    coco = _load_coco(ann_path)
    cat_ids, names = _coco_category_ids(coco, things)
    paths, ids, loaders = [], [], []
    for img_id in sorted(coco.getImgIds())[: limit or None]:
        info = coco.loadImgs(img_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=cat_ids, iscrowd=None))

        def load(anns=anns, h=info["height"], w=info["width"]):
            masks = np.stack([_ann_mask(coco, a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            return (masks, np.array([a["category_id"] for a in anns], np.int64),
                    np.array([bool(a.get("iscrowd", 0)) for a in anns], bool))

        paths.append(str(img_dir / info["file_name"]))
        ids.append(img_id)
        loaders.append(load)
    if not paths:
        raise KsegError(f"{ann_path} lists no image")
    categories = [{"id": c, "name": n, "isthing": 1} for c, n in zip(cat_ids, names)]
    categories.append({"id": BACKGROUND_STUFF, "name": "background", "isthing": 0})
    return PanopticDataset(f"{root.name}-{split}", categories, paths, ids, loaders)
