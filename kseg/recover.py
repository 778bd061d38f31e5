"""A trainable Keras model back from a kseg ``.tflite`` file, when its float checkpoint is gone.

``kseg export`` folds each BatchNormalization into the convolution before it and quantizes
the kernels per output channel, so the file holds, for every convolution, a kernel and a
bias: ``conv(x, W) + b``. Loading them into the same architecture gives the float model the
file computes (up to int8 rounding of the kernels: about 0.4% of each channel's range). To
keep the network trainable the BatchNormalization after each convolution is rebuilt rather
than left as an identity: its moving mean and variance are measured on real images (the
convolution's output over a few training images) and its scale and offset chosen so that in
inference it still adds ``b`` and nothing else. In training the batch statistics are then
close to the moving ones, so fine-tuning starts from the file's function instead of a
renormalised one.

Only convolutions (``Conv2D``, ``DepthwiseConv2D``) and the BatchNormalization right after a
bias-free convolution are recovered: every weight of the U-Net on EfficientNet-Lite0 of the
shipped portrait and parsing models. Other weighted layers (Dense, LayerNormalization,
transposed convolutions) and BatchNorms elsewhere are refused.

Example:
    from kseg.recover import load_tflite_weights
    model = build_from_config(cfg, num_classes=8)         # the architecture that was exported
    report = load_tflite_weights(model, "exports/parsing.tflite", images)   # images (N, H, W, 3)
    model.save("parsing_recovered.keras")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_WEIGHTED_OK = ("Conv2D", "DepthwiseConv2D", "BatchNormalization")


@dataclass
class RecoverReport:
    """What ``load_tflite_weights`` did: convolutions loaded, BatchNorms rebuilt, agreement with the file."""

    convolutions: int
    batchnorms: int
    images: int
    pixel_agreement: float | None = None  # share of pixels where argmax(Keras) == argmax(file)
    training_agreement: float | None = None  # argmax in training mode (batch statistics) == in inference
    matched_by_shape: list = field(default_factory=list)  # layers found by order and shape, not by name


def _tokens(name: str) -> set:
    """Layer names inside a TFLite tensor name ("unet_1/block0_dw_bn_1/batchnorm/mul_1;...")."""
    out = set()
    for part in re.split(r"[/;:]", name):
        if part:
            out.add(part)
            out.add(re.sub(r"_\d+$", "", part))
    return out


def _dequantize(interp, detail) -> np.ndarray:
    """The float values of a constant tensor (int8/int32 per-channel or per-tensor, or float)."""
    value = interp.get_tensor(detail["index"])
    if value.dtype in (np.float32, np.float16):
        return value.astype(np.float32)
    q = detail["quantization_parameters"]
    scales, zeros = np.asarray(q["scales"], np.float32), np.asarray(q["zero_points"], np.float32)
    if scales.size == 0:
        raise KsegError(f"tensor {detail['name']} is {value.dtype.__name__} without quantization scales")
    shape = [1] * value.ndim
    if scales.size > 1:
        shape[q["quantized_dimension"]] = scales.size
    return (value.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape)


def _next_batchnorm(layer):
    """The BatchNormalization that alone consumes ``layer``'s output, or None."""
    nodes = getattr(layer, "_outbound_nodes", [])
    if len(nodes) == 1 and type(nodes[0].operation).__name__ == "BatchNormalization":
        return nodes[0].operation
    return None


def read_convolutions(path) -> list:
    """Every convolution of a ``.tflite`` file in execution order.

    Returns:
        list of ``(kind, kernel, bias, names)``: kind ``"CONV_2D"`` or ``"DEPTHWISE_CONV_2D"``,
        the float kernel in Keras layout (Conv2D ``(kh, kw, in, out)``, depthwise ``(kh, kw, C, 1)``),
        the float bias ``(out,)`` and the set of layer names in its tensors' names.
    """
    from ai_edge_litert.interpreter import Interpreter

    if not Path(path).is_file():
        raise KsegError(f"{path} not found; give the .tflite file to recover the weights of")
    interp = Interpreter(model_path=str(path))
    details = {d["index"]: d for d in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] not in _CONV_OPS:
            continue
        x, w, b = (list(op["inputs"]) + [-1])[:3]
        if w < 0 or b < 0:
            raise KsegError(f"{path}: {op['op_name']} {op['index']} has no constant kernel and bias; "
                            "give an int8 or float32 file made by kseg export")
        try:
            kernel, bias = _dequantize(interp, details[w]), _dequantize(interp, details[b])
        except ValueError:
            raise KsegError(f"{path}: the kernel of {op['op_name']} {op['index']} is computed at run time "
                            "(a float16 file?); give the int8 or float32 file") from None
        if op["op_name"] == "CONV_2D":
            kernel = kernel.transpose(1, 2, 3, 0)                     # (O, kh, kw, I) -> (kh, kw, I, O)
        else:
            kernel = kernel.reshape(kernel.shape[1], kernel.shape[2], -1, 1)  # (1, kh, kw, C) -> (kh, kw, C, 1)
        names = set()
        for i in (w, b, *op["outputs"]):
            names |= _tokens(details[i]["name"])
        out.append((op["op_name"], kernel, bias, names))
    if not out:
        raise KsegError(f"{path} has no convolution: is it a kseg segmentation model?")
    return out


def _match(model, convs, path):
    """Pair each Keras convolution with the file's: by the layer names in the tensors' names,
    else the next unclaimed one (in layer order) with the kernel's shape."""
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if not layer.weights:
            continue
        if kind not in _WEIGHTED_OK:
            raise KsegError(f"{model.name} has a {kind} layer ({layer.name}) with weights: only "
                            "convolutions and BatchNormalization can be recovered from a .tflite file")
        if kind != "BatchNormalization":
            layers.append(layer)
    if len(layers) != len(convs):
        raise KsegError(f"{path} has {len(convs)} convolutions but this {model.name} has {len(layers)}: "
                        "it was exported from another architecture; give the config it was trained with")
    free = list(layers)
    pairs, by_shape = [], []
    for kind, kernel, bias, names in convs:
        want = "Conv2D" if kind == "CONV_2D" else "DepthwiseConv2D"
        named = [l for l in free if type(l).__name__ == want and (
            l.name in names or (_next_batchnorm(l) is not None and _next_batchnorm(l).name in names))]
        layer = named[0] if len(named) == 1 else None
        if layer is None:
            shaped = [l for l in free if type(l).__name__ == want and tuple(l.kernel.shape) == kernel.shape]
            if not shaped:
                raise KsegError(f"{path}: no {want} with a kernel of shape {kernel.shape} left in {model.name}; "
                                "it was exported from another architecture")
            layer = shaped[0]
            by_shape.append(layer.name)
        if tuple(layer.kernel.shape) != kernel.shape:
            raise KsegError(f"{path}: {layer.name}'s kernel is {tuple(layer.kernel.shape)} in the model but "
                            f"{kernel.shape} in the file; give the config the file was exported from")
        free.remove(layer)
        pairs.append((layer, kernel, bias))
    return pairs, by_shape


def load_tflite_weights(model, path, images, bias_offsets=None, batch_size: int = 8) -> RecoverReport:
    """Load the convolutions of the kseg ``.tflite`` file at ``path`` into ``model`` (in place).

    Args:
        model: a functional kseg model of the architecture the file was exported from (built
            from the training config, any initial weights).
        path: the ``.tflite`` file (int8 with per-channel kernels, as kseg exports, or float32).
        images: ``(N, H, W, 3)`` images at the model's input size, as the model takes them
            (0–255): the BatchNorm statistics are measured on them; 32–64 training images do.
        bias_offsets: optional ``{layer name: (C,) array}`` subtracted from a biased convolution's
            bias (e.g. the ``kseg calibrate`` biases folded into the classifier).
        batch_size: images per forward pass while measuring.

    Returns:
        ``RecoverReport``; ``pixel_agreement`` compares the model's argmax with the file's on
        the images (before ``bias_offsets``), ``training_agreement`` the model's argmax in
        training mode (BatchNorm on batch statistics) with inference (for models with one output).

    Raises:
        KsegError: the file holds another architecture or a layer kind that cannot be recovered.
    """
    import keras

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise KsegError(f"images must be (N, H, W, 3) with N >= 1; got shape {images.shape}")
    pairs, by_shape = _match(model, read_convolutions(path), path)
    offsets = {k: np.asarray(v, np.float32) for k, v in (bias_offsets or {}).items()}
    unknown = sorted(set(offsets) - {l.name for l, _, _ in pairs if l.use_bias})
    if unknown:
        raise KsegError(f"bias offsets for {', '.join(unknown)}: no convolution with a bias has that name")
    folded = []  # (conv layer, its BatchNorm, the file's bias)
    for layer, kernel, bias in pairs:
        if layer.use_bias:
            layer.set_weights([kernel, bias])
            continue
        bn = _next_batchnorm(layer)
        if bn is None:
            raise KsegError(f"{layer.name} has no bias and no BatchNormalization after it: the file's bias "
                            "has nowhere to go")
        layer.set_weights([kernel])
        # inference = z + bias whatever the statistics: what the layers after it see while measuring
        ones = np.ones_like(bias)
        bn.set_weights(_bn_weights(bn, np.sqrt(ones + float(bn.epsilon)), bias, 0 * ones, ones))
        folded.append((layer, bn, bias))
    stray = sorted({l.name for l in model.layers if type(l).__name__ == "BatchNormalization"}
                   - {bn.name for _, bn, _ in folded})
    if stray:
        raise KsegError(f"{model.name}'s BatchNormalization {stray[0]} does not follow a convolution without "
                        "bias: export folded it elsewhere and it cannot be recovered from the file")
    # what each bias-free convolution outputs on real images: its BatchNorm's moving statistics
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [conv.output for conv, _, _ in folded])
    sums = [np.zeros(int(bn.gamma.shape[0]), np.float64) for _, bn, _ in folded]
    squares = [np.zeros_like(s) for s in sums]
    counts = [0] * len(folded)
    for start in range(0, len(images), batch_size):
        outs = probe(images[start:start + batch_size], training=False)
        for k, o in enumerate(outs if isinstance(outs, (list, tuple)) else [outs]):
            o = np.asarray(o, np.float64).reshape(-1, sums[k].size)
            sums[k] += o.sum(0)
            squares[k] += (o * o).sum(0)
            counts[k] += len(o)
    for k, (_, bn, bias) in enumerate(folded):
        mean = sums[k] / counts[k]
        var = np.maximum(squares[k] / counts[k] - mean * mean, 1e-6)
        # inference: gamma (z - mean) / sqrt(var + eps) + beta = z - mean + beta = z + bias
        bn.set_weights(_bn_weights(bn, np.sqrt(var + float(bn.epsilon)), mean + bias, mean, var))
    agreement = training = None
    if len(model.outputs) == 1:
        agreement = _agreement(model, path, images, batch_size)
        training = _training_agreement(model, images, batch_size)
    for layer, _, _ in pairs:
        if layer.name in offsets:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, bias - offsets[layer.name]])
    return RecoverReport(convolutions=len(pairs), batchnorms=len(folded), images=len(images),
                         pixel_agreement=agreement, training_agreement=training, matched_by_shape=by_shape)


def _bn_weights(bn, gamma, beta, mean, var):
    """``bn``'s weight list, in its own order, for these values."""
    if not bn.scale or not bn.center:
        raise KsegError(f"{bn.name} has scale={bn.scale}, center={bn.center}: the file's bias needs both")
    values = {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var}
    out = []
    for w in bn.weights:
        key = w.path.rsplit("/", 1)[-1]
        if key not in values:
            raise KsegError(f"{bn.name}: unexpected BatchNormalization weight {w.path}")
        out.append(values[key].astype(np.float32))
    return out


def _agreement(model, path, images, batch_size):
    """Share of pixels where the recovered model and the file pick the same class."""
    from kseg.runtime import Segmenter

    seg = Segmenter(str(path), num_threads=2, card={})
    same = total = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        keras_cls = np.argmax(np.asarray(model(batch, training=False)), axis=-1)
        for img, mine in zip(batch, keras_cls):
            theirs = np.argmax(seg.logits(np.clip(img, 0, 255).astype(np.uint8)), axis=-1)
            if theirs.shape != mine.shape:
                raise KsegError(f"{path} outputs {theirs.shape} but the model {mine.shape}: another architecture")
            same += int((theirs == mine).sum())
            total += mine.size
    return same / max(1, total)


def _training_agreement(model, images, batch_size):
    """Share of pixels where training mode (BatchNorm on each batch's statistics) picks the inference class."""
    saved = [v.numpy() for v in model.non_trainable_variables]  # a training-mode call moves BatchNorm's statistics
    same = total = 0
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            a = np.argmax(np.asarray(model(batch, training=False)), axis=-1)
            b = np.argmax(np.asarray(model(batch, training=True)), axis=-1)
            same += int((a == b).sum())
            total += a.size
    finally:
        for v, value in zip(model.non_trainable_variables, saved):
            v.assign(value)
    return same / max(1, total)
