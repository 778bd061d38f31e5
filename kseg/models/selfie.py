"""MediaPipe's selfie segmenter as a trainable Keras model, optionally with MediaPipe's weights.

The network of ``selfie_segmentation.tflite`` (MediaPipe 0.10.21, Apache-2.0; the general
256×256 model): a MobileNetV3-Small-like encoder to stride 16 (a hard-swish stem, eight inverted
residual blocks, squeeze-excite in five of them), an LR-ASPP-style gate on its top, and a decoder
that upsamples ×2 three times, fusing each encoder skip through a squeeze-excite attention, then
a 2×2 stride-2 transposed convolution to the input size. 106,401 weights, 58M multiply-adds at
256×256 — a third of what kseg's U-Net-Lite0 portrait model does at 192×192, which is why it is
fast on every CPU.

``pretrained=True`` loads MediaPipe's weights (``kseg/weights/mediapipe_selfie_segmentation.npz``,
read out of the ``.tflite`` by ``tools/convert_mediapipe_selfie.py``; PROVENANCE.md). The file
gives one person logit ``z`` (probability ``sigmoid(z)``); here the head has ``num_classes``
channels, and with two classes background gets a zero logit, so ``softmax([0, z])[1] ==
sigmoid(z)``: the Keras model computes what MediaPipe's file computes (``tests/models/test_selfie.py``),
and kseg's losses, training, int8 export and runtime take it like any 2-class model. Inputs are
float RGB 0..255 (``Rescaling(1/255)`` first, MediaPipe's ``[0, 1]``); outputs are logits.

There is no BatchNormalization: MediaPipe's file has its BatchNorms folded into the convolutions,
and a fine-tune trains those convolutions as they are (``model.name: selfie`` in a config). Fine-tune
with Lovász-softmax at about 1e-5 (``configs/portrait_selfie_lovasz.yaml``): cross-entropy makes this
network better calibrated and worse at the 0.5 threshold, even at 2e-5 (docs/models.md).

Example:
    model = SelfieSegmenter(num_classes=2, input_shape=(256, 256, 3), pretrained=True)
    person = keras.ops.softmax(model(images_0_255))[..., 1]        # == MediaPipe's output

Reference:
    MediaPipe Selfie Segmentation model card (Google, 2021); Howard et al., "Searching for
    MobileNetV3", ICCV 2019 (the blocks and LR-ASPP).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "mediapipe_selfie_segmentation.npz"

# The encoder's inverted residual blocks: (expansion channels, depthwise kernel, stride, output
# channels, activation, squeeze-excite channels or None). A block adds its input to its output
# when the stride is 1 and the channels match.
BLOCKS = (
    (16, 3, 2, 16, "relu", 8),
    (72, 3, 2, 24, "relu", None),
    (88, 3, 1, 24, "relu", None),
    (96, 5, 2, 32, "hard_swish", 24),
    (128, 5, 1, 32, "hard_swish", 32),
    (128, 5, 1, 32, "hard_swish", 32),
    (96, 5, 1, 32, "hard_swish", 24),
    (96, 5, 1, 32, "hard_swish", 24),
)
STEM = 16
HEAD = 128
DECODER = (24, 16, 16)  # channels of the three decoder levels (stride 8, 4, 2)


class _Names:
    """Layer names in creation order, as Keras (and so MediaPipe's file) numbers them."""

    def __init__(self):
        self.count = {}

    def __call__(self, kind):
        n = self.count.get(kind, 0)
        self.count[kind] = n + 1
        return kind if n == 0 else f"{kind}_{n}"


@keras.saving.register_keras_serializable(package="kseg")
class LogitLimit(layers.Layer):
    """``clip(x, -limit, limit)`` in inference, ``x`` in training.

    MediaPipe's person logits reach ±100: an int8 output spread over that range has a step of
    about 6, so every pixel within ±3 of the decision rounds to the same value and the soft edge
    the apps blend with is lost. Bounding the logits at export keeps the step at ``2 * limit /
    255`` (0.06 for 8) and changes no decision (for one logit, or two of which the background
    stays within the bound, as in ``SelfieSegmenter``) and hardly any probability (``sigmoid(8) =
    0.9997``). In int8 the bound costs nothing: the layer before it gets the fixed range
    ``[-limit, limit]`` (kseg QAT) and saturates there. In training the logits pass unchanged, so
    a confidently wrong pixel still gets the full cross-entropy gradient.
    """

    def __init__(self, limit=8.0, **kwargs):
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, x, training=None):
        if training:
            return x
        return keras.ops.clip(x, -self.limit, self.limit)

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


HARD_SWISH_FORMS = ("fused", "split", "folded")


def _hard_swish(x, name, form):
    """``x * relu6(x + 3) / 6``: one ``hard_silu`` (TFLite HARD_SWISH, MediaPipe's op) or, with
    ``form="split"``, ``(x / 6) * relu6(x + 3)`` from Rescaling, ReLU and Multiply. The two are the
    same function; they differ in int8 TFLite, where XNNPACK runs HARD_SWISH on TFLite's own kernel
    (each one cuts the delegated graph: 12 partitions for this network) and the split form in one
    partition (docs/models.md "MediaPipe's network, fine-tuned").

    ``form="folded"``: the convolution before has its weights divided by 6, so ``x`` here is
    ``x / 6`` already and ``x * relu6(6 x + 3)`` is the hard-swish of the unscaled value, one
    Rescaling fewer (one pass over the activations fewer in int8; ``fold_weights``)."""
    if form == "fused":
        return layers.Activation("hard_silu", name=name)(x)
    if form == "folded":
        t = layers.Rescaling(6.0, offset=3.0, name=f"{name}_plus3")(x)
        t = layers.ReLU(max_value=6.0, name=f"{name}_relu6")(t)
        return layers.Multiply(name=name)([x, t])
    t = layers.Rescaling(1.0, offset=3.0, name=f"{name}_plus3")(x)
    t = layers.ReLU(max_value=6.0, name=f"{name}_relu6")(t)
    return layers.Multiply(name=name)([layers.Rescaling(1.0 / 6.0, name=f"{name}_div6")(x), t])


def _activation(x, kind, name, form):
    return layers.ReLU(name=name)(x) if kind == "relu" else _hard_swish(x, name, form)


@keras.saving.register_keras_serializable(package="kseg")
class SelfieSegmenter(SegmentationModel):
    """MediaPipe's selfie segmenter network (see the module docstring).

    Args:
        num_classes: output channels (logits); the pretrained head is for 2 (background, person:
            train with this) or 1 (MediaPipe's own head, one sigmoid person logit: 2.1M fewer
            multiply-adds at 256×256, for export; ``single_logit`` makes it from a 2-class model);
            other counts get a new head on the pretrained body.
        input_shape: ``(H, W, 3)``, H and W multiples of 16 (MediaPipe: 256×256, landscape 144×256).
        pretrained: load MediaPipe's weights (shipped in kseg, nothing downloaded).
        weights: another ``.npz`` of the same layout (``tools/convert_mediapipe_selfie.py``).
        logit_limit: bound the logits to ``±limit`` in inference (``LogitLimit``; for an int8 export,
            e.g. 8); ``None``: MediaPipe's unbounded logits.
        hard_swish: ``"fused"`` (MediaPipe's HARD_SWISH op), ``"split"`` (the same function from
            ops XNNPACK runs in int8; the weights are the same) or ``"folded"`` (for an int8 export:
            the split form with its ``/ 6`` and the input's ``/ 255`` folded into the convolutions
            before them, 12 fewer passes over the activations; the stored weights of those
            convolutions are scaled, ``fold_weights``; ``reform`` converts a model between forms).

    Example:
        model = SelfieSegmenter(num_classes=2, input_shape=(256, 256, 3), pretrained=True)
    """

    def __init__(self, num_classes=2, input_shape=(256, 256, 3), pretrained=False, weights=None, logit_limit=None,
                 hard_swish="fused", **kwargs):
        input_shape = check_input_shape(input_shape, 16, "SelfieSegmenter")
        if hard_swish not in HARD_SWISH_FORMS:
            raise KsegError(f"SelfieSegmenter hard_swish must be one of {', '.join(HARD_SWISH_FORMS)}, "
                            f"got {hard_swish!r}")
        if num_classes < 1:
            raise KsegError(f"SelfieSegmenter needs num_classes >= 1 (1: one sigmoid person logit), got {num_classes}")
        conv = _Names()

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        # folded: the stem convolution takes 0..255 (its kernel carries the 1/255)
        x = inputs if hard_swish == "folded" else layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
        prescaled = {}  # convolution name -> what its weights are multiplied by in this form
        fold = 1.0 / 6.0 if hard_swish == "folded" else 1.0
        name = conv("conv2d")
        x = layers.Conv2D(STEM, 3, strides=2, padding="same", name=name)(x)
        prescaled[name] = (fold / 255.0 if hard_swish == "folded" else 1.0, fold)
        stem = x = _hard_swish(x, "stem_hswish", hard_swish)
        skips = {}
        for i, (expand, kernel, stride, out, act, se) in enumerate(BLOCKS):
            name = conv("conv2d")
            y = layers.Conv2D(expand, 1, name=name)(x)
            if act == "hard_swish":
                prescaled[name] = (fold, fold)
            y = _activation(y, act, f"block{i}_expand_act", hard_swish)
            name = conv("depthwise_conv2d")
            y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", name=name)(y)
            if act == "hard_swish":
                prescaled[name] = (fold, fold)
            y = _activation(y, act, f"block{i}_dw_act", hard_swish)
            if se:
                g = layers.GlobalAveragePooling2D(keepdims=True, name=f"block{i}_se_pool")(y)
                g = layers.Conv2D(se, 1, activation="relu", name=conv("conv2d"))(g)
                g = layers.Conv2D(expand, 1, activation="sigmoid", name=conv("conv2d"))(g)
                y = layers.Multiply(name=f"block{i}_se")([y, g])
            y = layers.Conv2D(out, 1, name=conv("conv2d"))(y)
            if stride == 1 and x.shape[-1] == out:
                y = layers.Add(name=f"block{i}_add")([y, x])
            x = y
            skips[i] = x
        # LR-ASPP gate on the stride-16 features
        a = layers.Conv2D(HEAD, 1, activation="relu", name=conv("conv2d"))(x)
        g = layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
        g = layers.Conv2D(HEAD, 1, activation="sigmoid", name=conv("conv2d"))(g)
        x = layers.Multiply(name="head_gate")([a, g])
        # decoder: stride 8 (block 2's output), 4 (block 0's), 2 (the stem)
        for level, (skip, filters) in enumerate(zip((skips[2], skips[0], stem), DECODER)):
            up = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
            c = layers.Conv2D(filters, 1, name=conv("conv2d"))(up)
            s = layers.Add(name=f"up{level}_sum")([skip, c])
            g = layers.GlobalAveragePooling2D(keepdims=True, name=f"up{level}_pool")(s)
            g = layers.Conv2D(filters, 1, activation="relu", name=conv("conv2d"))(g)
            g = layers.Conv2D(filters, 1, activation="sigmoid", name=conv("conv2d"))(g)
            f = layers.Add(name=f"up{level}_fuse")([layers.Multiply(name=f"up{level}_attend")([skip, g]), c])
            y = layers.Conv2D(filters, 1, activation="relu", name=conv("conv2d"))(f)
            z = layers.DepthwiseConv2D(3, padding="same", activation="relu", name=conv("depthwise_conv2d"))(y)
            x = layers.Add(name=f"up{level}_out")([y, z])
        outputs = layers.Conv2DTranspose(num_classes, 2, strides=2, padding="same", name="segment",
                                         dtype="float32")(x)
        if logit_limit is not None:
            outputs = LogitLimit(logit_limit, name="logit_limit", dtype="float32")(outputs)

        super().__init__(inputs=inputs, outputs=outputs, name=kwargs.pop("name", "selfie"),
                         config=dict(num_classes=num_classes, input_shape=input_shape, pretrained=pretrained,
                                     weights=None if weights is None else str(weights),
                                     logit_limit=logit_limit, hard_swish=hard_swish), **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.pretrained = pretrained
        self.weights_file = weights
        self.logit_limit = logit_limit
        self.hard_swish = hard_swish
        self._prescaled = tuple(prescaled.items())
        if pretrained or weights is not None:
            load_mediapipe_weights(self, WEIGHTS if weights is None else weights)

    @classmethod
    def from_config(cls, config):
        """Rebuild without loading MediaPipe's weights: a ``.keras`` file brings its own."""
        config = dict(config)
        weights = config.pop("weights", None)
        model = super().from_config(config)
        model._kseg_config["weights"] = weights
        return model


def load_mediapipe_weights(model, path) -> int:
    """Set ``model``'s layers from a ``.npz`` written by ``tools/convert_mediapipe_selfie.py``.

    Keys are ``LAYER/kernel`` and ``LAYER/bias`` in Keras layout; the transposed ``segment``
    head holds MediaPipe's one person channel, placed in channel 1 of a 2-class head with a zero
    background logit (other class counts keep their new head). Returns the layers set.
    """
    path = Path(path)
    if not path.is_file():
        raise KsegError(f"MediaPipe selfie weights {path} not found; reinstall kseg or give weights=PATH.npz "
                        "(tools/convert_mediapipe_selfie.py writes it from selfie_segmentation.tflite)")
    data = np.load(path)
    names = sorted({k.split("/")[0] for k in data.files})
    done = 0
    for name in names:
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise KsegError(f"{path}: layer {name} is not in {model.name}; the file is not MediaPipe's selfie "
                            "segmenter layout") from None
        kernel, bias = data[f"{name}/kernel"].astype("float32"), data[f"{name}/bias"].astype("float32")
        if name == "segment":
            if model.num_classes not in (1, 2):
                continue
            if model.num_classes == 1:
                layer.set_weights([kernel, bias])
                done += 1
                continue
            kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=2)  # (kh, kw, out, in)
            bias = np.concatenate([np.zeros_like(bias), bias])
        want = [tuple(w.shape) for w in layer.get_weights()]
        if want != [kernel.shape, bias.shape]:
            raise KsegError(f"{path}: {name} has shapes {kernel.shape}, {bias.shape} but the model's are {want}")
        layer.set_weights(fold_weights(model, name, [kernel, bias]))
        done += 1
    return done


def fold_weights(model, name, weights, inverse=False):
    """Layer ``name``'s weights in ``model``'s hard-swish form from the plain form (``inverse``: back).

    The plain form is what MediaPipe's file holds and the ``"fused"`` and ``"split"`` forms store;
    the ``"folded"`` form stores the convolutions before each hard-swish divided by 6 (and the stem's
    kernel by 255 more, since its input is no longer rescaled). Other layers are returned as given.
    """
    kernel_scale, bias_scale = dict(model._prescaled).get(name, (1.0, 1.0))
    if kernel_scale == 1.0 and bias_scale == 1.0:
        return list(weights)
    if inverse:
        kernel_scale, bias_scale = 1.0 / kernel_scale, 1.0 / bias_scale
    kernel, bias = weights
    return [(kernel * kernel_scale).astype(kernel.dtype), (bias * bias_scale).astype(bias.dtype)]


def reform(model, hard_swish="keep", logit_limit="keep", num_classes="keep"):
    """``model`` (a ``SelfieSegmenter``) rebuilt in another form, computing the same function.

    Args:
        model: a ``SelfieSegmenter`` (any form, 1 or 2 classes).
        hard_swish: ``"fused"``, ``"split"`` or ``"folded"`` (for an int8 export), or ``"keep"``.
        logit_limit: a bound (e.g. 8 for an int8 export), ``None`` for none, or ``"keep"``.
        num_classes: ``1`` turns a 2-class model into MediaPipe's one-logit head (``single_logit``).

    Returns:
        A new ``SelfieSegmenter`` with the weights converted (``fold_weights``); training state is not kept.

    Example:
        int8_ready = reform(keras.saving.load_model("best.keras"), hard_swish="folded", logit_limit=8)
    """
    if not isinstance(model, SelfieSegmenter):
        raise KsegError(f"reform takes a SelfieSegmenter, not {type(model).__name__}")
    config = {**model.get_config(), "pretrained": False, "weights": None}
    config.pop("trainable", None)
    for key, value in (("hard_swish", hard_swish), ("logit_limit", logit_limit), ("num_classes", num_classes)):
        if value != "keep":
            config[key] = value
    if config["num_classes"] != model.num_classes and (model.num_classes, config["num_classes"]) != (2, 1):
        raise KsegError(f"reform turns 2 classes into 1 (single_logit), not {model.num_classes} into "
                        f"{config['num_classes']}")
    new = SelfieSegmenter(**config)
    for layer in model.layers:
        w = layer.get_weights()
        if not w:
            continue
        w = fold_weights(model, layer.name, w, inverse=True)
        if layer.name == "segment" and new.num_classes != model.num_classes:
            kernel, bias = w
            w = [kernel[:, :, 1:] - kernel[:, :, :1], bias[1:] - bias[:1]]
        new.get_layer(layer.name).set_weights(fold_weights(new, layer.name, w))
    new._kseg_config["pretrained"] = model._kseg_config.get("pretrained")
    return new


def single_logit(model, logit_limit="keep", hard_swish="keep"):
    """A 2-class ``SelfieSegmenter`` as the same network with one sigmoid person logit.

    ``softmax([a, b])[1] == sigmoid(b - a)`` and the head is linear, so a head of kernel
    ``k1 - k0`` and bias ``b1 - b0`` gives exactly the person probability of ``model`` with
    MediaPipe's one-channel head (what ``kseg.runtime.Segmenter`` reads as a sigmoid model),
    half the head's arithmetic. Every other weight is copied; ``logit_limit`` is the model's
    unless given (e.g. 8 for an int8 export, ``None`` for none), and so is ``hard_swish`` (``"folded"``
    for an int8 export; ``reform``).

    Example:
        export_model = single_logit(keras.saving.load_model("runs/portrait_selfie/best.keras"))
    """
    if not isinstance(model, SelfieSegmenter) or model.num_classes != 2:
        raise KsegError(f"single_logit takes a 2-class SelfieSegmenter, not {type(model).__name__} "
                        f"with {getattr(model, 'num_classes', '?')} classes")
    return reform(model, hard_swish=hard_swish, logit_limit=logit_limit, num_classes=1)
