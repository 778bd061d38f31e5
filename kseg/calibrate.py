"""Per-class logit biases fitted for mIoU after training (``kseg calibrate``).

A model trained with class weights (``train.class_weights: median_frequency``) learns logits
shifted towards its rare classes: that is what makes it predict them at all, and it makes it
predict them too often (a parsing model paints accessories over hair and clothes). The
post-hoc correction of "logit adjustment" (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021) subtracts such shifts after training; here one bias per class is
searched directly for the dataset mIoU on the model's own training images (coordinate ascent
over a grid, background fixed at 0; or, with ``groups``, for the mean over the training sources
of each one's mIoU), and added to the bias of the classifier convolution. The
network, its size and its speed do not change; the ``.keras`` and every export made from it
carry the new biases.

Example:
    from kseg.calibrate import collect_logits, fit_class_biases, apply_class_biases
    logits, labels = collect_logits(model, train_set, images=900)
    fit = fit_class_biases(logits, labels)
    apply_class_biases(model, fit.biases)        # then model.save(...)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kseg.errors import KsegError

# the classifier convolution of each kseg semantic model: a constant added to its output is a
# constant added to the model's logits (what follows it, if anything, is bilinear upsampling)
CLASSIFIER_LAYERS = ("logits", "logits_small", "logits_conv")


@dataclass
class BiasFit:
    """What ``fit_class_biases`` found: the biases and the mIoU before and after on the pixels given."""

    biases: np.ndarray
    miou_before: float
    miou_after: float
    iou_before: np.ndarray
    iou_after: np.ndarray


def collect_logits(model, ds, images: int = 900, pixels: int = 4096, seed: int = 0, batch_size: int = 16):
    """Logits and labels at ``pixels`` random pixels of each of ``images`` random samples of ``ds``.

    Each image is squashed to the model's input size (as ``kseg evaluate`` does) and its label
    resized with nearest neighbour; ignored pixels (255) are dropped.

    Returns:
        ``(logits (N, C) float32, labels (N,) int64)``.
    """
    import cv2

    from kseg.evaluate import iter_loaded

    h, w = (int(v) for v in model.input_shape[1:3])
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=min(int(images), len(ds)), replace=False)
    out_l, out_y, batch, labels = [], [], [], []

    def flush():
        pred = np.asarray(model.predict(np.stack(batch).astype(np.float32), verbose=0), np.float32)
        for p, lab in zip(pred, labels):
            flat, lab = p.reshape(-1, p.shape[-1]), lab.reshape(-1)
            keep = np.flatnonzero(lab != 255)
            sel = keep if keep.size <= pixels else rng.choice(keep, pixels, replace=False)
            out_l.append(flat[sel])
            out_y.append(lab[sel].astype(np.int64))
        batch.clear()
        labels.clear()

    skipped = []
    for _, image, label in iter_loaded(ds, idx, skipped):
        batch.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
        labels.append(cv2.resize(label.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not out_l:
        raise KsegError(f"no readable samples in {getattr(ds, 'name', 'the dataset')} to fit biases on")
    return np.concatenate(out_l), np.concatenate(out_y)


def _confusion(pred, labels, c, groups=None, n_groups=1):
    if groups is None:
        return np.bincount(labels * c + pred, minlength=c * c).reshape(1, c, c)
    return np.bincount((groups * c + labels) * c + pred, minlength=n_groups * c * c).reshape(n_groups, c, c)


def _iou(cm):
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return np.where(cm.sum(1) > 0, iou, np.nan)  # classes in the labels: the mean is over those


def _scores(logits, labels, biases, groups=None, n_groups=1):
    """(objective, IoU per class over all pixels): the dataset mIoU, or with ``groups`` the mean
    over groups of each group's mIoU."""
    c = logits.shape[1]
    cms = _confusion(np.argmax(logits + biases, axis=1), labels, c, groups, n_groups)
    per_group = [float(np.nanmean(_iou(cm))) for cm in cms if cm.sum()]
    return float(np.mean(per_group)), _iou(cms.sum(0))


def dataset_miou(logits, labels, biases=None) -> float:
    """The dataset mIoU (over the classes in ``labels``) of ``argmax(logits + biases)``."""
    logits = np.asarray(logits, np.float32)
    b = np.zeros(logits.shape[1], np.float32) if biases is None else np.asarray(biases, np.float32)
    return _scores(logits, np.asarray(labels, np.int64), b)[0]


def fit_class_biases(logits, labels, grid=None, sweeps: int = 3, fixed=(0,), groups=None) -> BiasFit:
    """Per-class additive biases that maximise the dataset mIoU of ``argmax(logits + b)``.

    Coordinate ascent: each class in turn (those in ``fixed`` stay 0, by default the background)
    takes the grid value with the best mIoU given the others, ``sweeps`` times over.

    Args:
        logits: ``(N, C)`` float pixel logits (``collect_logits``).
        labels: ``(N,)`` int class ids in ``0..C-1``.
        grid: the values tried for each bias (default −3…3 in steps of 0.25).
        sweeps: passes over the classes.
        fixed: classes whose bias stays 0 (one must: only differences between logits matter).
        groups: optional ``(N,)`` int source of each pixel (e.g. the training dataset it came
            from): the objective is then the mean over sources of each source's mIoU, so that
            one source's many pixels of a class do not set the bias for all (faces' hair for
            full-body photos' hair). ``miou_before``/``miou_after`` are that mean.

    Returns:
        ``BiasFit`` (``iou_before``/``iou_after``: per class, over all pixels).
    """
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels, np.int64)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise KsegError(f"fit_class_biases needs (N, C) logits and (N,) labels, got {logits.shape} and {labels.shape}")
    c = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise KsegError(f"labels must be class ids 0..{c - 1} (ignored pixels removed), got {labels.min()}..{labels.max()}")
    n_groups = 1
    if groups is not None:
        groups = np.asarray(groups, np.int64)
        if groups.shape != labels.shape or (groups.size and groups.min() < 0):
            raise KsegError(f"groups must be (N,) non-negative ints like labels {labels.shape}, got {groups.shape}")
        n_groups = int(groups.max()) + 1 if groups.size else 1
    grid = np.arange(-3.0, 3.0 + 1e-6, 0.25) if grid is None else np.asarray(grid, np.float32)
    b = np.zeros(c, np.float32)
    before, iou_before = _scores(logits, labels, b, groups, n_groups)
    best = before
    for _ in range(int(sweeps)):
        moved = False
        for k in range(c):
            if k in fixed:
                continue
            for v in grid:
                if v == b[k]:
                    continue
                trial = b.copy()
                trial[k] = v
                m, _ = _scores(logits, labels, trial, groups, n_groups)
                if m > best + 1e-6:
                    best, b, moved = m, trial, True
        if not moved:
            break
    after, iou_after = _scores(logits, labels, b, groups, n_groups)
    return BiasFit(b, before, after, iou_before, iou_after)


def classifier_layer(model):
    """The classifier convolution of a kseg semantic model (``CLASSIFIER_LAYERS``), with a bias."""
    names = {layer.name for layer in model.layers}
    for name in CLASSIFIER_LAYERS:
        if name in names:
            layer = model.get_layer(name)
            if getattr(layer, "use_bias", False) and hasattr(layer, "kernel"):
                return layer
    raise KsegError(f"{model.name} has no classifier convolution with a bias ({', '.join(CLASSIFIER_LAYERS)}): "
                    "class biases can be folded into U-Net, SegNet, DeepLab v3+, PSPNet, HRNet and SegFormer models")


def apply_class_biases(model, biases) -> None:
    """Add ``biases`` (one per class) to the bias of ``model``'s classifier convolution, in place."""
    layer = classifier_layer(model)
    kernel, bias = layer.get_weights()
    biases = np.asarray(biases, np.float32)
    if biases.shape != bias.shape:
        raise KsegError(f"{len(biases)} biases given for a model with {bias.shape[0]} classes")
    layer.set_weights([kernel, bias + biases])
