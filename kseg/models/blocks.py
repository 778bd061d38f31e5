"""Building blocks shared by the decoders: conv-BN-ReLU, ASPP, pyramid pooling, max-unpooling.

Everything here is made of layers that Keras 3 and tf_keras share and that tfmot can quantize,
except ``MaxUnpooling2D`` (SegNet), a small custom layer written with ``keras.ops`` that
needs its own tf_keras twin and QuantizeConfig on the quantization path.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from kseg.errors import KsegError


def conv_bn_relu(x, filters, kernel=3, name="conv", dilation=1, strides=1, relu6=False):
    """Conv2D (no bias) → BatchNormalization → ReLU."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", dilation_rate=dilation,
                      use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0 if relu6 else None, name=f"{name}_relu")(x)


def separable_bn_relu(x, filters, kernel=3, name="sep"):
    """DepthwiseConv2D → BN → ReLU → 1×1 Conv2D → BN → ReLU (MobileNet's separable block).

    Two layers that tfmot quantizes as they are (unlike ``SeparableConv2D``, which it splits).
    """
    x = layers.DepthwiseConv2D(kernel, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    return conv_bn_relu(x, filters, 1, name=f"{name}_pw")


def squeeze_excite(x, ratio=4, name="se"):
    """Channel gating by the whole image's context (Hu et al. 2018), as MediaPipe's selfie decoder
    uses: global average → 1×1 (C/ratio, ReLU) → 1×1 (C) → sigmoid → scale ``x``.

    Costs two 1×1 convolutions on a 1×1 map; gives a small decoder what its receptive field
    lacks (is this region inside a person at all?).
    """
    c = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(max(8, c // ratio), 1, name=f"{name}_reduce")(s)
    s = layers.ReLU(name=f"{name}_relu")(s)
    s = layers.Conv2D(c, 1, name=f"{name}_expand")(s)
    s = layers.Activation("sigmoid", name=f"{name}_gate")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def upsample(x, factor, name, interpolation="bilinear"):
    """Resize by an integer factor (``UpSampling2D``; bilinear with half-pixel centres)."""
    if isinstance(factor, int):
        factor = (factor, factor)
    if factor == (1, 1):
        return x
    return layers.UpSampling2D(size=factor, interpolation=interpolation, name=name)(x)


def static_hw(tensor, what):
    h, w = tensor.shape[1], tensor.shape[2]
    if h is None or w is None:
        raise KsegError(f"{what} needs a fixed input size (its pooling sizes depend on it); pass input_shape=(H, W, 3)")
    return int(h), int(w)


def aspp(x, filters=256, rates=(6, 12, 18), name="aspp", dropout=0.1):
    """Atrous spatial pyramid pooling (DeepLab v3): 1×1, three atrous 3×3, image pooling.

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017.
    """
    h, w = static_hw(x, "ASPP's image pooling")
    branches = [conv_bn_relu(x, filters, 1, name=f"{name}_b0")]
    for i, r in enumerate(rates, start=1):
        branches.append(conv_bn_relu(x, filters, 3, name=f"{name}_b{i}", dilation=r))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, name=f"{name}_pool_proj")
    branches.append(upsample(pooled, (h, w), f"{name}_pool_up", interpolation="nearest"))
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    y = conv_bn_relu(y, filters, 1, name=f"{name}_proj")
    return layers.Dropout(dropout, name=f"{name}_dropout")(y) if dropout else y


def pyramid_pooling(x, bins=(1, 2, 3, 6), filters=None, name="ppm"):
    """Pyramid pooling module (PSPNet): average-pool into b×b bins, 1×1 conv, upsample, concat.

    Needs the feature map's height and width divisible by every bin.

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """
    h, w = static_hw(x, "PSPNet's pyramid pooling")
    bad = [b for b in bins if h % b or w % b]
    if bad:
        raise KsegError(
            f"PSPNet's pyramid pooling needs the feature map ({h}×{w}) divisible by the bins {list(bins)}; "
            f"{bad} do not divide it — choose an input size whose height and width are multiples of "
            f"{int(np.lcm.reduce(list(bins)))} × the output stride"
        )
    c = x.shape[-1]
    filters = filters or max(c // len(bins), 16)
    outs = [x]
    for b in bins:
        y = layers.AveragePooling2D(pool_size=(h // b, w // b), strides=(h // b, w // b), name=f"{name}_pool{b}")(x)
        y = conv_bn_relu(y, filters, 1, name=f"{name}_bin{b}")
        outs.append(upsample(y, (h // b, w // b), f"{name}_up{b}", interpolation="bilinear" if b > 1 else "nearest"))
    return layers.Concatenate(name=f"{name}_concat")(outs)


@keras.saving.register_keras_serializable(package="kseg")
class BilinearUpsampleInitializer(keras.initializers.Initializer):
    """Transposed-convolution kernel that starts as bilinear interpolation (FCN).

    Each output channel upsamples its own input channel; the kernel is ``(k, k, C, C)``.
    """

    def __call__(self, shape, dtype=None):
        k, _, cout, cin = shape
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        og = np.ogrid[:k, :k]
        filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
        w = np.zeros(shape, dtype="float32")
        for i in range(min(cout, cin)):
            w[:, :, i, i] = filt
        return ops.convert_to_tensor(w, dtype=dtype or "float32")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(keras.layers.Layer):
    """SegNet's max-unpooling by pooling indices, without MaxPoolWithArgmax.

    Inputs ``[y, x]``: ``x`` is the encoder feature map *before* a 2×2/2 max pooling and ``y``
    the decoder's map at the pooled size. Each value of ``y`` is written where the max of its
    2×2 window of ``x`` was (the first one in row-major order on ties, as argmax does) and
    zeros elsewhere — exactly ``scatter(y, argmax_indices)``. Computed from builtin ops
    only (strided slices, EQUAL, MUL, PACK/RESHAPE, nearest upsampling), so it converts to
    TFLite, int8 included. ``x`` must have even height and width.

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017.
    """

    def call(self, inputs):
        y, x = inputs
        x = ops.cast(x, y.dtype)
        a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
        c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
        m = ops.maximum(ops.maximum(a, b), ops.maximum(c, d))
        ea = ops.cast(ops.equal(a, m), y.dtype)
        eb = ops.cast(ops.equal(b, m), y.dtype) * (1.0 - ea)
        ec = ops.cast(ops.equal(c, m), y.dtype) * (1.0 - ea) * (1.0 - eb)
        ed = 1.0 - ea - eb - ec  # the max is somewhere: the remaining position
        ya, yb, yc, yd = y * ea, y * eb, y * ec, y * ed
        shape = ops.shape(y)
        hh, ww, ch = shape[1], shape[2], shape[3]
        top = ops.reshape(ops.stack([ya, yb], axis=3), (-1, hh, 2 * ww, ch))
        bottom = ops.reshape(ops.stack([yc, yd], axis=3), (-1, hh, 2 * ww, ch))
        return ops.reshape(ops.stack([top, bottom], axis=2), (-1, 2 * hh, 2 * ww, ch))

    def compute_output_shape(self, input_shapes):
        y, _ = input_shapes
        dbl = lambda v: None if v is None else 2 * v  # noqa: E731
        return (y[0], dbl(y[1]), dbl(y[2]), y[3])
