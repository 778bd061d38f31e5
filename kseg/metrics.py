"""Segmentation metrics, all derived from one streaming confusion matrix.

Rows of the confusion matrix are the true class, columns the predicted class; pixels labelled
``ignore_index`` (255) are not counted. ``y_pred`` may be logits/probabilities ``(B, H, W, C)``
or class ids ``(B, H, W)``.

- pixel accuracy (global accuracy) = trace / total
- class accuracy (SegNet's "class average accuracy") = mean over classes of recall
- IoU_c = TP / (TP + FP + FN); mIoU = mean over classes that occur in the truth or the
  prediction of the whole stream (classes never seen on either side are left out: their IoU
  is undefined, not 0)
- Dice_c = 2 TP / (2 TP + FP + FN); mean Dice likewise

Numpy helpers (``confusion_matrix``, ``scores_from_confusion``) serve ``kseg evaluate``;
``coco_mask_ap`` scores instance masks with pycocotools; ``SaliencyMetrics`` (salient-object
maps) and ``PanopticQuality`` (panoptic maps, PQ = SQ × RQ) are numpy classes of their own
modules, re-exported here.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

IGNORE = 255


# --------------------------------------------------------------------------------------
# numpy


def confusion_matrix(y_true, y_pred, num_classes, ignore_index=IGNORE) -> np.ndarray:
    """``(C, C)`` int64 counts (rows: truth, columns: prediction), ignoring ``ignore_index``."""
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    keep = (t != ignore_index) & (t < num_classes) & (t >= 0)
    idx = t[keep] * num_classes + np.clip(p[keep], 0, num_classes - 1)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(cm) -> dict:
    """Every score from a confusion matrix.

    Returns:
        dict with ``pixel_accuracy``, ``class_accuracy``, ``per_class_iou`` (NaN for classes
        absent from truth and prediction), ``miou``, ``per_class_dice``, ``mean_dice``,
        ``per_class_accuracy``.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "class_accuracy": float(np.nanmean(recall)) if np.any(gt > 0) else float("nan"),
        "per_class_accuracy": recall,
        "per_class_iou": iou,
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "per_class_dice": dice,
        "mean_dice": float(np.nanmean(dice)) if np.any(gt + pred > 0) else float("nan"),
    }


def _iou_rows(cms):
    """Class IoU of each ``(..., C, C)`` confusion matrix (NaN where a class is in neither)."""
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    union = cms.sum(-1) + cms.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def iou_bootstrap(per_image, baseline=None, class_names=None, resamples=2000, seed=0, level=0.95, chunk=250) -> dict:
    """Class IoU and mIoU with bootstrap intervals over images, and a paired comparison.

    Images are drawn with replacement ``resamples`` times; each draw's scores come from the sum of
    the drawn images' confusion matrices (dataset-level IoU, as ``scores_from_confusion`` gives on
    all of them). With ``baseline`` (the other model's per-image matrices of the same images, in
    the same order) both are scored on the same draws, so the difference's interval is paired.

    Args:
        per_image: ``(N, C, C)`` confusion matrices, one per image (rows: truth).
        baseline: the same for the model to compare with, or ``None``.
        class_names: names of the C classes (default ``"0"``, ``"1"``, …).
        resamples: bootstrap draws.
        seed: random seed of the draws.
        level: two-sided percentile interval level.
        chunk: draws summed at a time (memory: ``chunk × C²`` floats).

    Returns:
        dict ``images``, ``resamples``, ``level``, ``miou``, ``miou_ci``, ``per_class_iou``
        ``{name: [iou, lo, hi]}``; with ``baseline`` also ``baseline_miou``, ``diff_miou``,
        ``diff_miou_ci``, ``p_not_better`` (share of draws whose mIoU is not above the baseline's) and
        ``per_class_diff`` ``{name: [diff, lo, hi]}``. IoUs are fractions; a class absent from every
        draw's truth and prediction has ``None``.

    Example:
        a = evaluate(model_a, ds, per_image=True); b = evaluate(model_b, ds, per_image=True)
        iou_bootstrap(a.per_image, b.per_image, ds.class_names)["diff_miou_ci"]
    """
    from kseg.errors import KsegError

    a = np.asarray(per_image, np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or not len(a):
        raise KsegError(f"iou_bootstrap needs (N, C, C) per-image confusion matrices; got shape {a.shape}")
    runs = [a]
    if baseline is not None:
        b = np.asarray(baseline, np.float64)
        if b.shape != a.shape:
            raise KsegError(f"iou_bootstrap: the baseline's matrices {b.shape} are not of the same images "
                            f"and classes as the model's {a.shape}")
        runs.append(b)
    if int(resamples) < 1:
        raise KsegError(f"iou_bootstrap resamples={resamples}: draw at least 1 (e.g. 2000)")
    n, c = a.shape[:2]
    names = list(class_names) if class_names is not None else [str(k) for k in range(c)]
    rng = np.random.default_rng(seed)
    ious = [[] for _ in runs]
    for start in range(0, int(resamples), chunk):
        m = min(chunk, int(resamples) - start)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(m)]).astype(np.float64)
        for k, r in enumerate(runs):
            ious[k].append(_iou_rows((counts @ r.reshape(n, c * c)).reshape(m, c, c)))
    ious = [np.concatenate(x) for x in ious]  # (R, C) per run
    full = [_iou_rows(r.sum(0)) for r in runs]
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(x):
        x = x[~np.isnan(x)]
        return [float(v) for v in np.percentile(x, [tail, 100.0 - tail])] if len(x) else [None, None]

    def value(v):
        return None if np.isnan(v) else float(v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any class's pixels: NaN, left out
        miou = [np.nanmean(x, axis=1) for x in ious]
        out = {"images": n, "resamples": int(resamples), "level": level,
               "miou": value(np.nanmean(full[0])), "miou_ci": interval(miou[0]),
               "per_class_iou": {nm: [value(full[0][k]), *interval(ious[0][:, k])] for k, nm in enumerate(names)}}
        if baseline is not None:
            d = miou[0] - miou[1]
            out.update(baseline_miou=value(np.nanmean(full[1])),
                       diff_miou=value(np.nanmean(full[0]) - np.nanmean(full[1])), diff_miou_ci=interval(d),
                       p_not_better=float(np.mean(d <= 0.0)),
                       per_class_diff={nm: [value(full[0][k] - full[1][k]), *interval(ious[0][:, k] - ious[1][:, k])]
                                       for k, nm in enumerate(names)})
    return out


# --------------------------------------------------------------------------------------
# keras metrics


def _count_dtype():
    """float64: counts stay exact up to 2**53 pixels (float32 stops counting at 2**24 ≈ 16.8 M
    pixels per cell, ~64 images of 512×512). JAX without ``jax_enable_x64`` has no float64, so
    float32 there."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


@keras.saving.register_keras_serializable(package="kseg")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix; ``result()`` is the ``(C, C)`` float32 matrix.

    ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``. Every other metric here
    subclasses it and only changes ``result()``. Labels may be ``(B, H, W)`` or
    ``(B, H, W, 1)``, any integer dtype; ``y_pred`` logits ``(B, H, W, C)`` (any float dtype,
    argmax taken) or class ids ``(B, H, W)``. Predicted ids outside ``[0, C)`` are clipped.
    ``sample_weight`` may be a scalar, per image ``(B,)`` or per pixel ``(B, H, W)``.

    Args:
        num_classes: C.
        ignore_index: label ignored (default 255).

    Example:
        cm = ConfusionMatrix(3); cm.update_state(labels, logits); cm.result()  # (3, 3)
    """

    def __init__(self, num_classes, ignore_index=IGNORE, name="confusion_matrix", dtype="float32", **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.cm = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                    name="cm", dtype=_count_dtype(), aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_true.shape) == 4 and y_true.shape[-1] == 1:  # (B, H, W, 1) labels
            y_true = ops.squeeze(y_true, -1)
        if len(y_pred.shape) == len(y_true.shape) + 1:  # logits / probabilities
            y_pred = ops.argmax(y_pred, axis=-1)
        t = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        p = ops.reshape(ops.cast(y_pred, "int32"), (-1,))
        valid = ops.logical_and(ops.not_equal(t, self.ignore_index), ops.less(t, self.num_classes))
        w = ops.cast(valid, self.cm.dtype)
        if sample_weight is not None:
            sw = ops.cast(sample_weight, self.cm.dtype)
            if len(sw.shape):  # per-image (B,) or per-pixel (B, H, W) weights
                if len(sw.shape) == 1:
                    sw = ops.reshape(sw, (-1,) + (1,) * (len(y_true.shape) - 1))
                sw = ops.reshape(ops.broadcast_to(sw, ops.shape(y_true)), (-1,))
            w = w * sw
        idx = ops.where(valid, t, 0) * self.num_classes + ops.clip(p, 0, self.num_classes - 1)
        counts = ops.segment_sum(w, idx, num_segments=self.num_classes * self.num_classes)
        self.cm.assign_add(ops.reshape(counts, (self.num_classes, self.num_classes)))

    def result(self):
        return ops.cast(self.cm, "float32")

    def reset_state(self):
        self.cm.assign(ops.zeros((self.num_classes, self.num_classes), self.cm.dtype))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_index": self.ignore_index}


def _diag(cm):
    n = ops.shape(cm)[0]
    return ops.sum(cm * ops.eye(n, dtype=cm.dtype), axis=1)


def _nanfree_mean(values, present):
    """Mean of ``values`` over the entries where ``present``; float32 (the ratios need no more)."""
    values = ops.cast(values, "float32")
    present = ops.cast(present, "float32")
    return ops.sum(ops.where(present > 0, values, 0.0)) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(ConfusionMatrix):
    """Mean intersection-over-union over the classes present in truth or prediction.

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` from the streamed confusion matrix;
    ``mIoU = mean_c IoU_c`` over the classes seen in the truth or the prediction of the whole
    stream (since the last ``reset_state``); classes never seen on either side are left out.

    Args:
        num_classes: C.
        ignore_index: label ignored (default 255).

    Reference:
        Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010.

    Example:
        model.compile(..., metrics=[kseg.metrics.MeanIoU(num_classes=11)])   # logs "mean_iou"
    """

    def __init__(self, num_classes, ignore_index=IGNORE, name="mean_iou", **kwargs):
        super().__init__(num_classes, ignore_index, name=name, **kwargs)

    def per_class(self):
        cm = self.cm
        tp = _diag(cm)
        union = ops.sum(cm, 0) + ops.sum(cm, 1) - tp
        return ops.cast(tp / ops.maximum(union, 1e-12), "float32"), union > 0

    def result(self):
        iou, present = self.per_class()
        return _nanfree_mean(iou, present)


@keras.saving.register_keras_serializable(package="kseg")
class PerClassIoU(MeanIoU):
    """IoU of each class as a ``(C,)`` vector (0 where a class was never seen).

    Args:
        num_classes: C.
        ignore_index: label ignored (default 255).
    """

    def __init__(self, num_classes, ignore_index=IGNORE, name="per_class_iou", **kwargs):
        super().__init__(num_classes, ignore_index, name=name, **kwargs)

    def result(self):
        return self.per_class()[0]


@keras.saving.register_keras_serializable(package="kseg")
class PixelAccuracy(ConfusionMatrix):
    """Fraction of non-ignored pixels whose class is right: ``trace(cm) / sum(cm)``.

    Args:
        num_classes: C (default 256: enough for any uint8 label set).
        ignore_index: label ignored (default 255).
    """

    def __init__(self, num_classes=None, ignore_index=IGNORE, name="pixel_accuracy", **kwargs):
        # the class count only sizes the matrix; 256 covers any uint8 label set
        super().__init__(num_classes or 256, ignore_index, name=name, **kwargs)

    def result(self):
        return ops.cast(ops.sum(_diag(self.cm)) / ops.maximum(ops.sum(self.cm), 1.0), "float32")


@keras.saving.register_keras_serializable(package="kseg")
class ClassAverageAccuracy(ConfusionMatrix):
    """Mean per-class recall ``TP_c / (TP_c + FN_c)`` over classes present in the truth.

    SegNet's "class average accuracy"; classes absent from the truth of the whole stream are
    left out.

    Args:
        num_classes: C.
        ignore_index: label ignored (default 255).

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017.
    """

    def __init__(self, num_classes, ignore_index=IGNORE, name="class_accuracy", **kwargs):
        super().__init__(num_classes, ignore_index, name=name, **kwargs)

    def result(self):
        gt = ops.sum(self.cm, 1)
        return _nanfree_mean(_diag(self.cm) / ops.maximum(gt, 1e-12), gt > 0)


@keras.saving.register_keras_serializable(package="kseg")
class MeanDice(ConfusionMatrix):
    """Mean Dice (F1) ``2 TP_c / (2 TP_c + FP_c + FN_c)`` over classes in truth or prediction.

    Args:
        num_classes: C.
        ignore_index: label ignored (default 255).
    """

    def __init__(self, num_classes, ignore_index=IGNORE, name="mean_dice", **kwargs):
        super().__init__(num_classes, ignore_index, name=name, **kwargs)

    def result(self):
        tp = _diag(self.cm)
        denom = ops.sum(self.cm, 0) + ops.sum(self.cm, 1)
        return _nanfree_mean(2.0 * tp / ops.maximum(denom, 1e-12), denom > 0)


DiceScore = MeanDice  # alias (same class, logs "mean_dice")


# --------------------------------------------------------------------------------------
# instance masks: COCO mask AP (pycocotools, imported only when called)

COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def coco_mask_ap(gt_json, results, cat_ids=None) -> dict:
    """COCO mask AP/AR (``iouType="segm"``) of instance-mask results, via pycocotools.

    Args:
        gt_json: path of a COCO ground-truth file (``images``, ``annotations``, ``categories``).
        results: path of a COCO results JSON or a list of dicts ``{"image_id", "category_id",
            "segmentation" (RLE or polygons), "score"}``.
        cat_ids: COCO category ids to score (``None``: every category of ``gt_json``, as
            pycocotools does; AP is the mean over these categories, so a person model scored on
            a full COCO file needs ``cat_ids=[1]``).

    Returns:
        dict of the twelve COCO summary numbers (``AP`` = AP@[.50:.95], ``AP50``, ``AP75``, …,
        ``AR100``), as floats in [0, 1] (``-1`` where COCO has nothing to score, e.g. no large
        objects). An empty result list scores 0 everywhere.

    Example:
        coco_mask_ap("val.json", [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.9}])

    Reference:
        Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014.
    """
    import contextlib
    import io
    import json
    from pathlib import Path

    from kseg.errors import KsegError

    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise KsegError("coco_mask_ap needs pycocotools: pip install pycocotools") from None
    if not Path(gt_json).is_file():
        raise KsegError(f"COCO ground truth {gt_json} not found; pass the annotations JSON path")
    if isinstance(results, (str, Path)):
        results = json.loads(Path(results).read_text())
    results = list(results)
    if not results:
        return {k: 0.0 for k in COCO_STATS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO(str(gt_json))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="segm")
        if cat_ids is not None:
            ev.params.catIds = sorted(int(c) for c in cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}


# --------------------------------------------------------------------------------------
# salient-object detection and panoptic quality (numpy; kseg.metrics_saliency, kseg.metrics_panoptic)

from kseg.metrics_panoptic import PanopticQuality  # noqa: E402
from kseg.metrics_saliency import SaliencyMetrics  # noqa: E402
