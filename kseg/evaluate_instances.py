"""Instance segmentation (Mask R-CNN) on COCO: box and mask AP/AR with pycocotools.

The instance counterpart of ``kseg.evaluate``: ``evaluate_instances`` runs any
``kseg.runtime.InstanceModel`` (``.tflite``, ``.keras`` or ``.weights.h5`` with its config) over
the images of a COCO annotation file (``open_coco_images``) and scores masks and boxes;
``predict_coco``, ``coco_results`` and ``coco_eval`` are the pieces, also used on a Keras
``MaskRCNN`` during training experiments.

Example:
    from kseg.runtime import load_instance_model
    from kseg.evaluate_instances import evaluate_instances, format_instance_report
    m = load_instance_model("exports/person-instances.tflite")
    report = evaluate_instances(m, "coco/coco-mini", categories=("person",))
    print(format_instance_report(report))
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path
from kseg.runtime.instances import InstanceModel, paste_masks

STAT_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100")


# --------------------------------------------------------------------------------------
# COCO data


@dataclass
class CocoImages:
    """The images of a COCO annotation file to evaluate on.

    Attributes:
        ann_file: the instances JSON.
        image_dir: where its ``file_name``s are.
        image_ids, image_paths: images holding at least one annotation of ``category_ids``.
        category_ids, category_names: the chosen COCO categories.
    """

    ann_file: Path
    image_dir: Path
    image_ids: list
    image_paths: list
    category_ids: list
    category_names: list

    def __len__(self):
        return len(self.image_ids)


def _guess_image_dir(ann: Path, split: str | None) -> Path | None:
    stem = ann.stem  # instances_val2017
    guess = stem.split("_", 1)[1] if "_" in stem else None
    names = [n for n in (guess, f"{split}2017" if split else None) if n]
    roots = [ann.parent.parent, ann.parent]
    for root in roots:
        for n in names:
            for cand in (root / n, root / "images" / n):
                if cand.is_dir():
                    return cand
    for root in roots:  # images beside the JSON
        if (root / "images").is_dir():
            return root / "images"
    return None


def open_coco_images(data, split: str | None = None, categories=None, images=None, limit=None) -> CocoImages:
    """The COCO images to evaluate on, from a COCO folder (and split) or an annotation JSON.

    Only images with at least one (crowd or not) annotation of the chosen categories are kept, as
    ``kseg.data.readers.open_instances`` does (the protocol of docs/mask_rcnn.md's figures).

    Args:
        data: a COCO folder (``annotations/instances_{split}2017.json`` + ``{split}2017/``),
            a name under the shared data folder (``coco/coco-mini``), or an instances JSON.
        split: ``"val"`` (default) or ``"train"`` for a folder.
        categories: category names (``None``: every category of the file).
        images: the image folder of an annotation JSON (default: guessed from its place).
        limit: only the first ``limit`` images (by image id).

    Example:
        imgs = open_coco_images("coco/coco-mini", "val", categories=("person",))
    """
    from kseg.config import resolve_data_path

    root = resolve_data_path(data)
    if root.is_dir():
        split = split or "val"
        ann = root / "annotations" / f"instances_{split}2017.json"
        if not ann.is_file():
            raise KsegError(f"COCO annotation file {ann} not found; give a COCO folder with "
                            f"annotations/instances_{split}2017.json or the annotation JSON itself")
    elif root.suffix == ".json":
        ann = root
        if not ann.is_file():
            raise KsegError(f"COCO annotation file {ann} not found; check the path")
    elif not root.exists():
        raise KsegError(f"data {data} not found; give a COCO folder (e.g. coco/coco-mini) or an instances JSON")
    else:
        raise KsegError(f"data {data} is neither a COCO folder nor a .json annotation file")
    try:
        doc = json.loads(ann.read_text())
    except ValueError as e:
        raise KsegError(f"COCO file {ann} is not valid JSON ({e}); re-copy it") from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
        raise KsegError(f"{ann} is not a COCO instances file (needs images, annotations and categories)")
    image_dir = Path(images) if images else _guess_image_dir(ann, split)
    if image_dir is None or not image_dir.is_dir():
        raise KsegError(f"image folder for {ann} not found (looked beside it for {ann.stem.split('_')[-1]}/ and images/); "
                        "pass --images DIR")
    by_name = {c["name"]: int(c["id"]) for c in doc["categories"]}
    if categories is None:
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        names, ids = [c["name"] for c in cats], [int(c["id"]) for c in cats]
    else:
        missing = [n for n in categories if n not in by_name]
        if missing:
            raise KsegError(f"COCO category {missing[0]!r} is not in {ann.name}; its categories include "
                            f"{', '.join(sorted(by_name)[:10])}")
        names, ids = list(categories), [by_name[n] for n in categories]
    wanted = set(ids)
    with_anns = {a["image_id"] for a in doc["annotations"] if a["category_id"] in wanted}
    infos = sorted((i for i in doc["images"] if i["id"] in with_anns), key=lambda i: i["id"])
    if limit:
        infos = infos[: int(limit)]
    if not infos:
        raise KsegError(f"no image of {ann.name} has an annotation of {', '.join(names)}")
    return CocoImages(ann, image_dir, [int(i["id"]) for i in infos], [str(image_dir / i["file_name"]) for i in infos],
                      ids, names)


# --------------------------------------------------------------------------------------
# COCO results and AP


def coco_results(image_id, boxes, scores, classes, masks, category_ids=None):
    """Detections of one image in COCO result format (one dict per detection).

    Args:
        image_id: COCO image id.
        boxes: ``(D, 4)`` ``(x1, y1, x2, y2)`` at the image's resolution.
        scores: ``(D,)``.
        classes: ``(D,)`` model class ids 1..K.
        masks: ``(D, H, W)`` 0/1 full-image masks (``paste_masks``).
        category_ids: COCO category id of model class ``k`` at ``[k - 1]`` (default: ``k``).

    Returns:
        list of ``{"image_id", "category_id", "bbox" [x, y, w, h], "score", "segmentation" RLE}``.
    """
    from kseg.data.instances import rle_encode

    out = []
    for b, s, c, m in zip(np.asarray(boxes), np.asarray(scores), np.asarray(classes), masks):
        c = int(c)
        out.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[c - 1]) if category_ids else c,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
            "segmentation": rle_encode(m),
        })
    return out


def coco_eval(gt_json, results, iou_type="segm", cat_ids=None):
    """COCO AP/AR of results (``"segm"`` or ``"bbox"``) via pycocotools, as a dict.

    ``"segm"`` goes through ``kseg.metrics.coco_mask_ap``; ``"bbox"`` runs the same pycocotools
    evaluation on boxes. ``cat_ids``: the COCO categories to average over (``None``: all of the
    ground truth's). Keys as ``kseg.metrics.COCO_STATS``.
    """
    from kseg.metrics import COCO_STATS, coco_mask_ap

    if iou_type == "segm":
        return coco_mask_ap(gt_json, results, cat_ids=cat_ids)
    if iou_type != "bbox":
        raise KsegError(f"coco_eval iou_type={iou_type!r}: use segm or bbox")
    results = list(results)
    if not results:
        return {k: 0.0 for k in COCO_STATS}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = sorted(int(c) for c in cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}


def predict_coco(model, instances, batch_size=1, category_ids=None, image_ids=None, threshold=0.5):
    """Run a MaskRCNN over an ``InstanceDataset`` and return COCO results at original resolution.

    Args:
        model: a ``MaskRCNN``.
        instances: an ``InstanceDataset`` (images are letterboxed to the model's input size).
        batch_size: images per forward pass.
        category_ids: COCO category of class ``k`` at ``[k - 1]`` (default
            ``instances.coco_category_ids`` or ``k``).
        image_ids: COCO id of each image (default ``instances.image_ids`` or ``0, 1, ...``).
        threshold: mask probability threshold.

    Returns:
        list of COCO result dicts.
    """
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image

    size = model.image_shape[0]
    if model.image_shape[0] != model.image_shape[1]:
        raise KsegError(f"predict_coco letterboxes to a square; the model's input is {model.image_shape[:2]}")
    category_ids = category_ids or list(getattr(instances, "coco_category_ids", ()) or ())
    image_ids = image_ids or list(getattr(instances, "image_ids", ()) or range(len(instances)))
    results = []
    for start in range(0, len(instances), batch_size):
        idx = list(range(start, min(start + batch_size, len(instances))))
        raws = [read_image(instances.image_paths[i]) for i in idx]
        boxed = [letterbox(r, size) for r in raws]
        batch = np.stack([b[0] for b in boxed]).astype(np.float32)
        if len(idx) < batch_size:  # keep one traced shape
            batch = np.concatenate([batch, np.zeros((batch_size - len(idx), *batch.shape[1:]), np.float32)])
        det = {k: np.asarray(v) for k, v in model.predict_on_batch(batch).items()}
        for j, i in enumerate(idx):
            n = int(det["num_detections"][j])
            scale = boxed[j][1]
            h, w = raws[j].shape[:2]
            boxes = np.clip(det["boxes"][j, :n] / scale, 0, [w, h, w, h]).astype(np.float32)
            full = paste_masks(det["masks"][j, :n], boxes, raws[j].shape[:2], threshold)
            results += coco_results(image_ids[i], boxes, det["scores"][j, :n], det["classes"][j, :n], full, category_ids or None)
    return results


# --------------------------------------------------------------------------------------
# evaluation


def _class_map(model: InstanceModel, coco: CocoImages, categories) -> dict:
    """Model class index → COCO category id, for the categories scored."""
    names = model.class_names
    if names is None:
        if categories is None:
            raise KsegError(f"the class names of {model.path} are unknown; pass --categories (e.g. person) "
                            "or a config with class_names")
        num = getattr(model.model, "num_classes", None)
        names = ("background", *categories) if num in (None, len(categories) + 1) else None
        if names is None:
            raise KsegError(f"{model.path} has {num - 1} object classes but --categories names {len(categories)}; "
                            "give the model's classes in a config (class_names)")
    by_name = dict(zip(coco.category_names, coco.category_ids))
    chosen = categories if categories is not None else [n for n in names[1:] if n in by_name]
    for n in chosen:
        if n not in names[1:]:
            raise KsegError(f"the model has no class {n!r} (its classes: {', '.join(names[1:])}); "
                            "choose --categories among them")
    if not chosen:
        raise KsegError(f"none of the model's classes ({', '.join(names[1:])}) is a category of {coco.ann_file.name}")
    return {names.index(n): by_name[n] for n in chosen}


def detect_coco(model: InstanceModel, coco: CocoImages, class_map: dict, threshold: float = 0.5, progress=None) -> list:
    """COCO-format results (RLE masks at each image's resolution) of a model on the images.

    Args:
        model: an ``InstanceModel``.
        coco: ``CocoImages``.
        class_map: model class index → COCO category id (other classes are dropped).
        threshold: mask probability threshold.
        progress: ``None`` (default): a bar on a terminal, plain lines in a log
            (``kseg.progress``, on stderr); ``False``: nothing; a callable: called with
            ``(done, total)`` after each image.

    Returns:
        list of ``{"image_id", "category_id", "bbox", "score", "segmentation"}``.
    """
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image
    from kseg.progress import Progress

    size = model.input_size
    results = []
    bar = Progress(len(coco), "evaluation", "images", mode=None if progress is None else "off")
    report = progress or (lambda done, total: bar.set(done))
    with bar:
        for i, (image_id, path) in enumerate(zip(coco.image_ids, coco.image_paths)):
            if not Path(path).is_file():
                raise KsegError(f"image {path} of {coco.ann_file.name} not found; check --images")
            raw = read_image(path)
            boxed, scale = letterbox(raw, size)
            det = model.raw(boxed)
            n = int(det["num_detections"])
            cls = np.asarray(det["classes"][:n]).astype(int)
            keep = np.nonzero(np.isin(cls, list(class_map)))[0]
            h, w = raw.shape[:2]
            boxes = np.clip(np.asarray(det["boxes"])[keep] / scale, 0, [w, h, w, h]).astype(np.float32)
            masks = paste_masks(np.asarray(det["masks"])[keep], boxes, (h, w), threshold)
            cats = [class_map[int(c)] for c in cls[keep]]
            res = coco_results(image_id, boxes, np.asarray(det["scores"])[keep], np.arange(1, len(keep) + 1), masks, cats)
            results += res
            report(i + 1, len(coco))
    return results


def evaluate_instances(model: InstanceModel, data, split=None, categories=None, images=None, limit=None,
                       results_path=None, threshold: float = 0.5, progress=None) -> dict:
    """Box and mask AP/AR of an instance model on COCO annotations, via pycocotools.

    The ground truth is the annotation file restricted to the evaluated images and categories
    (crowd regions kept: COCO ignores detections on them); AP is averaged over ``categories``.

    Args:
        model: an ``InstanceModel`` (``load_instance_model``).
        data: a COCO folder, a name under the shared data folder or an instances JSON.
        split: the split of a folder (default ``val``).
        categories: COCO category names to score (default: the model's classes found in the file).
        images: image folder of an annotation JSON.
        limit: only the first ``limit`` images.
        results_path: also write the detections in COCO result format here (atomically).
        threshold: mask probability threshold.
        progress: as for ``detect_coco`` (default: a bar on a terminal, plain lines in a log).

    Returns:
        dict ``model``, ``data``, ``images``, ``detections``, ``categories``, ``segm`` and
        ``bbox`` (``kseg.metrics.COCO_STATS`` keys), ``seconds_per_image``.

    Example:
        r = evaluate_instances(load_instance_model("exports/person-instances.tflite"), "coco/coco-tiny")
        r["segm"]["AP"]
    """
    from kseg.data.instances import subset_coco_json

    coco = open_coco_images(data, split, categories, images, limit)
    class_map = _class_map(model, coco, categories)
    t0 = time.perf_counter()
    results = detect_coco(model, coco, class_map, threshold, progress)
    dt = time.perf_counter() - t0
    if results_path:
        with atomic_path(results_path) as tmp:
            Path(tmp).write_text(json.dumps(results))
    cat_ids = sorted(set(class_map.values()))
    with tempfile.TemporaryDirectory() as tmp:
        gt = subset_coco_json(coco.ann_file, Path(tmp) / "gt.json", cat_ids, coco.image_ids)
        segm = coco_eval(gt, results, "segm", cat_ids=cat_ids)
        bbox = coco_eval(gt, results, "bbox", cat_ids=cat_ids)
    names = {v: k for k, v in zip(coco.category_names, coco.category_ids)}
    return {
        "model": str(model.path),
        "format": model.format,
        "data": str(coco.ann_file),
        "images": len(coco),
        "detections": len(results),
        "categories": [names[c] for c in cat_ids],
        "segm": segm,
        "bbox": bbox,
        "seconds_per_image": dt / max(len(coco), 1),
    }


def format_instance_report(report: dict) -> str:
    """A markdown table of ``evaluate_instances``' report, for people."""
    cols = ("", *STAT_KEYS)
    lines = [f"{report['model']} on {report['data']}: {report['images']} images, {report['detections']} detections, "
             f"categories {', '.join(report['categories'])}",
             "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for kind, label in (("segm", "mask"), ("bbox", "box")):
        s = report[kind]
        lines.append("| " + " | ".join([label, *("n/a" if s[k] < 0 else f"{s[k]:.3f}" for k in STAT_KEYS)]) + " |")
    lines += ["", "pycocotools COCOeval (AP = AP@[.50:.95], AR = AR@100 unless named; -1/n/a: nothing of that size); "
                  f"{report['seconds_per_image']:.2f} s per image"]
    return "\n".join(lines)
