"""Quantization-aware training (QAT) of a Keras 3 model through its tf_keras twin.

``quantize_aware`` builds the twin (``kseg.quantize.twin``), checks it against the original,
annotates every layer for tensorflow-model-optimization's default 8-bit scheme — layers that the
default registry lacks (``Rescaling``, ``Multiply``, ``Resizing``, a ``BatchNormalization`` that
does not follow a convolution) get an output-only fake-quant config so that every tensor of the
converted model has a range — and returns the quantized tf_keras model. ``qat_fine_tune`` trains
it for a few epochs with the kseg tf.data pipeline and saves it.

tfmot and tf_keras are imported inside functions only, and ``TF_USE_LEGACY_KERAS`` is restored
after the import (tfmot sets it to 1, which would turn ``tf.keras`` into Keras 2 for the process).

Custom kseg layers give their QuantizeConfig through ``QUANTIZE_CONFIGS``: a dict from the
layer's class name in the twin (or its registered name ``"kseg>Name"``) to a zero-argument
factory returning a ``tfmot.quantization.keras.QuantizeConfig``.

Example:
    from kseg.quantize.qat import qat_fine_tune
    qat = qat_fine_tune(model, train_ds, val_ds, epochs=2, lr=1e-4, out_dir="runs/unet/qat")
    kseg.export.to_tflite(qat, "exports/unet_qat.tflite", quantization="qat")

Reference:
    Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.quantize.twin import legacy_keras_env, tf_keras_module, to_tf_keras

QUANTIZE_CONFIGS: dict = {}
"""Twin layer class name or ``"kseg>Name"`` → ``factory() -> QuantizeConfig``."""

IGNORE = 255
QAT_MODEL_FILE = "qat_model.h5"


def tfmot_module():
    """Import and return ``tensorflow_model_optimization`` without changing ``TF_USE_LEGACY_KERAS``."""
    with legacy_keras_env():
        tf_keras_module()
        import tensorflow_model_optimization as tfmot

    return tfmot


def _default_configs():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
        default_8bit_quantize_registry as registry,
    )

    return configs, registry.Default8BitQuantizeRegistry()


def _custom_objects(model) -> dict:
    """Layer classes of the twin that tf_keras does not know by name (kseg twins)."""
    tf_keras = tf_keras_module()
    out = {}
    for layer in model.layers:
        cls = type(layer)
        if getattr(tf_keras.layers, cls.__name__, None) is not cls:
            out[cls.__name__] = cls
    out.update({k: v for k, v in _qat_custom_objects().items()})
    return out


def _qat_custom_objects() -> dict:
    from kseg.quantize.twin import twin_custom_objects

    return twin_custom_objects()


def _output_only():
    configs, _ = _default_configs()
    return configs.Default8BitOutputQuantizeConfig()


# MaxUnpooling2D routes values (y times 0/1 masks): its output has y's range.
QUANTIZE_CONFIGS["MaxUnpooling2D"] = _output_only


@functools.cache
def _logit_limit_config_class():
    """The QuantizeConfig class of ``LogitLimit`` (made once: loading a saved QAT model needs it)."""
    tfmot = tfmot_module()

    class LogitLimitQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """``LogitLimit``'s output in the fixed range ``[-limit, limit]``: it is what the layer gives
        in inference, while in training it passes the logits unbounded, so a learned (moving-average)
        range would follow them out to ±100 and leave the int8 output a step of several logits —
        probabilities of 0, 0.5 or 1 and no soft edge (measured on the first QAT selfie exports)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            limit = float(layer.limit)
            return [tfmot.quantization.keras.quantizers.FixedQuantizer(8, -limit, limit, False)]

        def get_config(self):
            return {}

    return LogitLimitQuantizeConfig


QUANTIZE_CONFIGS["LogitLimit"] = lambda: _logit_limit_config_class()()


@functools.cache
def _bounded_config_class(base):
    """``base`` (a tfmot default QuantizeConfig class) with a fixed activation range ``[-bound, bound]``."""

    class Bounded(base):
        def __init__(self, weight_attrs, activation_attrs, quantize_output, bound=8.0):
            super().__init__(weight_attrs, activation_attrs, quantize_output)
            self.bound = float(bound)
            tfmot = tfmot_module()
            self.activation_quantizer = tfmot.quantization.keras.quantizers.FixedQuantizer(
                8, -self.bound, self.bound, False)

        def get_config(self):
            return {**super().get_config(), "bound": self.bound}

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{base.__name__}"
    return Bounded


def _bounded_config_classes() -> dict:
    """The bounded configs a saved QAT model may name (loading needs the classes by name)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    bases = (registry.Default8BitQuantizeConfig, registry.Default8BitConvQuantizeConfig,
             registry.Default8BitConvTransposeQuantizeConfig)
    return {f"Bounded{b.__name__}": _bounded_config_class(b) for b in bases}


def _feeds_logit_limit(layer):
    """The ``LogitLimit`` twin that ``layer`` (a tf_keras twin layer) alone feeds, or ``None``."""
    nodes = getattr(layer, "_outbound_nodes", [])
    if len(nodes) != 1:
        return None
    out = nodes[0].outbound_layer
    return out if type(out).__name__ == "LogitLimit" else None


def _bounded_logits_config(layer, limit):
    """The producer of bounded logits gets the fixed output range ``[-limit, limit]``.

    Its output is what TFLite quantizes: with tfmot's moving-average range it followed the
    unbounded training logits to ±900 (an int8 step of 7 logits: person probabilities of 0, 0.5
    or 1, no soft edge; measured on the 2026-12-03 selfie exports). Fixed at the bound, int8
    saturates where ``LogitLimit`` clips, with a step of ``2 * limit / 255``.
    """
    _, registry = _default_configs()
    base = registry.get_quantize_config(layer)
    if not hasattr(base, "activation_quantizer") or not hasattr(base, "activation_attrs"):
        raise KsegError(f"layer {layer.name} ({type(layer).__name__}) feeds a LogitLimit but has no activation "
                        "quantizer to bound; end the model with a convolution before LogitLimit")
    cls = _bounded_config_class(type(base))
    return cls(base.weight_attrs, base.activation_attrs, base.quantize_output, bound=float(limit))


def _follows_conv(layer, tf_keras) -> bool:
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return False
    inbound = nodes[0].inbound_layers
    inbound = inbound[0] if isinstance(inbound, (list, tuple)) and len(inbound) == 1 else inbound
    if not isinstance(inbound, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)):
        return False
    return len(inbound._outbound_nodes) == 1


def quantize_config_for(layer):
    """The QuantizeConfig kseg gives ``layer`` (a tf_keras twin layer), or ``None`` for tfmot's default.

    Args:
        layer: a layer of the tf_keras twin.

    Returns:
        ``None`` when tfmot's default 8-bit registry (or its Conv+BatchNorm folding) handles
        the layer; otherwise a ``QuantizeConfig``.
    """
    tf_keras = tf_keras_module()
    configs, registry = _default_configs()
    name = type(layer).__name__
    registered = getattr(layer, "registered_name", None)
    for key in (registered, f"kseg>{name}", name):
        if key and key in QUANTIZE_CONFIGS:
            return QUANTIZE_CONFIGS[key]()
    if isinstance(layer, tf_keras.layers.BatchNormalization):
        return None if _follows_conv(layer, tf_keras) else configs.Default8BitOutputQuantizeConfig()
    if registry.supports(layer):
        return None
    if isinstance(layer, (tf_keras.layers.Rescaling, tf_keras.layers.Multiply, tf_keras.layers.Resizing,
                          tf_keras.layers.Subtract, tf_keras.layers.Maximum, tf_keras.layers.Minimum,
                          tf_keras.layers.Average, tf_keras.layers.LayerNormalization, tf_keras.layers.Dot)):
        # LayerNormalization, Dot: SegFormer (TFLite: MEAN/RSQRT/MUL…, BATCH_MATMUL with int8 kernels)
        return configs.Default8BitOutputQuantizeConfig()
    if isinstance(layer, (tf_keras.layers.Dropout, tf_keras.layers.SpatialDropout2D,
                          tf_keras.layers.InputLayer)):
        return configs.NoOpQuantizeConfig()
    raise KsegError(
        f"layer {layer.name} ({name}) has no quantization config; add a factory to "
        "kseg.quantize.qat.QUANTIZE_CONFIGS"
    )


def quantize_twin(twin):
    """Annotate and quantize a tf_keras twin with tfmot's default 8-bit scheme.

    Args:
        twin: a ``tf_keras.Model`` (from ``to_tf_keras``).

    Returns:
        The quantization-aware ``tf_keras.Model`` (weights of the twin, fake-quant ops added).
    """
    tfmot = tfmot_module()
    tf_keras = tf_keras_module()
    q = tfmot.quantization.keras
    custom = _custom_objects(twin)

    replaced = {}

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer
        if isinstance(layer, tf_keras.layers.Rescaling):
            layer, weights = _rescaling_as_depthwise(layer, tf_keras)
            replaced[layer.name] = weights
        limit = _feeds_logit_limit(layer)
        cfg = _bounded_logits_config(layer, limit.limit) if limit is not None else quantize_config_for(layer)
        if cfg is None:
            return q.quantize_annotate_layer(layer)
        custom[type(cfg).__name__] = type(cfg)
        return q.quantize_annotate_layer(layer, quantize_config=cfg)

    with q.quantize_scope(custom):
        annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
        for layer in annotated.layers:
            inner = getattr(layer, "layer", layer)
            if inner.name in replaced:
                inner.set_weights(replaced[inner.name])
            elif inner.weights:
                inner.set_weights(twin.get_layer(inner.name).get_weights())
        # a second scope: the one above was entered before annotate() added the configs it used
        with _pattern_inputs_in_order(), q.quantize_scope(custom):
            qat = q.quantize_apply(annotated)
    _check_merge_inputs(twin, qat)
    set_weight_ranges(qat)
    return qat


@contextlib.contextmanager
def _pattern_inputs_in_order():
    """Work around tfmot's reordering of a layer's inputs while it matches transform patterns.

    ``ModelTransformer._get_layers`` returns the matched layer's inputs in the order the layers
    appear in the model config, not in the layer's input order, so a transform that rebuilds a
    ``Concatenate`` (tfmot's ConcatTransform) wires its inputs in config order: DeepLab v3+'s ASPP
    concatenation had its image-pooling branch moved first, and the QAT model's argmax agreed
    with the float model on 58% of the pixels (tensorflow/model-optimization#1179, #1061). Inside
    pattern matching the inputs are looked up in the order given.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer,
    )

    cls = model_transformer.ModelTransformer
    get_layers, match = cls._get_layers, cls._match_layer_with_inputs

    def ordered_get_layers(self, layer_names):
        if not getattr(self, "_kseg_matching", 0):
            return get_layers(self, layer_names)
        by_name = {layer["config"]["name"]: layer for layer in self._config["layers"]}
        return [by_name[n] for n in layer_names if n in by_name]

    def counted_match(self, *args, **kwargs):
        self._kseg_matching = getattr(self, "_kseg_matching", 0) + 1
        try:
            return match(self, *args, **kwargs)
        finally:
            self._kseg_matching -= 1

    cls._get_layers, cls._match_layer_with_inputs = ordered_get_layers, counted_match
    try:
        yield
    finally:
        cls._get_layers, cls._match_layer_with_inputs = get_layers, match


def _inbound_names(layer) -> list[str]:
    node = layer._inbound_nodes[0]
    inbound = node.inbound_layers if isinstance(node.inbound_layers, (list, tuple)) else [node.inbound_layers]
    return [getattr(x, "layer", x).name for x in inbound]


def _check_merge_inputs(twin, qat) -> None:
    """Raise when the QAT model feeds a multi-input layer (concatenation, add, …) its inputs in
    another order than the twin does (which would silently scramble its channels)."""
    by_name = {getattr(layer, "layer", layer).name: layer for layer in qat.layers}
    for layer in twin.layers:
        if len(layer._inbound_nodes) != 1 or layer.name not in by_name:
            continue
        want = _inbound_names(layer)
        if len(want) < 2:
            continue
        got = _inbound_names(by_name[layer.name])
        if [n.removeprefix("quant_") for n in got] != want:
            raise KsegError(
                f"tfmot rewired the inputs of {layer.name} as {got} instead of {want}; the QAT model would "
                "not compute the float model's function (report it with the model's config)"
            )


def set_weight_ranges(qat) -> int:
    """Set every weight fake-quant range from the weights themselves, as a training step would.

    tfmot's weight quantizers (``LastValueQuantizer``) store their range in variables that start
    at [-6, 6] and are only updated by a forward pass in training mode. Until then inference,
    saving and TFLite conversion use ±6: a kernel of small values (the 1/128 of the input
    normalisation, say) quantizes to all zeros — measured: a QAT model converted before any
    fine-tuning step agreed with its float model on 78% of pixels. This applies tfmot's own
    rule (per channel over all but the last axis, symmetric or not, 0 always in range) now.

    Returns:
        The number of weight ranges set.
    """
    count = 0
    for layer in qat.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", []):
            lo_var, hi_var = qvars.get("min_var"), qvars.get("max_var")
            if lo_var is None or hi_var is None:
                continue
            w = weight.numpy()
            per_axis = bool(getattr(quantizer, "per_axis", False)) and w.ndim >= 2
            axes = tuple(range(w.ndim - 1)) if per_axis else None
            lo, hi = w.min(axis=axes), w.max(axis=axes)
            if getattr(quantizer, "symmetric", False):
                bits = int(getattr(quantizer, "num_bits", 8))
                ratio = -1.0 if getattr(quantizer, "narrow_range", False) else -((1 << bits) - 2) / (1 << bits)
                lo, hi = np.minimum(lo, hi / ratio), np.maximum(hi, lo * ratio)
            else:
                lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            lo_var.assign(np.reshape(lo, lo_var.shape).astype(np.float32))
            hi_var.assign(np.reshape(hi, hi_var.shape).astype(np.float32))
            count += 1
    return count


def _rescaling_as_depthwise(layer, tf_keras):
    """``Rescaling`` as an equivalent 1×1 ``DepthwiseConv2D`` (kernel = scale, bias = offset).

    Rescaling with an offset becomes MUL then ADD in TFLite, and the tensor between them has no
    fake-quant range: the converted model then drifted from the QAT model by up to 3 logits
    (measured). A depthwise 1×1 convolution is one quantized op with per-channel weights that
    represent the scale exactly.
    """
    channels = int(layer.input_shape[-1])
    cfg = layer.get_config()
    scale = np.broadcast_to(np.asarray(cfg["scale"], np.float32), (channels,))
    offset = np.broadcast_to(np.asarray(cfg["offset"], np.float32), (channels,))
    dw = tf_keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    return dw, [scale.reshape(1, 1, channels, 1).copy(), offset.copy()]


def _range_targets(qat):
    """``[(twin layer name, kind, (min var, max var))]`` for every per-tensor fake-quant range."""
    out = []
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        by_kind = {}
        for v in layer.weights:
            short = v.name.split("/")[-1].split(":")[0]
            if v.shape.rank != 0 or not (short.endswith("_min") or short.endswith("_max")):
                continue
            kind = short[: -len("_min")]
            by_kind.setdefault(kind, {})[short[-3:]] = v
        for kind, pair in by_kind.items():
            if set(pair) != {"min", "max"}:
                continue
            if inner is None and kind.startswith("quantize_layer"):  # quantize_layer_1 in a second model
                out.append((None, "input", (pair["min"], pair["max"])))
            elif inner is not None and kind in ("output", "post_activation"):
                out.append((inner.name, "output", (pair["min"], pair["max"])))
            elif inner is not None and kind == "pre_activation":
                out.append((inner.name, "pre_activation", (pair["min"], pair["max"])))
    return out


def calibrate_ranges(qat, twin, images, batch_size: int = 8, max_batches: int = 8) -> int:
    """Start every activation range of a QAT model from the float twin's observed ranges.

    tfmot's moving-average quantizers start at [-6, 6] and move with decay 0.999, so a short
    fine-tune leaves most ranges near ±6 (measured: after 16 steps every range was still within
    ±6.0 ± 0.1), clipping wide activations and wasting resolution on narrow ones. This sets
    each range to the mean over calibration batches of the twin's per-batch (min(x, 0),
    max(x, 0)) — the value tfmot's EMA converges to — before fine-tuning starts.

    Args:
        qat: the model from ``quantize_twin``.
        twin: the float tf_keras twin it was made from (same layer names).
        images: float32 RGB 0..255 ``(N, H, W, 3)`` array, a ``tf.data.Dataset`` of images or
            ``(images, masks)`` batches.
        batch_size: batch size for an array.
        max_batches: at most this many batches.

    Returns:
        The number of ranges set.
    """
    import tensorflow as tf

    from kseg.progress import progress

    tf_keras = tf_keras_module()
    targets = _range_targets(qat)
    names = sorted({n for n, kind, _ in targets if n is not None and kind == "output"})
    names = [n for n in names if _has_layer(twin, n)]
    pre = sorted({n for n, kind, _ in targets if kind == "pre_activation" and _has_layer(twin, n)
                  and isinstance(twin.get_layer(n), tf_keras.layers.Conv2D)})
    probe_outputs = [twin.get_layer(n).output for n in names] + [twin.get_layer(n).input for n in pre]
    probe = tf_keras.Model(twin.inputs, probe_outputs) if probe_outputs else None
    if isinstance(images, tf.data.Dataset):
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in images.take(max_batches))
        known = int(images.cardinality())  # negative: unknown or infinite
        total = min(known, max_batches) if known >= 0 else max_batches
    else:
        arr = np.asarray(images, np.float32)
        batches = (arr[i: i + batch_size] for i in range(0, min(len(arr), batch_size * max_batches), batch_size))
        total = -(-min(len(arr), batch_size * max_batches) // batch_size)
    sums: dict = {}
    n = 0
    for batch in progress(batches, "QAT range calibration", "batches", total=total):
        batch = tf.convert_to_tensor(batch, tf.float32)
        values = {("input", None): batch}
        if probe is not None:
            outs = probe(batch, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for name, t in zip(names, outs[: len(names)]):
                values[("output", name)] = t
            for name, t in zip(pre, outs[len(names):]):
                layer = twin.get_layer(name)
                z = layer.convolution_op(t, layer.kernel)
                values[("pre_activation", name)] = z + layer.bias if layer.use_bias else z
        for key, t in values.items():
            lo = min(float(tf.reduce_min(t)), 0.0)
            hi = max(float(tf.reduce_max(t)), 0.0)
            a, b = sums.get(key, (0.0, 0.0))
            sums[key] = (a + lo, b + hi)
        n += 1
    if n == 0:
        raise KsegError("calibrate_ranges got no images; give a few training images")
    count = 0
    for name, kind, (vmin, vmax) in targets:
        key = (kind, name)
        if key not in sums:
            continue
        lo, hi = sums[key][0] / n, sums[key][1] / n
        if hi - lo < 1e-6:
            continue
        vmin.assign(lo)
        vmax.assign(hi)
        count += 1
    return count


def _has_layer(model, name) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def quantize_aware(model_k3, check_inputs=None, atol: float = 1e-5, calibration_data=None):
    """The quantization-aware tf_keras model of a Keras 3 model (not yet fine-tuned).

    Args:
        model_k3: a Keras 3 functional kseg model.
        check_inputs: a float32 batch (0..255) for the twin equality check; default: a fixed
            random batch at the model's input size (or 64×64 when the size is free).
        atol: the largest allowed twin/original difference.
        calibration_data: training images (see ``calibrate_ranges``); when given, the fake-quant
            ranges start from the float model's observed ranges instead of tfmot's [-6, 6].

    Returns:
        A ``tf_keras.Model`` with fake-quant ops (``quantize_model`` of the twin).

    Example:
        qat = quantize_aware(kseg.models.build_model("unet", num_classes=2, input_shape=(128, 128, 3)))
    """
    if check_inputs is None:
        h, w = model_k3.input_shape[1:3]
        shape = (2, h or 64, w or 64, model_k3.input_shape[-1] or 3)
        check_inputs = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
    twin = to_tf_keras(model_k3, check_inputs=check_inputs, atol=atol)
    qat = quantize_twin(twin)
    if calibration_data is not None:
        calibrate_ranges(qat, twin, calibration_data)
    return qat


# --------------------------------------------------------------------------------------
# fine-tuning


def sparse_ce_ignore(y_true, y_pred):
    """Mean pixel cross-entropy of logits, pixels labelled 255 left out (tf ops, any Keras).

    Args:
        y_true: ``(B, H, W)`` or ``(B, H, W, 1)`` integer labels, 255 = ignore.
        y_pred: ``(B, H, W, C)`` logits.
    """
    import tensorflow as tf

    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == 4:
        y_true = tf.squeeze(y_true, -1)
    valid = tf.not_equal(y_true, IGNORE)
    labels = tf.where(valid, y_true, tf.zeros_like(y_true))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(y_pred, tf.float32))
    w = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1.0)


def pixel_accuracy_ignore(y_true, y_pred):
    """Fraction of non-ignored pixels whose argmax equals the label."""
    import tensorflow as tf

    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == 4:
        y_true = tf.squeeze(y_true, -1)
    valid = tf.cast(tf.not_equal(y_true, IGNORE), tf.float32)
    hit = tf.cast(tf.equal(tf.argmax(y_pred, -1, output_type=tf.int32), y_true), tf.float32)
    return tf.reduce_sum(hit * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def qat_fine_tune(model_k3, train_ds, val_ds=None, epochs: int = 2, loss=None, lr: float = 1e-4,
                  out_dir=None, steps_per_epoch=None, verbose=0, calibrate: bool = True):
    """Quantization-aware fine-tuning of a Keras 3 model; returns (and saves) the QAT model.

    Args:
        model_k3: the trained Keras 3 model, or a QAT tf_keras model to continue.
        train_ds: a ``tf.data.Dataset`` of ``(float32 images 0..255, int32 masks, 255 = ignore)``
            batches, e.g. ``kseg.data.pipeline.make_dataset(ds, size=..., training=True)``.
        val_ds: an optional validation dataset of the same form.
        epochs: fine-tuning epochs (QAT needs few: 1–5 at a low learning rate).
        loss: a function ``(y_true, y_pred) -> scalar`` usable by tf_keras; default
            ``sparse_ce_ignore``.
        lr: Adam learning rate.
        out_dir: when given, the QAT model is saved there as ``qat_model.h5`` with
            ``history.json``.
        steps_per_epoch: passed to ``fit`` (needed for repeated datasets).
        verbose: ``fit`` verbosity, or ``"auto"``: a bar on a terminal; in a log a line per
            epoch and one every 30 s within it (``kseg.progress``).
        calibrate: start the fake-quant ranges from the float model's ranges on a few
            training batches (``calibrate_ranges``) instead of tfmot's [-6, 6].

    Returns:
        The fine-tuned QAT ``tf_keras.Model``; ``to_tflite(..., quantization="qat")`` converts it.
    """
    if epochs < 0:
        raise KsegError(f"epochs={epochs}: use 0 or more")
    tf_keras = tf_keras_module()
    if isinstance(model_k3, tf_keras.Model):
        qat = model_k3
    else:
        qat = quantize_aware(model_k3, calibration_data=train_ds if calibrate else None)
    qat.compile(optimizer=tf_keras.optimizers.Adam(lr), loss=loss or sparse_ce_ignore,
                metrics=[pixel_accuracy_ignore])
    history = {}
    if epochs:
        from kseg.progress import fit_verbose, step_lines_callback

        verbose = fit_verbose(verbose)
        callbacks = [step_lines_callback(tf_keras.callbacks.Callback)] if verbose == 2 else []
        h = qat.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                    verbose=verbose, callbacks=callbacks)
        history = {k: [float(v) for v in vs] for k, vs in h.history.items()}
    qat.kseg_history = history
    if out_dir is not None:
        save_qat_model(qat, out_dir, history=history)
    return qat


def float_weights_from_qat(qat, model) -> int:
    """Copy a QAT model's fine-tuned float weights back into the Keras 3 ``model`` it was made from.

    Quantization-aware training trains the float weights under fake quantization: they are what
    the int8 file rounds. Back in the Keras model they can be reparametrized (e.g.
    ``kseg.models.selfie.reform`` to a form with fewer int8 ops, whose per-channel weight grid is
    the same) and quantized again without training. Layers are matched by name; layers kseg QAT
    replaced (a ``Rescaling`` as a depthwise convolution) and layers without weights are skipped.

    Returns:
        The number of layers set.
    """
    count = 0
    for wrapper in qat.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None:
            continue
        try:
            target = model.get_layer(inner.name)
        except ValueError:
            continue
        want = [tuple(w.shape) for w in target.get_weights()]
        if not want or type(target).__name__ == "Rescaling":
            continue
        # the wrapper holds the float variables (the inner layer's kernel attribute is its fake-quant output)
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in wrapper.weights}
        got = [by_name[k].numpy() for k in ("kernel", "depthwise_kernel", "bias") if k in by_name]
        if want != [tuple(w.shape) for w in got]:
            raise KsegError(f"QAT layer {inner.name} has weights {[w.shape for w in got]}, the model's are {want}: "
                            "not the model this QAT model was made from")
        target.set_weights(got)
        count += 1
    return count


def save_qat_model(qat, out_dir, history=None) -> Path:
    """Write ``out_dir/qat_model.h5`` (and ``history.json``) atomically; return the model path."""
    from kseg.paths import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / QAT_MODEL_FILE
    import warnings

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # H5 on purpose: a tf_keras ".keras" file would be mistaken for a Keras 3 model
        warnings.filterwarnings("ignore", message=".*HDF5 file.*")
        qat.save(str(tmp), save_format="h5", include_optimizer=False)
    if history is not None:
        with atomic_path(out_dir / "history.json") as tmp:
            Path(tmp).write_text(json.dumps(history, indent=2))
    return path


def load_qat_model(path):
    """Load a QAT model saved by ``save_qat_model`` (a folder or the ``.h5`` file)."""
    tfmot = tfmot_module()
    tf_keras = tf_keras_module()
    path = Path(path)
    if path.is_dir():
        path = path / QAT_MODEL_FILE
    if not path.is_file():
        raise KsegError(f"QAT model {path} not found; run kseg quantize first (it writes {QAT_MODEL_FILE})")
    configs, _ = _default_configs()
    custom = {**_qat_custom_objects(), "Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig,
              "NoOpQuantizeConfig": configs.NoOpQuantizeConfig,
              "LogitLimitQuantizeConfig": _logit_limit_config_class(), **_bounded_config_classes()}
    try:
        with tfmot.quantization.keras.quantize_scope(custom):
            return tf_keras.models.load_model(str(path), compile=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise KsegError(f"cannot load QAT model {path}: {first}; is the file complete and made by kseg quantize?") from None
