"""tf_keras twin: rebuilt layer by layer, same outputs as the Keras 3 original."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.errors import KsegError
from kseg.quantize.twin import assert_twin_equal, to_tf_keras, twin_max_abs_diff


def _set_bn_stats(model, seed=0):
    """Non-trivial BN moving statistics so that inference differs from the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.2, beta.shape).astype("float32"),
                rng.normal(0, 0.5, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])


def zoo_layers_model(size=32, num_classes=3):
    """A small functional model that uses every layer type the zoo uses."""
    L = keras.layers
    inp = keras.Input((size, size, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Conv2D(8, 3, strides=2, padding="valid", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    skip = x
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(name="dw_relu")(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    x = L.Add(name="add")([skip, y])
    se = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    se = L.Conv2D(8, 1, activation="sigmoid", name="se")(se)
    x = L.Multiply(name="mul")([x, se])
    p = L.MaxPooling2D(2, name="maxpool")(x)
    p = L.Conv2D(16, 3, padding="same", name="deep")(p)
    p = L.Activation("relu", name="deep_act")(p)
    a = L.AveragePooling2D(2, name="avgpool")(p)
    a = L.UpSampling2D(2, interpolation="bilinear", name="up_bilinear")(a)
    p = L.Concatenate(name="cat_deep")([p, a])
    p = L.Dropout(0.3, name="drop")(p)
    up = L.Conv2DTranspose(8, 2, strides=2, name="deconv")(p)
    x = L.Concatenate(name="cat")([x, up])
    x = L.Conv2D(num_classes, 1, name="logits_half")(x)
    x = L.UpSampling2D(2, interpolation="nearest", name="up_nearest")(x)
    model = keras.Model(inp, x, name="zoo_layers")
    _set_bn_stats(model)
    return model


def test_twin_reproduces_every_zoo_layer_type():
    model = zoo_layers_model()
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    twin = to_tf_keras(model)
    diff = assert_twin_equal(model, twin, x)
    assert diff <= 1e-5
    assert [l.name for l in twin.layers][1:] == [l.name for l in model.layers][1:]
    assert twin.count_params() == model.count_params()
    # the output is not trivially small: the 1e-5 bound is meaningful
    assert float(np.abs(np.asarray(model(x))).max()) > 0.1


def test_twin_flattens_nested_model_and_keeps_shared_weights():
    L = keras.layers
    enc_in = keras.Input((16, 16, 3))
    e = L.Rescaling(1 / 255.0, name="enc_rescale")(enc_in)
    e = L.Conv2D(4, 3, padding="same", name="enc_conv")(e)
    e = L.BatchNormalization(name="enc_bn")(e)
    encoder = keras.Model(enc_in, e, name="encoder")
    _set_bn_stats(encoder)
    inp = keras.Input((16, 16, 3))
    x = encoder(inp)
    x = L.Conv2D(2, 1, name="enc_conv")(x)  # same name as a layer inside the encoder
    model = keras.Model(inp, x)
    twin = to_tf_keras(model)
    x = np.random.default_rng(1).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    assert twin_max_abs_diff(model, twin, x) <= 1e-5
    names = [l.name for l in twin.layers]
    assert names.count("enc_conv") == 1 and "enc_conv_1" in names  # the clash is renamed
    assert len(twin.layers) == 5  # input, rescale, conv, bn, head: the encoder is flattened


def test_twin_check_detects_a_mismatch():
    model = zoo_layers_model(size=16)
    twin = to_tf_keras(model)
    w = twin.get_layer("pw").get_weights()
    twin.get_layer("pw").set_weights([w[0] + 0.5, w[1]])
    x = np.full((1, 16, 16, 3), 100.0, np.float32)
    with pytest.raises(KsegError, match="differs from the original"):
        assert_twin_equal(model, twin, x)


def test_ops_on_symbolic_tensors_are_refused_with_the_fix():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 1)(inp)
    model = keras.Model(inp, x + 1.0)
    with pytest.raises(KsegError, match="keras.layers"):
        to_tf_keras(model)


def test_importing_kseg_quantize_leaves_keras_selection_alone():
    import os
    import subprocess
    import sys

    code = (
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None);"
        "import kseg.quantize.twin as t; t.tf_keras_module();"
        "print(os.environ.get('TF_USE_LEGACY_KERAS'))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "None"


def test_max_unpooling_twin_matches():
    from kseg.models.blocks import MaxUnpooling2D

    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    f = L.Conv2D(4, 3, padding="same", name="enc")(x)
    p = L.MaxPooling2D(2)(f)
    y = L.Conv2D(4, 1, name="dec")(p)
    u = MaxUnpooling2D(name="unpool")([y, f])
    model = keras.Model(inp, L.Conv2D(2, 1)(u))
    twin = to_tf_keras(model)
    x = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    assert twin_max_abs_diff(model, twin, x) <= 1e-6
    assert type(twin.get_layer("unpool")).__name__ == "MaxUnpooling2D"


def _randomise(model, seed=0):
    """Random weights with O(1) outputs: fresh segmentation heads start at or near zero, which
    would make any twin difference look small."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, mu, var = ws
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, mu.shape), rng.uniform(0.5, 2.0, var.shape)])
        else:
            layer.set_weights([
                rng.normal(0, 1 / np.sqrt(max(1, int(np.prod(w.shape[:-1])))), w.shape).astype("float32")
                if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype("float32") for w in ws
            ])


ZOO = [
    ("unet", {"num_classes": 3, "filters": 4, "depth": 3, "input_shape": (32, 32, 3)}),
    ("unet", {"num_classes": 2, "encoder": "efficientnet_lite0", "input_shape": (64, 64, 3)}),
    ("segnet", {"num_classes": 3, "width": 0.125, "input_shape": (64, 64, 3)}),
    ("fcn8s", {"num_classes": 3, "encoder": "efficientnet_lite0", "fc_filters": 32, "input_shape": (64, 64, 3)}),
    ("pspnet", {"num_classes": 3, "filters": 16, "input_shape": (96, 96, 3)}),
    ("deeplab_v3_plus", {"num_classes": 3, "filters": 16, "output_stride": 8, "input_shape": (64, 64, 3)}),
    ("deeplab_v3_plus", {"num_classes": 3, "filters": 16, "encoder": "mobilenet_v2", "output_stride": 32,
                         "input_shape": (64, 64, 3)}),
]


@pytest.mark.parametrize("name, kwargs", ZOO, ids=[f"{n}-{k.get('encoder', 'paper')}" for n, k in ZOO])
def test_twin_of_each_zoo_model(name, kwargs):
    from kseg.models import build_model

    model = build_model(name, **kwargs)
    _randomise(model)
    x = np.random.default_rng(1).uniform(0, 255, (2, *kwargs["input_shape"])).astype("float32")
    twin = to_tf_keras(model)
    diff = assert_twin_equal(model, twin, x)
    print(f"twin {name} {kwargs.get('encoder', '')}: max abs diff {diff:.3g}, "
          f"max |y| {float(np.abs(np.asarray(model(x))).max()):.3g}")
    assert twin.count_params() == model.count_params()
