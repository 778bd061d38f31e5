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


def _matches_per_image(gt_json, results, iou_type, cat_ids):
    """pycocotools' matching of each image (``COCOeval.evaluate``; area "all", the last maxDets).

    Returns ``(image_ids, iou_thresholds, recall_thresholds, rows)``: ``rows[k][i]`` is ``None``
    (neither ground truth nor detections of category ``k`` in image ``i``) or ``(scores (D,),
    matched (T, D) bool, ignored (T, D) bool, ground truths not ignored)``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval, Params

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        if not results:  # nothing detected: every ground truth is missed (COCOeval cannot load [])
            p = Params(iouType=iou_type)
            cats = sorted(int(c) for c in cat_ids) if cat_ids is not None else sorted(gt.getCatIds())
            ids, empty = sorted(gt.getImgIds()), np.zeros((len(p.iouThrs), 0), bool)
            rows = []
            for c in cats:
                per = []
                for i in ids:
                    anns = gt.loadAnns(gt.getAnnIds(imgIds=i, catIds=c, iscrowd=None))
                    kept = sum(1 for a in anns if not a.get("iscrowd", 0) and not a.get("ignore", 0))
                    per.append((np.zeros(0), empty, empty, kept) if anns else None)
                rows.append(per)
            return ids, np.asarray(p.iouThrs), np.asarray(p.recThrs), rows
        ev = COCOeval(gt, gt.loadRes(list(results)), iouType=iou_type)
        if cat_ids is not None:
            ev.params.catIds = sorted(int(c) for c in cat_ids)
        ev.evaluate()
    p = ev.params
    n_img, n_area, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    rows = []
    for k in range(len(p.catIds)):
        per = []
        for i in range(n_img):
            e = ev.evalImgs[k * n_area * n_img + i]  # area range 0 ("all")
            per.append(None if e is None else (
                np.asarray(e["dtScores"][:max_det], np.float64), np.asarray(e["dtMatches"])[:, :max_det] > 0,
                np.asarray(e["dtIgnore"])[:, :max_det].astype(bool), int((np.asarray(e["gtIgnore"]) == 0).sum())))
        rows.append(per)
    return list(p.imgIds), np.asarray(p.iouThrs), np.asarray(p.recThrs), rows


def _average_precision(rows, sample, iou_thresholds, recall_thresholds):
    """COCO AP@[.50:.95] and AP50 over the images ``sample`` (indices, repeats allowed), computed as
    ``COCOeval.accumulate`` does; ``-1`` where no category has a ground truth."""
    precision = []
    for per in rows:
        picked = [per[i] for i in sample if per[i] is not None]
        n_gt = sum(r[3] for r in picked)
        if not n_gt:
            continue
        scores = np.concatenate([r[0] for r in picked])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([r[1] for r in picked], axis=1)[:, order]
        ignored = np.concatenate([r[2] for r in picked], axis=1)[:, order]
        tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
        fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
        q = np.zeros((len(iou_thresholds), len(recall_thresholds)))
        for t in range(len(iou_thresholds)):
            if not tp.shape[1]:
                continue
            rc = tp[t] / n_gt
            pr = np.maximum.accumulate((tp[t] / (tp[t] + fp[t] + np.spacing(1)))[::-1])[::-1]
            idx = np.searchsorted(rc, recall_thresholds, side="left")
            ok = idx < len(pr)
            q[t, ok] = pr[idx[ok]]
        precision.append(q)
    if not precision:
        return -1.0, -1.0
    precision = np.stack(precision)
    return float(precision.mean()), float(precision[:, 0].mean())


def coco_bootstrap(gt_json, results, baseline=None, iou_type="segm", cat_ids=None, resamples=2000, seed=0,
                   level=0.95):
    """COCO AP with a bootstrap interval over images, and a paired comparison with another model.

    The images are drawn with replacement ``resamples`` times; each draw's AP is recomputed from
    pycocotools' per-image matching exactly as ``COCOeval.accumulate`` does (with every image once
    it equals pycocotools' AP). With ``baseline`` (the other model's results on the same images),
    both are scored on the same draws, so the interval of the difference is paired: it tells
    whether a change is larger than what the choice of images alone moves.

    Args:
        gt_json: COCO ground truth restricted to the scored images and categories.
        results: COCO results (list of dicts) of the model.
        baseline: COCO results of the model to compare with, or ``None``.
        iou_type: ``"segm"`` (mask AP) or ``"bbox"``.
        cat_ids: categories to average over (``None``: all of ``gt_json``'s).
        resamples: bootstrap draws.
        seed: random seed of the draws.
        level: two-sided percentile interval level.

    Returns:
        dict ``images``, ``resamples``, ``level``, ``AP``, ``AP_ci`` ``[lo, hi]``, ``AP50``,
        ``AP50_ci``; with ``baseline`` also ``baseline_AP``, ``baseline_AP50``, ``diff_AP``,
        ``diff_AP_ci``, ``diff_AP50``, ``diff_AP50_ci`` and ``p_not_better`` (the share of draws in
        which the model's AP is not above the baseline's).

    Example:
        b = coco_bootstrap("gt.json", new_results, baseline=old_results, cat_ids=[1])
        print(f"{b['diff_AP']:+.3f} [{b['diff_AP_ci'][0]:+.3f}, {b['diff_AP_ci'][1]:+.3f}]")

    Reference:
        Efron and Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval).
    """
    if iou_type not in ("segm", "bbox"):
        raise KsegError(f"coco_bootstrap iou_type={iou_type!r}: use segm or bbox")
    if int(resamples) < 1:
        raise KsegError(f"coco_bootstrap resamples={resamples}: draw at least 1 (e.g. 2000)")
    ids, ious, recalls, rows = _matches_per_image(gt_json, list(results), iou_type, cat_ids)
    runs = [rows]
    if baseline is not None:
        runs.append(_matches_per_image(gt_json, list(baseline), iou_type, cat_ids)[3])
    n = len(ids)
    everything = np.arange(n)
    full = [_average_precision(r, everything, ious, recalls) for r in runs]
    rng = np.random.default_rng(seed)
    draws = np.array([[_average_precision(r, sample, ious, recalls) for r in runs]
                      for sample in (rng.integers(0, n, n) for _ in range(int(resamples)))])  # (R, runs, 2)
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(x):
        return [float(v) for v in np.percentile(x, [tail, 100.0 - tail])]

    out = {"images": n, "resamples": int(resamples), "level": level,
           "AP": full[0][0], "AP_ci": interval(draws[:, 0, 0]), "AP50": full[0][1], "AP50_ci": interval(draws[:, 0, 1])}
    if baseline is not None:
        diff = draws[:, 0] - draws[:, 1]
        out.update(baseline_AP=full[1][0], baseline_AP50=full[1][1],
                   diff_AP=full[0][0] - full[1][0], diff_AP_ci=interval(diff[:, 0]),
                   diff_AP50=full[0][1] - full[1][1], diff_AP50_ci=interval(diff[:, 1]),
                   p_not_better=float(np.mean(diff[:, 0] <= 0.0)))
    return out


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
                       results_path=None, threshold: float = 0.5, progress=None, compare: InstanceModel | None = None,
                       bootstrap: int = 0, seed: int = 0) -> dict:
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
        compare: another instance model scored on the same images (its figures go under
            ``compare``); with ``bootstrap`` the differences get paired intervals.
        bootstrap: draws of a bootstrap over the images (``coco_bootstrap``; 0: none): 95%
            intervals of mask and box AP, and of the difference from ``compare``.
        seed: the bootstrap's random seed.

    Returns:
        dict ``model``, ``data``, ``images``, ``detections``, ``categories``, ``segm`` and
        ``bbox`` (``kseg.metrics.COCO_STATS`` keys), ``seconds_per_image``; with ``compare`` also
        ``compare`` (``model``, ``detections``, ``segm``, ``bbox``, ``seconds_per_image``); with
        ``bootstrap`` also ``bootstrap`` (``segm`` and ``bbox``: ``coco_bootstrap``'s dicts).

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
    other = None
    if compare is not None:
        t0 = time.perf_counter()
        other = detect_coco(compare, coco, _class_map(compare, coco, categories), threshold, progress)
        dt_other = time.perf_counter() - t0
    cat_ids = sorted(set(class_map.values()))
    names = {v: k for k, v in zip(coco.category_names, coco.category_ids)}
    report = {
        "model": str(model.path),
        "format": model.format,
        "data": str(coco.ann_file),
        "images": len(coco),
        "detections": len(results),
        "categories": [names[c] for c in cat_ids],
        "seconds_per_image": dt / max(len(coco), 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        gt = subset_coco_json(coco.ann_file, Path(tmp) / "gt.json", cat_ids, coco.image_ids)
        for kind in ("segm", "bbox"):
            report[kind] = coco_eval(gt, results, kind, cat_ids=cat_ids)
        if other is not None:
            report["compare"] = {"model": str(compare.path), "format": compare.format, "detections": len(other),
                                 "seconds_per_image": dt_other / max(len(coco), 1),
                                 **{kind: coco_eval(gt, other, kind, cat_ids=cat_ids) for kind in ("segm", "bbox")}}
        if bootstrap:
            report["bootstrap"] = {kind: coco_bootstrap(gt, results, other, kind, cat_ids, bootstrap, seed)
                                   for kind in ("segm", "bbox")}
    return report


def format_instance_report(report: dict) -> str:
    """A markdown table of ``evaluate_instances``' report, for people."""
    cols = ("", *STAT_KEYS)
    lines = [f"{report['model']} on {report['data']}: {report['images']} images, {report['detections']} detections, "
             f"categories {', '.join(report['categories'])}",
             "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    other = report.get("compare")
    for kind, label in (("segm", "mask"), ("bbox", "box")):
        for r, name in ((report, label), (other, f"{label}, {other['model']}" if other else "")):
            if r:
                lines.append("| " + " | ".join([name, *("n/a" if r[kind][k] < 0 else f"{r[kind][k]:.3f}"
                                                        for k in STAT_KEYS)]) + " |")
    lines += ["", "pycocotools COCOeval (AP = AP@[.50:.95], AR = AR@100 unless named; -1/n/a: nothing of that size); "
                  f"{report['seconds_per_image']:.2f} s per image"]
    if other:
        lines[-1] += f" ({other['seconds_per_image']:.2f} for {other['model']}, {other['detections']} detections)"
    boot = report.get("bootstrap")
    if boot:
        def iv(x):
            return f"[{x[0]:+.3f}, {x[1]:+.3f}]"

        b0 = boot["segm"]
        lines += ["", f"bootstrap over the {b0['images']} images ({b0['resamples']} draws, "
                      f"{100 * b0['level']:.0f}% percentile intervals):"]
        for kind, label in (("segm", "mask"), ("bbox", "box")):
            b = boot[kind]
            line = (f"- {label} AP {b['AP']:.3f} [{b['AP_ci'][0]:.3f}, {b['AP_ci'][1]:.3f}], "
                    f"AP50 {b['AP50']:.3f} [{b['AP50_ci'][0]:.3f}, {b['AP50_ci'][1]:.3f}]")
            if "diff_AP" in b:
                line += (f"; minus {other['model']}: AP {b['diff_AP']:+.3f} {iv(b['diff_AP_ci'])}, "
                         f"AP50 {b['diff_AP50']:+.3f} {iv(b['diff_AP50_ci'])} (paired; not better in "
                         f"{100 * b['p_not_better']:.1f}% of draws)")
            lines.append(line)
    return "\n".join(lines)
