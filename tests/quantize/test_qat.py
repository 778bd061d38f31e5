"""Quantization-aware training on the tf_keras twin, and its int8 TFLite conversion."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.data.synthetic import make_shapes
from kseg.errors import KsegError

SIZE = 32


def small_model(size=SIZE, num_classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    s = x
    se = L.GlobalAveragePooling2D(keepdims=True)(x)
    se = L.Conv2D(16, 1, activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    x = L.MaxPooling2D(2)(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Conv2D(16, 1, activation="relu")(x)
    x = L.UpSampling2D(2, interpolation="bilinear")(x)
    x = L.Concatenate()([s, x])
    x = L.Conv2D(num_classes, 1)(x)
    return keras.Model(inp, x, name="small_seg")


def _dataset(images, masks, batch=8):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images.astype("float32"), masks.astype("int32"))).batch(batch)


def test_sparse_ce_ignore_hand_computed():
    from kseg.quantize.qat import pixel_accuracy_ignore, sparse_ce_ignore

    logits = np.zeros((1, 1, 3, 2), np.float32)
    logits[..., 1] = math.log(3.0)  # p(class 1) = 3/4 everywhere
    labels = np.array([[[1, 0, 255]]], np.int32)
    expected = (-math.log(0.75) - math.log(0.25)) / 2  # the ignored pixel does not count
    assert float(sparse_ce_ignore(labels, logits)) == pytest.approx(expected, rel=1e-6)
    assert float(pixel_accuracy_ignore(labels, logits)) == pytest.approx(0.5)


def test_quantize_aware_wraps_every_layer_and_keeps_env():
    from kseg.quantize.qat import quantize_aware

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    model = small_model()
    qat = quantize_aware(model)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    configs = {l.layer.name: type(l.quantize_config).__name__ for l in qat.layers if hasattr(l, "quantize_config")}
    by_type = {type(l).__name__: l.name for l in model.layers}
    # layers outside tfmot's registry get output fake-quant; conv+BN is folded by tfmot
    assert configs[by_type["Rescaling"]] == "Default8BitConvQuantizeConfig"  # as a 1x1 depthwise conv
    assert configs[by_type["Multiply"]] == "Default8BitOutputQuantizeConfig"
    assert configs[model.layers[2].name] == "Default8BitConvQuantizeConfig"  # the first Conv2D
    assert len(configs) == len(model.layers) - 1  # every layer but the input


@pytest.fixture(scope="module")
def qat_tflite(tmp_path_factory):
    """Float model trained briefly, QAT fine-tuned 2 epochs, converted to uint8 TFLite."""
    from kseg.export import to_tflite
    from kseg.quantize.qat import load_qat_model, qat_fine_tune

    images, masks = make_shapes(72, size=(SIZE, SIZE), num_classes=3, seed=0)
    model = small_model()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:64].astype("float32"), masks[:64], batch_size=8, epochs=15, verbose=0)
    out = tmp_path_factory.mktemp("qat")
    qat = qat_fine_tune(model, _dataset(images[:64], masks[:64]), _dataset(images[64:], masks[64:]),
                        epochs=2, lr=1e-4, out_dir=out)
    reloaded = load_qat_model(out)
    path = to_tflite(reloaded, out / "small_qat.tflite", quantization="qat",
                     card={"class_names": ["background", "square", "disc"]})
    return model, qat, path, images[64:], masks[64:], out


def test_qat_fine_tune_saves_history_and_model(qat_tflite):
    import json

    _, qat, _, _, _, out = qat_tflite
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert "val_pixel_accuracy_ignore" in history
    assert (out / "qat_model.h5").is_file()


def test_qat_tflite_is_int8_builtin_and_follows_the_models(qat_tflite):
    from ai_edge_litert.interpreter import Interpreter

    from kseg.export import assert_builtin_ops, parity
    from kseg.runtime import Segmenter

    model, qat, path, images, masks, _ = qat_tflite
    ops = assert_builtin_ops(path)
    assert "CONV_2D" in ops and "MUL" in ops
    it = Interpreter(model_path=str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    # the QAT model's learned input range is about 0..255: one uint8 step ≈ one pixel level
    assert 0.9 < inp["quantization"][0] < 1.1
    # the converted model follows the QAT model it came from ...
    seg = Segmenter(path)
    agree = []
    for image in images:
        ref = np.asarray(qat(image[None].astype("float32"), training=False))[0].argmax(-1)
        agree.append(np.mean(ref == seg.segment(image).category_mask))
    print("qat tflite vs qat model agreement", float(np.mean(agree)))
    assert np.mean(agree) > 0.99  # measured 0.9999 (Rescaling as a 1x1 depthwise conv)
    # ... and the float model it was fine-tuned from
    result = parity(model, path, list(images), list(masks))
    print("qat tflite vs float parity", result)
    assert result["pixel_agreement"] > 0.95  # measured 0.993


def test_qat_conversion_refuses_a_keras3_model(tmp_path):
    from kseg.export import to_tflite

    with pytest.raises(KsegError, match="quantization-aware model"):
        to_tflite(small_model(), tmp_path / "x.tflite", quantization="qat")


def test_load_qat_model_missing(tmp_path):
    from kseg.quantize.qat import load_qat_model

    with pytest.raises(KsegError, match="run kseg quantize first"):
        load_qat_model(tmp_path)


def test_max_unpooling_qat_converts_and_follows(tmp_path, capsys, monkeypatch):
    """SegNet's custom unpooling through QAT to uint8 TFLite: builtin ops, follows the QAT model.
    Its progress in a log: range calibration and each step as plain lines, tf_keras' line per epoch."""
    from kseg.export import assert_builtin_ops, to_tflite
    from kseg.models.blocks import MaxUnpooling2D
    from kseg.quantize.qat import qat_fine_tune
    from kseg.runtime import Segmenter

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    f = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))
    p = L.MaxPooling2D(2)(f)
    y = L.ReLU()(L.Conv2D(8, 3, padding="same")(p))
    u = MaxUnpooling2D()([y, f])
    model = keras.Model(inp, L.Conv2D(3, 1)(u))
    images, masks = make_shapes(24, size=(16, 16), num_classes=3, seed=1)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images.astype("float32"), masks, batch_size=8, epochs=3, verbose=0)
    monkeypatch.setenv("KSEG_PROGRESS_EVERY", "0")  # a line at every step (30 s by default)
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    capsys.readouterr()
    qat = qat_fine_tune(model, _dataset(images, masks), epochs=2, lr=1e-4, verbose="auto")
    out, err = capsys.readouterr()
    assert "QAT range calibration: 3/3 batches in " in err  # 24 images in batches of 8
    assert "\r" not in out + err and "\b" not in out + err
    lines = out.splitlines()
    assert [ln.split(" (")[0] for ln in lines if ln.startswith("epoch ")] == [
        "epoch 1/2: 1/3 steps", "epoch 1/2: 2/3 steps", "epoch 2/2: 1/3 steps", "epoch 2/2: 2/3 steps"]
    assert sum(ln.startswith("3/3 - ") and "loss" in ln for ln in lines) == 2, out  # tf_keras, verbose=2
    path = to_tflite(qat, tmp_path / "unpool_qat.tflite", quantization="qat")
    assert_builtin_ops(path)
    seg = Segmenter(path)
    a = np.asarray(qat(images.astype("float32"), training=False))
    b = np.stack([seg.logits(i) for i in images])
    agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    print("unpool qat tflite vs qat", agree, "max logit diff", float(np.abs(a - b).max()))
    assert agree > 0.98


def test_calibrate_ranges_start_from_float_ranges():
    from kseg.quantize.qat import quantize_aware

    images, _ = make_shapes(8, size=(SIZE, SIZE), num_classes=3, seed=3)
    images = images.astype("float32")
    model = small_model()
    qat = quantize_aware(model, calibration_data=images)

    def rng(layer_type, kind):
        name = next(l.name for l in model.layers if type(l).__name__ == layer_type)
        wrapper = next(l for l in qat.layers if getattr(getattr(l, "layer", None), "name", None) == name)
        vs = {w.name.split("/")[-1].split(":")[0]: float(w.numpy()) for w in wrapper.weights if w.shape.rank == 0}
        return vs[f"{kind}_min"], vs[f"{kind}_max"]

    # Rescaling(1/127.5, -1) of this batch: per-batch min/max of x/127.5 - 1, zero included
    lo, hi = rng("Rescaling", "post_activation")
    assert lo == pytest.approx(images.min() / 127.5 - 1, abs=1e-4)
    assert hi == pytest.approx(images.max() / 127.5 - 1, abs=1e-4)
    # ReLU output: lower bound exactly 0, upper bound the float model's max (not tfmot's 6)
    relu = keras.Model(model.input, next(l for l in model.layers if type(l).__name__ == "ReLU").output)
    lo, hi = rng("ReLU", "output")
    assert lo == 0.0 and hi == pytest.approx(float(np.asarray(relu(images)).max()), rel=1e-4)


def test_qat_model_follows_float_model_before_any_fine_tuning():
    """Weight fake-quant ranges are set from the weights at once (tfmot leaves them at ±6 until a
    training step, which quantized the 1/127.5 input-scaling kernel to zeros)."""
    from kseg.quantize.qat import quantize_aware

    images, _ = make_shapes(16, size=(SIZE, SIZE), num_classes=3, seed=3)
    x = images.astype("float32")
    model = small_model()
    qat = quantize_aware(model, calibration_data=x)
    rescale = next(l for l in qat.layers if getattr(l, "layer", None) is not None and l.layer.name == model.layers[1].name)
    kmin = [v for v in rescale.weights if v.name.endswith("kernel_min:0")][0].numpy()
    kmax = [v for v in rescale.weights if v.name.endswith("kernel_max:0")][0].numpy()
    np.testing.assert_allclose(kmax, 1 / 127.5, rtol=1e-5)  # symmetric: [-max|w|, max|w|]
    np.testing.assert_allclose(kmin, -1 / 127.5, rtol=1e-5)
    a = model.predict(x, verbose=0)
    b = np.asarray(qat.predict(x, verbose=0))
    rel = np.abs(a - b).mean() / np.abs(a).mean()
    assert rel < 0.1, rel  # 8-bit fake quantization only


def test_concatenation_keeps_its_input_order():
    """tfmot's pattern matching looked a layer's inputs up in model-config order, so the QAT
    model of DeepLab v3+ concatenated ASPP's image-pooling branch first instead of last (58%
    argmax agreement with the float model on CamVid); kseg matches them in input order."""
    from kseg.models.blocks import aspp
    from kseg.quantize.qat import quantize_aware

    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    y = aspp(x, filters=4, rates=(1, 2, 3), dropout=0)
    model = keras.Model(inp, L.Conv2D(3, 1, name="head")(y))
    images, _ = make_shapes(8, size=(SIZE, SIZE), num_classes=3, seed=2)
    x = images.astype("float32")
    qat = quantize_aware(model, calibration_data=x)
    cat = next(l for l in qat.layers if getattr(l, "layer", l).name == "aspp_concat")
    node = cat._inbound_nodes[0]
    assert [getattr(l, "layer", l).name for l in node.inbound_layers] == [
        "aspp_b0_relu", "aspp_b1_relu", "aspp_b2_relu", "aspp_b3_relu", "aspp_pool_up"]
    a = np.asarray(model.predict(x, verbose=0))
    b = np.asarray(qat.predict(x, verbose=0))
    assert np.abs(a - b).mean() / np.abs(a).mean() < 0.1  # 8-bit fake quantization only


@pytest.mark.slow
def test_squeeze_excite_unet_qat_converts_and_follows(tmp_path):
    """UNet with global_context (GlobalAveragePooling2D → 1×1 → sigmoid → Multiply, the portrait
    model's gating) through QAT to uint8 TFLite: builtin ops only, follows the QAT model."""
    from kseg.export import assert_builtin_ops, to_tflite
    from kseg.models import UNet
    from kseg.quantize.qat import qat_fine_tune
    from kseg.runtime import Segmenter

    keras.utils.set_random_seed(0)
    model = UNet(num_classes=3, input_shape=(32, 32, 3), encoder="efficientnet_lite0", encoder_stages=5,
                 decoder_filters=(8, 8, 8), decoder_block="separable", global_context=True)
    images, masks = make_shapes(24, size=(32, 32), num_classes=3, seed=1)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images.astype("float32"), masks, batch_size=8, epochs=2, verbose=0)
    qat = qat_fine_tune(model, _dataset(images, masks), epochs=1, lr=1e-4)
    path = to_tflite(qat, tmp_path / "se_qat.tflite", quantization="qat")
    assert {"MEAN", "LOGISTIC", "MUL"} <= set(assert_builtin_ops(path))
    seg = Segmenter(path)
    a = np.asarray(qat(images.astype("float32"), training=False))
    b = np.stack([seg.logits(i) for i in images])
    agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    assert agree > 0.95, agree
