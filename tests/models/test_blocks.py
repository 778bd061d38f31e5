"""Decoder blocks: values worked out by hand on tiny inputs, parameter counts by arithmetic."""

import keras
import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models.blocks import BilinearUpsampleInitializer, MaxUnpooling2D, aspp, conv_bn_relu, pyramid_pooling, upsample


def _model(inputs, outputs):
    return keras.Model(inputs, outputs)


def test_bilinear_initializer_kernel_and_interpolation():
    k = np.asarray(BilinearUpsampleInitializer()((4, 4, 2, 2)))
    ramp = np.array([0.25, 0.75, 0.75, 0.25])  # factor 2: 1 - |i - 1.5| / 2
    np.testing.assert_allclose(k[:, :, 0, 0], np.outer(ramp, ramp))
    np.testing.assert_allclose(k[:, :, 1, 1], np.outer(ramp, ramp))
    assert not k[:, :, 0, 1].any() and not k[:, :, 1, 0].any()  # each channel upsamples itself
    # a 2x transposed convolution with it interpolates a ramp 0, 1, 2, 3 linearly with half-pixel
    # centres: output j samples input position (j + 0.5) / 2 - 0.5
    inputs = keras.Input((1, 4, 1))
    layer = keras.layers.Conv2DTranspose(1, (1, 4), strides=(1, 2), padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampleInitializer())
    model = _model(inputs, layer(inputs))
    layer.set_weights([ramp.reshape(1, 4, 1, 1)])
    out = np.asarray(model(np.arange(4, dtype="float32").reshape(1, 1, 4, 1)))[0, 0, :, 0]
    want = (np.arange(8) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(out[1:7], want[1:7], atol=1e-6)  # interior; the ends see zero padding


def test_upsample_nearest_and_identity():
    inputs = keras.Input((2, 2, 1))
    assert upsample(inputs, 1, "same") is inputs
    model = _model(inputs, upsample(inputs, (2, 3), "up", interpolation="nearest"))
    x = np.array([[1, 2], [3, 4]], "float32").reshape(1, 2, 2, 1)
    want = np.repeat(np.repeat(x[0, :, :, 0], 2, axis=0), 3, axis=1)
    np.testing.assert_array_equal(np.asarray(model(x))[0, :, :, 0], want)


def test_conv_bn_relu6_clips_at_six():
    inputs = keras.Input((1, 3, 1))
    model = _model(inputs, conv_bn_relu(inputs, 1, 1, name="c", relu6=True))
    model.get_layer("c_conv").set_weights([np.full((1, 1, 1, 1), 10.0, "float32")])
    x = np.array([-1.0, 0.3, 2.0], "float32").reshape(1, 1, 3, 1)
    bn_eps = model.get_layer("c_bn").epsilon  # inference BN: x / sqrt(1 + eps)
    want = np.clip(10 * x / np.sqrt(1 + bn_eps), 0, 6)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-6)


def test_pyramid_pooling_bin_means_and_parameters():
    h = w = 6
    inputs = keras.Input((h, w, 4))
    out = pyramid_pooling(inputs, bins=(1, 2, 3), filters=5, name="ppm")
    assert tuple(out.shape[1:]) == (6, 6, 4 + 3 * 5)  # features + one 5-channel map per bin
    model = _model(inputs, [out] + [keras.Model(inputs, out).get_layer(f"ppm_pool{b}").output for b in (1, 2, 3)])
    x = np.arange(h * w * 4, dtype="float32").reshape(1, h, w, 4)
    y, p1, p2, p3 = (np.asarray(t) for t in model(x))
    np.testing.assert_allclose(p1[0, 0, 0], x[0].mean(axis=(0, 1)))
    # bins of 2: 3x3 blocks; the top-right block of channel 0
    np.testing.assert_allclose(p2[0, 0, 1, 0], x[0, :3, 3:, 0].mean())
    np.testing.assert_allclose(p3[0, 2, 1, 0], x[0, 4:, 2:4, 0].mean())
    np.testing.assert_array_equal(y[..., :4], x)  # the features pass through
    # the bin-1 branch is constant over the map (pooled to 1x1, then spread)
    np.testing.assert_allclose(y[0, :, :, 4:9], np.broadcast_to(y[0, :1, :1, 4:9], (6, 6, 5)))
    # per bin: 1x1 conv 4 -> 5 without bias, BN with 4 x 5 values
    assert model.count_params() == 3 * (4 * 5 + 4 * 5)


def test_pyramid_pooling_needs_divisible_fixed_sizes():
    with pytest.raises(KsegError, match=r"feature map \(8×8\) divisible by the bins \[1, 2, 3, 6\]; \[3, 6\]"):
        pyramid_pooling(keras.Input((8, 8, 4)))
    with pytest.raises(KsegError, match="fixed input size"):
        pyramid_pooling(keras.Input((None, None, 4)))


def test_aspp_parameters_rates_and_image_pooling():
    c, f = 6, 4
    inputs = keras.Input((8, 8, c))
    out = aspp(inputs, filters=f, rates=(2, 3, 4), name="aspp")
    model = _model(inputs, out)
    assert tuple(out.shape[1:]) == (8, 8, f)
    bn = 4 * f
    want = (c * f + bn) + 3 * (9 * c * f + bn) + (c * f + bn) + (5 * f * f + bn)  # 1x1, 3 atrous, pool, proj
    assert model.count_params() == want
    assert [model.get_layer(f"aspp_b{i}_conv").dilation_rate for i in (1, 2, 3)] == [(2, 2), (3, 3), (4, 4)]
    pool = keras.Model(inputs, model.get_layer("aspp_pool_up").output)
    y = np.asarray(pool(np.random.default_rng(0).normal(size=(1, 8, 8, c)).astype("float32")))
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :1], y.shape))  # image-level branch


def test_max_unpooling_by_hand():
    # windows: [[1, 3], [3, 2]] -> first max at (0, 1); [[5, 5], [5, 5]] -> (0, 0) like argmax
    x = np.array([[1, 3, 5, 5], [3, 2, 5, 5]], "float32").reshape(1, 2, 4, 1)
    y = np.array([[7, 9]], "float32").reshape(1, 1, 2, 1)
    got = np.asarray(MaxUnpooling2D()([y, x]))[0, :, :, 0]
    np.testing.assert_array_equal(got, [[0, 7, 9, 0], [0, 0, 0, 0]])
    assert MaxUnpooling2D().compute_output_shape([(None, 3, 5, 8), (None, 6, 10, 8)]) == (None, 6, 10, 8)
