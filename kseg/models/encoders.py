"""Encoders: backbones that hand decoders a feature pyramid ``{"P1": stride 2, ..., "P5": stride 32}``.

This is the only file that knows backbone layer names. Every encoder is built as layers
directly on the caller's input tensor (a flat graph: no nested ``keras.Model``), because the
quantization path rebuilds models layer by layer as a tf_keras twin. Each encoder normalises
its own input: models take float32 RGB in 0..255.

With ``output_stride`` 16 or 8 (every encoder), the stages past that stride use dilation
instead of a stride (atrous convolution): the keys stay ``P4``/``P5`` but their stride is capped
at ``output_stride`` (OS 16: P5 has stride 16; OS 8: P4 and P5 have stride 8). Channels and
weights do not change, so pretrained weights load into any output stride.

Encoders:
    efficientnet_lite0  EfficientNet-Lite0 (Tan & Le 2019; Lite: no squeeze-excite, ReLU6),
                        ImageNet weights shipped in kseg/weights (see PROVENANCE.md)
    mobilenet_v2        keras.applications MobileNetV2 (random init unless ``weights=`` a file)
    resnet50            keras.applications ResNet50 (random init unless ``weights=`` a file)
    vgg16               VGG16 (13 conv layers), layer names as keras.applications

Input normalisation is each encoder's first layer: ``(x - 127) / 128`` (Rescaling) for
EfficientNet-Lite0, ``x / 127.5 - 1`` (Rescaling) for MobileNetV2, and keras.applications'
"caffe" mode (RGB → BGR, minus the ImageNet means; a frozen 1×1 Conv2D) for ResNet50 and VGG16.
The keras.applications encoders take a ``weights=`` file saved by keras.applications with
``include_top=False`` (``.h5`` or ``.weights.h5``); nothing is ever downloaded.

Reference:
    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ICML 2019; Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
    2017 (output stride by dilation); Sandler et al., "MobileNetV2", CVPR 2018; He et al.,
    "Deep Residual Learning", CVPR 2016; Simonyan & Zisserman, "Very Deep Convolutional
    Networks", ICLR 2015.

Example:
    inputs = keras.Input((256, 256, 3))
    pyramid = build_encoder("efficientnet_lite0", inputs, pretrained=True)
    pyramid["P5"].shape   # (None, 8, 8, 320)
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from kseg.errors import KsegError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
EFFICIENTNET_LITE0_WEIGHTS = WEIGHTS_DIR / "efficientnet_lite0_imagenet.weights.h5"
EFFICIENTNET_LITE2_WEIGHTS = WEIGHTS_DIR / "efficientnet_lite2_imagenet.weights.h5"

# (expand ratio, kernel, stride, output channels, repeats) — EfficientNet-B0 stages, which
# Lite0 keeps (width and depth multipliers 1.0), without squeeze-excite and with ReLU6.
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
LITE0_BLOCKS = sum(s[4] for s in LITE0_STAGES)  # 16

# EfficientNet-Lite2: width 1.1 and depth 1.2 on the same stages, with the Lite family's fixed
# stem (32) and head (1280) and unscaled first and last stages (``fix_head_stem``); channels
# rounded to multiples of 8 (as in the converted state dict: 21 blocks, 6.1M parameters).
LITE2_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 3),
    (6, 5, 2, 48, 3),
    (6, 3, 2, 88, 4),
    (6, 5, 1, 120, 4),
    (6, 5, 2, 208, 5),
    (6, 3, 1, 352, 1),
]

# name -> (stages, shipped ImageNet weights, display name)
LITE_VARIANTS = {
    "efficientnet_lite0": (LITE0_STAGES, EFFICIENTNET_LITE0_WEIGHTS, "EfficientNet-Lite0"),
    "efficientnet_lite2": (LITE2_STAGES, EFFICIENTNET_LITE2_WEIGHTS, "EfficientNet-Lite2"),
}

CHANNELS = {
    "efficientnet_lite0": {"P1": 16, "P2": 24, "P3": 40, "P4": 112, "P5": 320},
    "efficientnet_lite2": {"P1": 16, "P2": 24, "P3": 48, "P4": 120, "P5": 352},
    "mobilenet_v2": {"P1": 16, "P2": 24, "P3": 32, "P4": 96, "P5": 320},
    "resnet50": {"P1": 64, "P2": 256, "P3": 512, "P4": 1024, "P5": 2048},
    "vgg16": {"P1": 64, "P2": 128, "P3": 256, "P4": 512, "P5": 512},
}


def encoder_channels(name: str) -> dict:
    """Channels of each pyramid level of encoder ``name``.

    Args:
        name: one of ``ENCODERS``.

    Example:
        encoder_channels("efficientnet_lite0")["P5"]   # 320
    """
    _check_name(name)
    return dict(CHANNELS[name])


def _check_name(name):
    if name not in ENCODERS:
        raise KsegError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")


def _lite_variant(variant):
    """``(stages, shipped weights, display name)`` of an EfficientNet-Lite variant, or a clear error."""
    if variant not in LITE_VARIANTS:
        raise KsegError(f"unknown EfficientNet-Lite variant {variant!r}; use one of {', '.join(LITE_VARIANTS)}")
    return LITE_VARIANTS[variant]


def _check_stride(output_stride):
    if output_stride not in (8, 16, 32):
        raise KsegError(f"output_stride must be 8, 16 or 32, got {output_stride}")


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)


def efficientnet_lite(inputs, variant="efficientnet_lite0", output_stride=32, prefix="", include_head=False, stages=None,
                      expand=None):
    """EfficientNet-Lite0 (or Lite2) features on ``inputs`` (float RGB 0..255), as flat layers.

    Stem 3×3/2 (32), 16 MBConv blocks without squeeze-excite (``LITE0_STAGES``; Lite2: 21), ReLU6,
    BatchNormalization epsilon 1e-3 / momentum 0.99, "same" padding; layer names match the
    shipped weights file (``stem_conv``, ``block{i}_{expand,dw,project}_{conv,bn}``, ``head_conv``).

    Args:
        inputs: Keras tensor, float32 RGB in 0..255.
        variant: ``"efficientnet_lite0"`` or ``"efficientnet_lite2"`` (width 1.1, depth 1.2:
            ``LITE2_STAGES``, 21 blocks; the same layer naming, so its shipped weights load the
            same way). Lite2 is the larger encoder for a teacher model.
        output_stride: 32, 16 or 8 (dilated depthwise convolutions past that stride).
        prefix: prepended to every layer name (a second copy in one model; such layers do not
            receive pretrained weights).
        include_head: also build the 1×1 1280-channel head of the ImageNet classifier.
        stages: build only the first ``stages`` of the seven MBConv stages (``None``: all).
            A truncated encoder is cheaper (the portrait models' budget): its pyramid stops
            at the stride its last stage reaches, e.g. ``stages=4`` gives P1..P4 with P4 the
            80-channel stride-16 features, ``stages=5`` the 112-channel ones.
        expand: a narrower encoder: per stage, the share of each MBConv block's expansion
            channels kept (e.g. ``[1, 1, 1, 0.5, 0.5]``: half of the 480 and 672 hidden channels
            of stages 4 and 5, where the portrait model spends 45% of its multiply-adds);
            rounded to multiples of 8; ``None`` or missing stages: all. With pretrained
            weights a block keeps its most important hidden channels (``_load_lite_into``).

    Returns:
        ``(pyramid, head)``: the P1..P5 dict (P1..P4 or fewer when truncated), and the 1280-channel head conv output if
        ``include_head`` (for the ImageNet classifier), else ``None``.

    Example:
        pyramid, _ = efficientnet_lite0(keras.Input((224, 224, 3)))
        pyramid["P4"].shape   # (None, 14, 14, 112)

    Reference:
        Tan & Le, "EfficientNet", ICML 2019; EfficientNet-Lite (TensorFlow TPU repository, 2020).
    """
    _check_stride(output_stride)
    table, _, display = _lite_variant(variant)
    n_stages = len(table) if stages is None else int(stages)
    if not 1 <= n_stages <= len(table):
        raise KsegError(f"{display} has {len(table)} stages; encoder_stages must be 1..{len(table)}, got {stages}")
    if include_head and n_stages != len(table):
        raise KsegError(f"the ImageNet head needs all seven {display} stages")
    fractions = list(expand or [])
    if len(fractions) > n_stages or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
        raise KsegError(f"encoder_expand {expand!r}: give at most {n_stages} shares (one per stage), each in (0, 1]")
    fractions += [1.0] * (n_stages - len(fractions))
    p = prefix
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=f"{p}rescale")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name=f"{p}stem_conv")(x)
    x = _bn(f"{p}stem_bn")(x)
    x = layers.ReLU(6.0, name=f"{p}stem_relu")(x)
    nominal, dilation = 2, 1  # the stride the network would have without dilation
    pyramid = {}
    block = 0
    in_ch = 32
    for (ratio, kernel, s, out_ch, repeats), share in zip(table[:n_stages], fractions):
        for r in range(repeats):
            st = s if r == 0 else 1
            rate = dilation
            if st == 2:
                # this block ends level P(log2 nominal): the features before it are that level
                pyramid[f"P{nominal.bit_length() - 1}"] = x
                if nominal >= output_stride:
                    st, dilation = 1, dilation * 2  # atrous from here on
                nominal *= 2
            name = f"{p}block{block}"
            y = x
            if ratio != 1:
                hidden = in_ch * ratio if share == 1 else max(8, int(round(in_ch * ratio * share / 8)) * 8)
                y = layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(y)
                y = _bn(f"{name}_expand_bn")(y)
                y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
            y = layers.DepthwiseConv2D(kernel, strides=st, padding="same", use_bias=False,
                                       dilation_rate=rate if st == 1 else 1, name=f"{name}_dw_conv")(y)
            y = _bn(f"{name}_dw_bn")(y)
            y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
            y = layers.Conv2D(out_ch, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(y)
            y = _bn(f"{name}_project_bn")(y)
            if st == 1 and in_ch == out_ch:
                y = layers.Add(name=f"{name}_add")([x, y])
            x = y
            in_ch = out_ch
            block += 1
    # the last stage's output is the top level: P5 for the full encoder
    pyramid[f"P{nominal.bit_length() - 1}"] = x
    head = None
    if include_head:
        h = layers.Conv2D(1280, 1, padding="same", use_bias=False, name=f"{p}head_conv")(x)
        h = _bn(f"{p}head_bn")(h)
        head = layers.ReLU(6.0, name=f"{p}head_relu")(h)
    return pyramid, head


def efficientnet_lite0(inputs, output_stride=32, prefix="", include_head=False, stages=None, expand=None):
    """EfficientNet-Lite0 features: ``efficientnet_lite(inputs, "efficientnet_lite0", ...)``.

    Example:
        pyramid, _ = efficientnet_lite0(keras.Input((224, 224, 3)))
        pyramid["P4"].shape   # (None, 14, 14, 112)
    """
    return efficientnet_lite(inputs, "efficientnet_lite0", output_stride, prefix, include_head, stages, expand)


def efficientnet_lite_classifier(variant="efficientnet_lite0", input_shape=(224, 224, 3), weights=None):
    """The ImageNet classifier (encoder + head + pooling + 1000-way dense), for checking weights.

    Args:
        variant: ``"efficientnet_lite0"`` or ``"efficientnet_lite2"``.
        input_shape: ``(H, W, 3)``, default 224×224 (Lite0's training resolution; Lite2's is 260).
        weights: a ``.weights.h5`` file of this classifier; ``None``: the shipped one;
            ``False``: random initialisation (used by the conversion tool).

    Returns:
        A Keras model from float RGB 0..255 to 1000 ImageNet logits.

    Example:
        clf = efficientnet_lite_classifier("efficientnet_lite2", (260, 260, 3))
        clf.predict(rgb_260[None].astype("float32")).argmax(-1)   # 281..285: a domestic cat
    """
    _, shipped, display = _lite_variant(variant)
    inputs = keras.Input(input_shape)
    _, head = efficientnet_lite(inputs, variant, include_head=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(head)
    x = layers.Dense(1000, name="fc")(x)
    model = keras.Model(inputs, x, name=f"{variant}_classifier")
    path = Path(weights) if weights else shipped
    if weights is not False:
        if not path.is_file():
            raise KsegError(f"{display} weights {path} not found; run tools/convert_efficientnet_lite.py --variant {variant[-5:]}")
        try:
            model.load_weights(path)
        except Exception as e:
            raise KsegError(
                f"{path} does not hold {display} classifier weights "
                f"({type(e).__name__}); use kseg/weights/{shipped.name} "
                f"or re-run tools/convert_efficientnet_lite.py --variant {variant[-5:]}"
            ) from None
    return model


def efficientnet_lite0_classifier(input_shape=(224, 224, 3), weights=None):
    """The EfficientNet-Lite0 ImageNet classifier: ``efficientnet_lite_classifier("efficientnet_lite0", ...)``.

    Example:
        clf = efficientnet_lite0_classifier()
        clf.predict(rgb_224[None].astype("float32")).argmax(-1)   # 281..285: a domestic cat
    """
    return efficientnet_lite_classifier("efficientnet_lite0", input_shape, weights)


def _load_lite_into(variant, model_layers, path: Path):
    """Copy the shipped classifier's weights into encoder layers of the same names."""
    import h5py  # noqa: F401  (keras' h5 reader needs it; imported for a clear failure)

    if not path.is_file():
        raise KsegError(f"{LITE_VARIANTS[variant][2]} weights {path} not found; reinstall kseg or run "
                        f"tools/convert_efficientnet_lite.py --variant {variant[-5:]}")
    source = efficientnet_lite_classifier(variant, weights=path)
    done = _slice_narrow_blocks(source.layers, model_layers)
    return len(done) + _copy_weights_by_name(source.layers, [l for l in model_layers if l.name not in done])


def _slice_narrow_blocks(source_layers, target_layers) -> set:
    """For each MBConv block built narrower than the source (``expand``), set its expand conv,
    depthwise conv, their BatchNorms and the project conv to the source's weights on the kept
    hidden channels: those whose outgoing project-conv weights have the largest L1 norm (the
    usual magnitude criterion of channel pruning). Returns the names of the layers it set."""
    src = {l.name: l for l in source_layers if l.weights}
    dst = {l.name: l for l in target_layers if l.weights}
    done = set()
    for name, layer in dst.items():
        if not name.endswith("_expand_conv") or name not in src:
            continue
        block = name[: -len("_expand_conv")]
        width = int(layer.weights[0].shape[-1])
        full = int(src[name].weights[0].shape[-1])
        if width == full:
            continue
        proj = src[f"{block}_project_conv"].get_weights()[0]  # (1, 1, hidden, out)
        keep = np.sort(np.argsort(-np.abs(proj).sum(axis=(0, 1, 3)))[:width])
        layer.set_weights([src[name].get_weights()[0][..., keep]])
        for bn in (f"{block}_expand_bn", f"{block}_dw_bn"):
            dst[bn].set_weights([w[keep] for w in src[bn].get_weights()])
        dst[f"{block}_dw_conv"].set_weights([src[f"{block}_dw_conv"].get_weights()[0][:, :, keep, :]])
        dst[f"{block}_project_conv"].set_weights([proj[:, :, keep, :]])
        done |= {name, f"{block}_expand_bn", f"{block}_dw_conv", f"{block}_dw_bn", f"{block}_project_conv"}
    return done


# --------------------------------------------------------------------------------------
# Shared helpers for the keras.applications-style encoders


def _copy_weights_by_name(source_layers, target_layers) -> int:
    """Copy weights between layers of equal names (shapes do not change with stride or dilation)."""
    by_name = {l.name: l for l in source_layers if l.weights}
    copied = 0
    for layer in target_layers:
        src = by_name.get(layer.name)
        if src is not None and len(src.weights) == len(layer.weights):
            layer.set_weights(src.get_weights())
            copied += 1
    return copied


def _load_local_weights(model, weights, name):
    """Load a local weights file into a keras.applications model (never downloads)."""
    p = Path(weights)
    if not p.is_file():
        raise KsegError(f"{name} weights file {p} not found; give a local .weights.h5 or keras.applications .h5 file")
    try:
        model.load_weights(str(p))
    except Exception as e:  # a file for another architecture: say which, in one line
        raise KsegError(
            f"{p} does not hold {name} weights (include_top=False, as keras.applications saves them): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def _caffe_preprocess(inputs, name):
    """keras.applications 'caffe' preprocessing: RGB → BGR, minus the ImageNet channel means.

    A frozen 1×1 Conv2D does both in one layer that tf_keras and tfmot know.
    """
    return layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name, kernel_initializer=_BGRFlip(),
                         bias_initializer=keras.initializers.Constant([-103.939, -116.779, -123.68]))(inputs)


# --------------------------------------------------------------------------------------
# VGG16 (layer names as keras.applications, so its weight files load by name)


def vgg16(inputs, output_stride=32, weights=None):
    """VGG16's 13 conv layers on ``inputs`` (float RGB 0..255), pyramid after each pooling.

    With ``output_stride`` 16 or 8 the poolings past that stride become 3×3 stride-1 poolings
    and the convolutions after them dilate (DeepLab v1's recipe), so P4/P5 keep that stride.
    """
    _check_stride(output_stride)
    x = _caffe_preprocess(inputs, "vgg_preprocess")
    pyramid = {}
    dilation = 1
    for b, (n, ch) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, n + 1):
            x = layers.Conv2D(ch, 3, padding="same", activation="relu", dilation_rate=dilation,
                              name=f"block{b}_conv{i}")(x)
        if 2**b > output_stride:
            x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"block{b}_pool")(x)
            dilation *= 2
        else:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
        pyramid[f"P{b}"] = x
    if weights:
        source = keras.applications.VGG16(input_shape=(None, None, 3), include_top=False, weights=None)
        _load_local_weights(source, weights, "vgg16")
        model = keras.Model(inputs, pyramid["P5"])
        _copy_weights_by_name(source.layers, model.layers)
    return pyramid


@keras.saving.register_keras_serializable(package="kseg")
class _BGRFlip(keras.initializers.Initializer):
    """A fixed 1×1 kernel that swaps R and B (RGB → BGR)."""

    def __call__(self, shape, dtype=None):
        k = np.zeros(shape, "float32")
        k[0, 0, 0, 2] = k[0, 0, 1, 1] = k[0, 0, 2, 0] = 1.0
        return keras.ops.convert_to_tensor(k, dtype=dtype)

    def get_config(self):
        return {}


# --------------------------------------------------------------------------------------
# keras.applications encoders (random init unless a local weights file is given)

# Pyramid levels by keras.applications layer name.
_APPLICATION_LEVELS = {
    "mobilenet_v2": {"P1": "expanded_conv_project_BN", "P2": "block_2_add", "P3": "block_5_add",
                     "P4": "block_12_add", "P5": "block_16_project_BN"},
    "resnet50": {"P1": "conv1_relu", "P2": "conv2_block3_out", "P3": "conv3_block4_out",
                 "P4": "conv4_block6_out", "P5": "conv5_block3_out"},
}

# Per stride-2 step that can become atrous: (nominal stride after it, blocks of the stage it
# starts). mobilenet_v2 blocks are numbered 1..16 (block 0 is "expanded_conv").
_MNV2_STAGES = [(16, range(6, 13)), (32, range(13, 17))]
_RESNET50_STAGES = [(8, ("conv3", 4)), (16, ("conv4", 6)), (32, ("conv5", 3))]


def _dilation_plan(name, output_stride) -> dict:
    """Config overrides ``{layer name: {key: value}}`` that turn stride into dilation.

    The block whose stride is removed keeps the previous rate; the blocks after it use the
    doubled rate (as DeepLab's and torchvision's dilated backbones do).
    """
    plan = {}
    rate = 1
    if name == "mobilenet_v2":
        for nominal, blocks in _MNV2_STAGES:
            if nominal <= output_stride:
                continue
            first = blocks[0]
            # the stride-2 block pads explicitly then convolves "valid": pad by its rate instead
            plan[f"block_{first}_pad"] = {"padding": ((rate, rate), (rate, rate))}
            plan[f"block_{first}_depthwise"] = {"strides": (1, 1), "dilation_rate": (rate, rate)}
            rate *= 2
            for b in blocks[1:]:
                plan[f"block_{b}_depthwise"] = {"dilation_rate": (rate, rate)}
    elif name == "resnet50":
        for nominal, (stage, n) in _RESNET50_STAGES:
            if nominal <= output_stride:
                continue
            plan[f"{stage}_block1_1_conv"] = {"strides": (1, 1)}
            plan[f"{stage}_block1_0_conv"] = {"strides": (1, 1)}
            plan[f"{stage}_block1_2_conv"] = {"dilation_rate": (rate, rate)}
            rate *= 2
            for b in range(2, n + 1):
                plan[f"{stage}_block{b}_2_conv"] = {"dilation_rate": (rate, rate)}
    return plan


def _applications(name, inputs, output_stride, weights):
    if name == "mobilenet_v2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mnv2_rescale")(inputs)
        base = keras.applications.MobileNetV2(input_shape=tuple(inputs.shape[1:]), include_top=False, weights=None)
    else:  # resnet50: caffe preprocessing
        x = _caffe_preprocess(inputs, "resnet_preprocess")
        base = keras.applications.ResNet50(input_shape=tuple(inputs.shape[1:]), include_top=False, weights=None)
    if weights:
        _load_local_weights(base, weights, name)
    levels = _APPLICATION_LEVELS[name]
    sub = keras.Model(base.input, [base.get_layer(v).output for v in levels.values()])
    plan = _dilation_plan(name, output_stride)

    def clone(layer):
        config = layer.get_config()
        config.update(plan.get(layer.name, {}))
        return layer.__class__.from_config(config)

    # Re-run the graph on the caller's tensor with fresh (possibly dilated) layers, as
    # keras.models.clone_model does inside; its public form would wrap the result in a new
    # Model cut off from the caller's graph when ``x`` is not a keras.Input. The fresh layers
    # join the caller's functional model directly, with no nested Model.
    outputs = list(sub._run_through_graph(x, operation_fn=clone))
    if weights:
        _copy_weights_by_name(sub.layers, _layers_between(inputs, outputs))
    return dict(zip(levels, outputs))


def _layers_between(inputs, outputs):
    return keras.Model(inputs, outputs).layers


# --------------------------------------------------------------------------------------


ENCODERS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights shipped",
    "efficientnet_lite2": "EfficientNet-Lite2 (width 1.1, depth 1.2; 6.1M parameters with its head), ImageNet weights shipped",
    "mobilenet_v2": "keras.applications MobileNetV2",
    "resnet50": "keras.applications ResNet50",
    "vgg16": "VGG16",
}


def build_encoder(name, inputs, *, output_stride=32, pretrained=False, weights=None, stages=None, expand=None) -> dict:
    """Build encoder ``name`` on ``inputs`` and return its pyramid ``{"P1".."P5"}``.

    Args:
        name: one of ``ENCODERS``.
        inputs: a Keras tensor of float32 RGB in 0..255.
        output_stride: 32, 16 or 8. Below 32, the stages past that stride are dilated
            instead of strided; P4/P5 keep their keys and channels, their stride is capped.
        pretrained: load the ImageNet weights that ship with kseg (efficientnet_lite0 and
            efficientnet_lite2 only; for the others pass ``weights=``).
        weights: a local weights file: for the EfficientNet-Lite encoders a ``.weights.h5`` of
            ``efficientnet_lite_classifier``; for mobilenet_v2/resnet50/vgg16 a file saved by
            keras.applications with ``include_top=False``.
        stages: EfficientNet-Lite only: build only its first ``stages`` MBConv stages
            (see ``efficientnet_lite``); the pyramid then stops below P5.
        expand: EfficientNet-Lite only: per-stage shares of the expansion channels kept
            (see ``efficientnet_lite``).

    Returns:
        dict ``{"P1": stride 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}`` of Keras tensors built
        as layers directly on ``inputs``; channels as ``encoder_channels(name)``.

    Raises:
        KsegError: unknown name or output stride, a missing or mismatched weights file, or
            ``pretrained=True`` for an encoder whose weights kseg does not ship.

    Example:
        inputs = keras.Input((None, None, 3))
        pyramid = build_encoder("mobilenet_v2", inputs, output_stride=16)
        pyramid["P5"].shape   # (None, None, None, 320), stride 16
    """
    _check_name(name)
    _check_stride(output_stride)
    lite = name in LITE_VARIANTS
    if pretrained and not lite and not weights:
        raise KsegError(
            f"no pretrained weights ship for {name}, and kseg never downloads; pass weights=PATH "
            "to a local weights file, or use efficientnet_lite0 or efficientnet_lite2"
        )
    if stages is not None and not lite:
        raise KsegError(f"encoder_stages (a truncated encoder) is supported for the EfficientNet-Lite encoders only, not {name}")
    if expand is not None and not lite:
        raise KsegError(f"encoder_expand (a narrower encoder) is supported for the EfficientNet-Lite encoders only, not {name}")
    if lite:
        table, shipped, display = LITE_VARIANTS[name]
        pyramid, _ = efficientnet_lite(inputs, name, output_stride, stages=stages, expand=expand)
        if pretrained:
            model = keras.Model(inputs, pyramid[max(pyramid)])
            n = _load_lite_into(name, model.layers, Path(weights) if weights else shipped)
            blocks = sum(st[4] for st in table[: stages or len(table)])
            if n < 3 * blocks:
                raise KsegError(f"only {n} {display} layers received pretrained weights; the weights file does not match")
        return pyramid
    if name == "vgg16":
        return vgg16(inputs, output_stride, weights)
    return _applications(name, inputs, output_stride, weights)
