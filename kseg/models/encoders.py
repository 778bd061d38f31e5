"""Encoders: backbones that hand decoders a feature pyramid ``{"P1": stride 2, ..., "P5": stride 32}``.

This is the only file that knows backbone layer names. Every encoder is built as layers
directly on the caller's input tensor (a flat graph: no nested ``keras.Model``), because the
quantization path rebuilds models layer by layer as a tf_keras twin. Each encoder normalises
its own input: models take float32 RGB in 0..255.

With ``output_stride`` 16 or 8, the stages past that stride use dilation instead of a stride
(atrous convolution): the keys stay ``P4``/``P5`` but their stride is capped.

Encoders:
    efficientnet_lite0  EfficientNet-Lite0 (Tan & Le 2019; Lite: no squeeze-excite, ReLU6),
                        ImageNet weights shipped in kseg/weights (see PROVENANCE.md)
    mobilenet_v2        keras.applications MobileNetV2 (random init unless ``weights=`` a file)
    resnet50            keras.applications ResNet50 (random init unless ``weights=`` a file)
    vgg16               VGG16 (13 conv layers), layer names as keras.applications

Example:
    inputs = keras.Input((256, 256, 3))
    pyramid = build_encoder("efficientnet_lite0", inputs, pretrained=True)
    pyramid["P5"].shape   # (None, 8, 8, 320)
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from kseg.errors import KsegError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
EFFICIENTNET_LITE0_WEIGHTS = WEIGHTS_DIR / "efficientnet_lite0_imagenet.weights.h5"

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

CHANNELS = {
    "efficientnet_lite0": {"P1": 16, "P2": 24, "P3": 40, "P4": 112, "P5": 320},
    "mobilenet_v2": {"P1": 16, "P2": 24, "P3": 32, "P4": 96, "P5": 320},
    "resnet50": {"P1": 64, "P2": 256, "P3": 512, "P4": 1024, "P5": 2048},
    "vgg16": {"P1": 64, "P2": 128, "P3": 256, "P4": 512, "P5": 512},
}


def encoder_channels(name: str) -> dict:
    """Channels of each pyramid level of encoder ``name``."""
    _check_name(name)
    return dict(CHANNELS[name])


def _check_name(name):
    if name not in ENCODERS:
        raise KsegError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")


def _check_stride(output_stride):
    if output_stride not in (8, 16, 32):
        raise KsegError(f"output_stride must be 8, 16 or 32, got {output_stride}")


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)


def efficientnet_lite0(inputs, output_stride=32, prefix="", include_head=False):
    """EfficientNet-Lite0 features on ``inputs`` (float RGB 0..255).

    Returns:
        ``(pyramid, head)``: the P1..P5 dict, and the 1280-channel head conv output if
        ``include_head`` (for the ImageNet classifier), else ``None``.
    """
    _check_stride(output_stride)
    p = prefix
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=f"{p}rescale")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name=f"{p}stem_conv")(x)
    x = _bn(f"{p}stem_bn")(x)
    x = layers.ReLU(6.0, name=f"{p}stem_relu")(x)
    nominal, dilation = 2, 1  # the stride the network would have without dilation
    pyramid = {}
    block = 0
    in_ch = 32
    for expand, kernel, s, out_ch, repeats in LITE0_STAGES:
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
            if expand != 1:
                y = layers.Conv2D(in_ch * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(y)
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
    pyramid["P5"] = x
    head = None
    if include_head:
        h = layers.Conv2D(1280, 1, padding="same", use_bias=False, name=f"{p}head_conv")(x)
        h = _bn(f"{p}head_bn")(h)
        head = layers.ReLU(6.0, name=f"{p}head_relu")(h)
    return pyramid, head


def efficientnet_lite0_classifier(input_shape=(224, 224, 3), weights=None):
    """The ImageNet classifier (encoder + head + pooling + 1000-way dense), for checking weights.

    Args:
        weights: a ``.weights.h5`` file of this classifier; default: the shipped one.
    """
    inputs = keras.Input(input_shape)
    _, head = efficientnet_lite0(inputs, include_head=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(head)
    x = layers.Dense(1000, name="fc")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0_classifier")
    path = Path(weights) if weights else EFFICIENTNET_LITE0_WEIGHTS
    if weights is not False:
        if not path.is_file():
            raise KsegError(f"EfficientNet-Lite0 weights {path} not found; run tools/convert_efficientnet_lite0.py")
        model.load_weights(path)
    return model


def _load_lite0_into(model_layers, path: Path):
    """Copy the shipped classifier's weights into encoder layers of the same names."""
    import h5py  # noqa: F401  (keras' h5 reader needs it; imported for a clear failure)

    if not path.is_file():
        raise KsegError(f"EfficientNet-Lite0 weights {path} not found; reinstall kseg or run tools/convert_efficientnet_lite0.py")
    source = efficientnet_lite0_classifier(weights=path)
    by_name = {l.name: l for l in source.layers}
    copied = 0
    for layer in model_layers:
        src = by_name.get(layer.name)
        if src is not None and src.weights and len(src.weights) == len(layer.weights):
            layer.set_weights(src.get_weights())
            copied += 1
    return copied


# --------------------------------------------------------------------------------------
# VGG16 (layer names as keras.applications, so its weight files load by name)


def vgg16(inputs, output_stride=32):
    _check_stride(output_stride)
    if output_stride != 32:
        raise KsegError("vgg16 supports output_stride 32 only; use resnet50 or efficientnet_lite0 for dilated models")
    # caffe-style preprocessing as keras.applications.vgg16: BGR, minus ImageNet means
    x = layers.Conv2D(3, 1, use_bias=True, trainable=False, name="vgg_preprocess",
                      kernel_initializer=_BGRFlip(), bias_initializer=keras.initializers.Constant([-103.939, -116.779, -123.68]))(inputs)
    pyramid = {}
    for b, (n, ch) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, n + 1):
            x = layers.Conv2D(ch, 3, padding="same", activation="relu", name=f"block{b}_conv{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
        pyramid[f"P{b}"] = x
    return pyramid


@keras.saving.register_keras_serializable(package="kseg")
class _BGRFlip(keras.initializers.Initializer):
    """A fixed 1×1 kernel that swaps R and B (RGB → BGR)."""

    def __call__(self, shape, dtype=None):
        import numpy as np

        k = np.zeros(shape, "float32")
        k[0, 0, 0, 2] = k[0, 0, 1, 1] = k[0, 0, 2, 0] = 1.0
        return keras.ops.convert_to_tensor(k, dtype=dtype)

    def get_config(self):
        return {}


# --------------------------------------------------------------------------------------
# keras.applications encoders (random init unless a local weights file is given)


def _applications(name, inputs, output_stride, weights):
    if output_stride != 32:
        raise KsegError(
            f"{name} is taken from keras.applications, which has no dilated variant here; "
            "use output_stride=32 or the efficientnet_lite0 encoder"
        )
    if name == "mobilenet_v2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mnv2_rescale")(inputs)
        base = keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None)
        names = {"P1": "expanded_conv_project_BN", "P2": "block_2_add", "P3": "block_5_add",
                 "P4": "block_12_add", "P5": "block_16_project_BN"}
    else:  # resnet50: caffe preprocessing
        x = layers.Conv2D(3, 1, use_bias=True, trainable=False, name="resnet_preprocess",
                          kernel_initializer=_BGRFlip(),
                          bias_initializer=keras.initializers.Constant([-103.939, -116.779, -123.68]))(inputs)
        base = keras.applications.ResNet50(input_tensor=x, include_top=False, weights=None)
        names = {"P1": "conv1_relu", "P2": "conv2_block3_out", "P3": "conv3_block4_out",
                 "P4": "conv4_block6_out", "P5": "conv5_block3_out"}
    if weights:
        p = Path(weights)
        if not p.is_file():
            raise KsegError(f"encoder weights file {p} not found; give a local .weights.h5/.h5 file")
        base.load_weights(str(p), skip_mismatch=False)
    return {k: base.get_layer(v).output for k, v in names.items()}


# --------------------------------------------------------------------------------------


ENCODERS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights shipped",
    "mobilenet_v2": "keras.applications MobileNetV2",
    "resnet50": "keras.applications ResNet50",
    "vgg16": "VGG16",
}


def build_encoder(name, inputs, *, output_stride=32, pretrained=False, weights=None) -> dict:
    """Build encoder ``name`` on ``inputs`` and return its pyramid ``{"P1".."P5"}``.

    Args:
        name: one of ``ENCODERS``.
        inputs: a Keras tensor of float32 RGB in 0..255.
        output_stride: 32, 16 or 8 (dilated last stages; efficientnet_lite0 only).
        pretrained: load ImageNet weights that ship with kseg (efficientnet_lite0).
        weights: a local weights file for the keras.applications/VGG16 encoders.

    Returns:
        dict of Keras tensors; see ``encoder_channels(name)``.
    """
    _check_name(name)
    _check_stride(output_stride)
    if pretrained and name != "efficientnet_lite0" and not weights:
        raise KsegError(
            f"no pretrained weights ship for {name}, and kseg never downloads; pass weights=PATH "
            "to a local weights file, or use efficientnet_lite0"
        )
    if name == "efficientnet_lite0":
        pyramid, _ = efficientnet_lite0(inputs, output_stride)
        if pretrained:
            model = keras.Model(inputs, pyramid["P5"])
            n = _load_lite0_into(model.layers, Path(weights) if weights else EFFICIENTNET_LITE0_WEIGHTS)
            if n < 3 * LITE0_BLOCKS:
                raise KsegError(f"only {n} EfficientNet-Lite0 layers received pretrained weights; the weights file does not match")
        return pyramid
    if name == "vgg16":
        pyramid = vgg16(inputs, output_stride)
        if weights:
            keras.Model(inputs, pyramid["P5"]).load_weights(str(weights), skip_mismatch=False)
        return pyramid
    return _applications(name, inputs, output_stride, weights)
