"""Segmentation losses: cross-entropy (optionally class-weighted), soft Dice, focal, CE + Dice,
Lovász-softmax (an IoU surrogate, per image or per batch) and CE + Lovász.

All take sparse integer labels ``(B, H, W)`` and logits ``(B, H, W, C)`` and honour
``ignore_index`` (255): ignored pixels contribute nothing and are not counted. Written with
``keras.ops`` (any backend), computed in float32 whatever the model's dtype policy.

Example:
    model.compile(optimizer="adam", loss=kseg.losses.CEDiceLoss(num_classes=2))
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kseg.errors import KsegError

IGNORE = 255


def _prepare(y_true, y_pred, ignore_index):
    """Flatten to ``(N,)`` labels, ``(N, C)`` float32 logits and a ``(N,)`` valid mask."""
    logits = ops.cast(y_pred, "float32")
    c = ops.shape(logits)[-1]
    logits = ops.reshape(logits, (-1, c))
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    valid = ops.not_equal(labels, ignore_index)
    safe = ops.where(valid, labels, 0)
    return safe, logits, ops.cast(valid, "float32")


def _log_probs(logits, from_logits):
    if from_logits:
        return ops.log_softmax(logits, axis=-1)
    return ops.log(ops.clip(logits, 1e-7, 1.0))


def _per_replica(loss):
    """``loss / replicas`` under a ``tf.distribute`` strategy with several replicas.

    Keras divides a loss by the number of replicas when it reduces per-pixel values itself
    (``keras.losses.Loss`` with ``sum_over_batch_size``), so that the gradients that the strategy
    sums over replicas are those of the global mean; it leaves a loss that is already a scalar
    alone. Ours are (a mean over the valid pixels of the replica's batch), so they divide here;
    without it N replicas would step with N times the mean gradient. ``fit`` multiplies the logged
    loss back (``unscale_loss_for_distribution``).
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf  # the replica count of tf.distribute has no keras.ops equivalent

    n = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if n == 1 else loss * (1.0 / n)


class _SegLoss(keras.losses.Loss):
    """Base: the loss is already a mean over valid pixels, so Keras' reduction sees a scalar."""

    def __init__(self, ignore_index=IGNORE, from_logits=True, name=None, reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.ignore_index = int(ignore_index)
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred, sample_weight=None):
        loss = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if self.reduction in (None, "none") or len(loss.shape) != 0:
            return loss
        return _per_replica(loss)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="kseg")
class SparseCategoricalCrossEntropy(_SegLoss):
    """Pixel-wise cross-entropy with ignore label, class weights and label smoothing.

    With class weights ``w``: ``L = Σ_i w[y_i] · CE_i / Σ_i w[y_i]`` over valid pixels ``i``
    (the normalisation of PyTorch's ``cross_entropy(weight=..., ignore_index=...)``).

    Args:
        ignore_index: label value that is ignored (default 255).
        from_logits: ``y_pred`` are logits (default) or probabilities.
        class_weights: optional per-class weights (list of C floats).
        label_smoothing: ε, the target is ``(1-ε)·onehot + ε/C``.

    Reference:
        Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
    """

    def __init__(self, ignore_index=IGNORE, from_logits=True, class_weights=None, label_smoothing=0.0,
                 name="sparse_categorical_cross_entropy", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels, logits, valid = _prepare(y_true, y_pred, self.ignore_index)
        logp = _log_probs(logits, self.from_logits)
        c = ops.shape(logp)[-1]
        onehot = ops.one_hot(labels, c, dtype="float32")
        if self.label_smoothing:
            eps = self.label_smoothing
            target = onehot * (1.0 - eps) + eps / ops.cast(c, "float32")
        else:
            target = onehot
        ce = -ops.sum(target * logp, axis=-1)
        w = valid
        if self.class_weights is not None:
            w = w * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), labels)
        return ops.sum(ce * w) / ops.maximum(ops.sum(w), 1e-8)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="kseg")
class DiceLoss(_SegLoss):
    """Soft Dice loss on softmax probabilities, averaged over classes.

    For class c over the valid pixels of the batch: ``D_c = (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s)``,
    ``L = 1 − mean_c D_c`` (weighted mean with ``class_weights``). A class absent from both the
    prediction and the target scores ``D_c = s / s = 1`` (it costs nothing), so a batch without
    some class is not penalised for it.

    Args:
        num_classes: C.
        smooth: s (default 1).
        class_weights: optional weights of the per-class Dice terms.

    Reference:
        Milletari et al., "V-Net", 3DV 2016; Sudre et al., "Generalised Dice overlap", 2017.
    """

    def __init__(self, num_classes, ignore_index=IGNORE, smooth=1.0, from_logits=True, class_weights=None,
                 name="dice_loss", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.smooth = float(smooth)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def dice_per_class(self, y_true, y_pred):
        labels, logits, valid = _prepare(y_true, y_pred, self.ignore_index)
        probs = ops.softmax(logits, axis=-1) if self.from_logits else logits
        probs = probs * valid[:, None]
        onehot = ops.one_hot(labels, self.num_classes, dtype="float32") * valid[:, None]
        inter = ops.sum(probs * onehot, axis=0)
        denom = ops.sum(probs, axis=0) + ops.sum(onehot, axis=0)
        return (2.0 * inter + self.smooth) / (denom + self.smooth)

    def call(self, y_true, y_pred):
        d = self.dice_per_class(y_true, y_pred)
        if self.class_weights is None:
            return 1.0 - ops.mean(d)
        w = ops.convert_to_tensor(self.class_weights, "float32")
        return 1.0 - ops.sum(d * w) / ops.sum(w)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "smooth": self.smooth,
                "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="kseg")
class FocalLoss(_SegLoss):
    """Multi-class focal loss: ``FL = −α_y (1 − p_y)^γ log p_y``, mean over valid pixels.

    Args:
        gamma: focusing parameter γ (default 2; 0 gives cross-entropy).
        alpha: ``None`` or per-class weights α (list of C floats).

    Reference:
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    def __init__(self, gamma=2.0, alpha=None, ignore_index=IGNORE, from_logits=True, name="focal_loss", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else [float(a) for a in alpha]

    def call(self, y_true, y_pred):
        labels, logits, valid = _prepare(y_true, y_pred, self.ignore_index)
        logp = _log_probs(logits, self.from_logits)
        c = ops.shape(logp)[-1]
        logp_y = ops.sum(ops.one_hot(labels, c, dtype="float32") * logp, axis=-1)
        p_y = ops.exp(logp_y)
        fl = -ops.power(1.0 - p_y, self.gamma) * logp_y
        if self.alpha is not None:
            fl = fl * ops.take(ops.convert_to_tensor(self.alpha, "float32"), labels)
        return ops.sum(fl * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kseg")
class CEDiceLoss(_SegLoss):
    """``ce_weight · CE + dice_weight · Dice`` (a common default for thin structures and imbalance).

    Args:
        num_classes: C.
        ce_weight, dice_weight: the mix.
        class_weights: passed to the cross-entropy term.
        smooth: Dice smoothing.
    """

    def __init__(self, num_classes, ce_weight=1.0, dice_weight=1.0, ignore_index=IGNORE, from_logits=True,
                 class_weights=None, smooth=1.0, name="ce_dice_loss", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.smooth = float(smooth)
        self._ce = SparseCategoricalCrossEntropy(ignore_index, from_logits, class_weights)
        self._dice = DiceLoss(num_classes, ignore_index, smooth, from_logits)

    def call(self, y_true, y_pred):
        return self.ce_weight * self._ce.call(y_true, y_pred) + self.dice_weight * self._dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ce_weight": self.ce_weight,
                "dice_weight": self.dice_weight, "class_weights": self.class_weights, "smooth": self.smooth}


def _lovasz_grad(fg_sorted, valid_sorted):
    """The Lovász extension's gradient of the Jaccard loss along the last axis (Berman et al., Alg. 1):
    ``g_i = J_i − J_{i−1}`` with ``J_i = 1 − (|fg| − cumsum(fg)_i) / (|fg| + cumsum(¬fg)_i)``, for
    elements sorted by decreasing error; the invalid ones come last and change nothing before them."""
    gts = ops.sum(fg_sorted, axis=-1, keepdims=True)
    inter = gts - ops.cumsum(fg_sorted, axis=-1)
    union = gts + ops.cumsum((1.0 - fg_sorted) * valid_sorted, axis=-1)
    jaccard = 1.0 - inter / ops.maximum(union, 1e-8)
    previous = ops.concatenate([ops.zeros_like(jaccard[..., :1]), jaccard[..., :-1]], axis=-1)
    return jaccard - previous


@keras.saving.register_keras_serializable(package="kseg")
class LovaszSoftmaxLoss(_SegLoss):
    """Lovász-softmax: a convex surrogate of ``1 − IoU`` on softmax probabilities, per image or per batch.

    For each class ``c`` present in the labels of an image, the errors ``|[y = c] − p_c|`` of its
    valid pixels are sorted in decreasing order and weighted by the gradient of the Lovász extension
    of the Jaccard loss; the loss is the mean over present classes, then over images. On crisp
    predictions (probabilities 0 or 1) it equals ``1 − IoU`` averaged over the present classes, so
    with ``per_image=True`` it is the training signal of a per-image mean IoU (the portrait protocol)
    and with ``per_image=False`` of a dataset-level one. Usually added to cross-entropy
    (``ce_lovasz``), or alone to fine-tune a model trained with cross-entropy (Berman et al.).

    Args:
        per_image: one IoU per image (default) or one over the whole batch.
        class_weights: optional weights of the per-class terms (a class absent from an image
            is left out of that image's mean whatever its weight).

    Cost: one sort of every pixel's error per class (per image or per batch). Small at portrait
    sizes (batch 16, 160×160, 2 classes: no measurable change in step time on 2 CPU cores);
    at 384×384 with 8 classes the sorts take 2–3 s of each step there (batch 16), about 3× the
    step time of CE + Dice.

    Reference:
        Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: a tractable surrogate for the
        optimization of the intersection-over-union measure in neural networks", CVPR 2018.
    """

    def __init__(self, per_image=True, ignore_index=IGNORE, from_logits=True, class_weights=None,
                 name="lovasz_softmax_loss", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.per_image = bool(per_image)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        c = ops.shape(logits)[-1]
        rows = ops.shape(logits)[0] if self.per_image else 1
        probs = ops.softmax(logits, axis=-1) if self.from_logits else logits
        probs = ops.reshape(probs, (rows, -1, c))
        labels = ops.reshape(ops.cast(y_true, "int32"), (rows, -1))
        valid = ops.cast(ops.not_equal(labels, self.ignore_index), "float32")
        fg = ops.one_hot(ops.where(ops.equal(labels, self.ignore_index), 0, labels), c, dtype="float32")
        fg = ops.transpose(fg * valid[..., None], (0, 2, 1))                  # (rows, C, N)
        valid = ops.broadcast_to(valid[:, None, :], ops.shape(fg))
        errors = ops.abs(fg - ops.transpose(probs, (0, 2, 1))) * valid
        n = ops.shape(errors)[-1]
        _, order = ops.top_k(ops.where(valid > 0, errors, -1.0), n, sorted=True)
        errors_sorted = ops.take_along_axis(errors, order, axis=-1)
        grad = _lovasz_grad(ops.take_along_axis(fg, order, axis=-1), ops.take_along_axis(valid, order, axis=-1))
        per_class = ops.sum(errors_sorted * ops.stop_gradient(grad), axis=-1)  # (rows, C)
        present = ops.cast(ops.sum(fg, axis=-1) > 0, "float32")
        if self.class_weights is not None:
            present = present * ops.convert_to_tensor(self.class_weights, "float32")[None, :]
        weight = ops.sum(present, axis=-1)
        per_row = ops.sum(per_class * present, axis=-1) / ops.maximum(weight, 1e-8)
        counted = ops.cast(weight > 0, "float32")
        return ops.sum(per_row * counted) / ops.maximum(ops.sum(counted), 1.0)

    def get_config(self):
        return {**super().get_config(), "per_image": self.per_image, "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="kseg")
class CELovaszLoss(_SegLoss):
    """``ce_weight · CE + lovasz_weight · Lovász-softmax``: cross-entropy for calibrated
    probabilities, the Lovász term for the IoU that is measured.

    Args:
        ce_weight, lovasz_weight: the mix.
        per_image: the Lovász term per image (default) or per batch.
        class_weights: passed to the cross-entropy term.
    """

    def __init__(self, ce_weight=1.0, lovasz_weight=1.0, per_image=True, ignore_index=IGNORE, from_logits=True,
                 class_weights=None, name="ce_lovasz_loss", **kwargs):
        super().__init__(ignore_index, from_logits, name=name, **kwargs)
        self.ce_weight = float(ce_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.per_image = bool(per_image)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self._ce = SparseCategoricalCrossEntropy(ignore_index, from_logits, class_weights)
        self._lovasz = LovaszSoftmaxLoss(per_image, ignore_index, from_logits)

    def call(self, y_true, y_pred):
        return self.ce_weight * self._ce.call(y_true, y_pred) + self.lovasz_weight * self._lovasz.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "ce_weight": self.ce_weight, "lovasz_weight": self.lovasz_weight,
                "per_image": self.per_image, "class_weights": self.class_weights}


LOSSES = {
    "ce": SparseCategoricalCrossEntropy,
    "weighted_ce": SparseCategoricalCrossEntropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "ce_dice": CEDiceLoss,
    "lovasz": LovaszSoftmaxLoss,
    "ce_lovasz": CELovaszLoss,
}


def get_loss(name, **kwargs):
    """A loss by name: ``ce``, ``weighted_ce`` (needs ``class_weights``), ``dice``, ``focal``, ``ce_dice``,
    ``lovasz``, ``ce_lovasz``.

    ``num_classes`` is accepted (and dropped) for the losses that do not need it, and
    ``class_weights`` given to ``focal`` become its per-class ``alpha``, so one set of keyword
    arguments works for every name.

    Example:
        loss = get_loss("ce_dice", num_classes=11, class_weights=[...])
    """
    if name not in LOSSES:
        raise KsegError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    kwargs = dict(kwargs)
    if name == "weighted_ce" and kwargs.get("class_weights") is None:
        raise KsegError("loss weighted_ce needs class weights: set train.class_weights to median_frequency or inverse_frequency")
    if name in ("dice", "ce_dice") and "num_classes" not in kwargs:
        raise KsegError(f"loss {name} needs num_classes")
    if name in ("ce", "weighted_ce", "focal", "lovasz", "ce_lovasz"):
        kwargs.pop("num_classes", None)
    if name == "focal" and "class_weights" in kwargs:
        weights = kwargs.pop("class_weights")
        if kwargs.get("alpha") is None:
            kwargs["alpha"] = weights
    return LOSSES[name](**kwargs)


# --------------------------------------------------------------------------------------
# class weights from data


def class_pixel_counts(masks, num_classes, ignore_index=IGNORE):
    """Stream masks and count, per class, its pixels and the pixels of images that contain it.

    Args:
        masks: an iterable of integer masks, numpy or eager tensors: ``(H, W)`` or
            ``(H, W, 1)`` single masks, or ``(B, H, W)`` / ``(B, H, W, 1)`` batches (each image of
            a batch is one image for ``present_counts``). Values ``>= num_classes`` other than
            ``ignore_index`` are skipped.
        num_classes: C.

    Returns:
        ``(counts, present_counts)``: float64 arrays of length C. ``present_counts[c]`` is the
        total number of (non-ignored) pixels in the images where class c appears.
    """
    counts = np.zeros(num_classes, np.float64)
    present = np.zeros(num_classes, np.float64)
    for m in masks:
        m = np.asarray(m)
        if m.ndim >= 3 and m.shape[-1] == 1:  # (H, W, 1) or (B, H, W, 1)
            m = m[..., 0]
        if m.ndim > 3:
            raise KsegError(f"class_pixel_counts got a mask of shape {m.shape}; pass (H, W) masks or (B, H, W) batches")
        items = m if m.ndim == 3 else m[None]
        for item in items:
            v = item[item != ignore_index].astype(np.int64)
            v = v[v < num_classes]
            c = np.bincount(v, minlength=num_classes).astype(np.float64)
            counts += c
            present += (c > 0) * v.size
    return counts, present


def compute_class_weights(counts, method="median_frequency", present_counts=None, power=1.0):
    """Class weights from pixel counts.

    - ``median_frequency`` (SegNet; Eigen & Fergus 2015): ``freq_c = counts_c / present_c``
      (pixels of c over all pixels of the images containing c; ``present_c`` defaults to the
      total), ``w_c = median(freq) / freq_c``.
    - ``inverse_frequency``: ``w_c ∝ 1 / freq_c`` with ``freq_c = counts_c / Σ counts``,
      normalised to mean 1 over the present classes.

    Classes with no pixel get weight 0 (they cannot be learnt from this data). ``power`` < 1
    softens the balancing (``w_c ** power``; 0.5 is inverse-square-root frequency, as in
    Mahajan et al. 2018 and LVIS' repeat factors): full balancing makes a model trade the frequent
    classes' pixels for the rare ones' (a parsing model painting hair as accessories).

    Returns:
        float32 array of length C.
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise KsegError("cannot compute class weights: no labelled pixel in the training masks")
    w = np.zeros_like(counts)
    if method == "median_frequency":
        denom = np.asarray(present_counts, np.float64) if present_counts is not None else np.full_like(counts, counts.sum())
        freq = np.where(present, counts / np.maximum(denom, 1.0), 0.0)
        w[present] = np.median(freq[present]) / freq[present]
    elif method == "inverse_frequency":
        freq = counts / counts.sum()
        w[present] = 1.0 / freq[present]
    else:
        raise KsegError(f"unknown class weight method {method!r}; use median_frequency or inverse_frequency")
    if not float(power) > 0:
        raise KsegError(f"class weight power must be > 0 (1 = full balancing, 0.5 = square root), got {power!r}")
    w[present] = w[present] ** float(power)
    if method == "inverse_frequency":
        w[present] /= w[present].mean()
    return w.astype(np.float32)
