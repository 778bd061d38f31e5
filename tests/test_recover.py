"""kseg recover: a trainable Keras model back from an exported .tflite file."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kseg.cli import main
from kseg.errors import KsegError
from kseg.export import to_tflite
from kseg.recover import load_tflite_weights

SIZE = 32


def _net(extra_conv=False, dense=False):
    """Conv/depthwise + BatchNorm blocks, a biased depthwise, a skip, a classifier: kseg's building blocks."""
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    skip = x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(16, 1, use_bias=False, name="pw")(x)
    x = L.BatchNormalization(name="pw_bn")(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw_biased")(x)
    if extra_conv:
        x = L.Conv2D(16, 1, name="extra")(x)
    if dense:
        x = L.Dense(16, name="dense")(x)
    x = L.UpSampling2D(2, interpolation="bilinear")(x)
    x = L.Concatenate()([skip, x])
    x = L.Conv2D(3, 1, name="logits")(x)
    return keras.Model(inp, x, name="tiny")


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)
    img[:, : SIZE // 2] *= rng.uniform(0.2, 1.0, (n, 1, 1, 1))  # some structure and brightness spread
    return img


@pytest.fixture(scope="module")
def trained_like():
    """``_net`` as a trained model would be: each BatchNorm's moving statistics are its input's
    statistics on the images, its scale (some negative) and offset arbitrary."""
    keras.utils.set_random_seed(3)
    model, images = _net(), _images()
    rng = np.random.default_rng(1)
    for name in ("stem", "dw", "pw"):
        conv, bn = model.get_layer(name if name != "stem" else "stem_conv"), model.get_layer(f"{name}_bn")
        z = np.asarray(keras.Model(model.input, conv.output)(images)).reshape(-1, bn.gamma.shape[0])
        c = z.shape[1]
        bn.set_weights([rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c), rng.normal(0, 1, c), z.mean(0), z.var(0)])
    return model, images


def _frozen_call(model, x, training):
    saved = [v.numpy() for v in model.non_trainable_variables]
    y = np.asarray(model(x, training=training))
    for v, value in zip(model.non_trainable_variables, saved):
        v.assign(value)
    return y


def test_float32_file_gives_back_the_same_function_in_inference_and_in_training(trained_like, tmp_path):
    model, images = trained_like
    path = to_tflite(model, tmp_path / "tiny.tflite", "float32")
    keras.utils.set_random_seed(9)
    fresh = _net()
    report = load_tflite_weights(fresh, path, images, batch_size=16)
    assert (report.convolutions, report.batchnorms, report.matched_by_shape) == (5, 3, [])
    x = images[:16]
    want, got = _frozen_call(model, x, False), _frozen_call(fresh, x, False)
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    # the BatchNorms are rebuilt, not identities: in training mode (batch statistics) the recovered
    # model computes what the original computes, so fine-tuning starts from the original's behaviour
    want_t, got_t = _frozen_call(model, x, True), _frozen_call(fresh, x, True)
    np.testing.assert_allclose(got_t, want_t, atol=0.05 * np.abs(want_t).max())
    # the folded kernel is the original's scaled by gamma / sqrt(var + eps), its statistics scaled likewise
    g, _, mean, var = model.get_layer("stem_bn").get_weights()
    scale = g / np.sqrt(var + model.get_layer("stem_bn").epsilon)
    np.testing.assert_allclose(fresh.get_layer("stem_conv").get_weights()[0],
                               model.get_layer("stem_conv").get_weights()[0] * scale, rtol=1e-4, atol=1e-6)
    _, _, mean2, var2 = fresh.get_layer("stem_bn").get_weights()
    np.testing.assert_allclose(mean2, mean * scale, rtol=0.02, atol=1e-3)
    np.testing.assert_allclose(var2, var * scale ** 2, rtol=0.02)
    assert report.pixel_agreement > 0.97 and report.training_agreement > 0.9
    # measuring training mode left the moving statistics as they were
    np.testing.assert_allclose(_frozen_call(fresh, x, False), got, atol=1e-6)


def test_int8_file_agrees_with_the_original_and_bias_offsets_come_off(trained_like, tmp_path):
    model, images = trained_like
    path = to_tflite(model, tmp_path / "tiny_int8.tflite", "int8", representative_data=images)
    fresh = _net()
    offsets = np.array([0.5, -1.0, 0.25], np.float32)
    report = load_tflite_weights(fresh, path, images, bias_offsets={"logits": offsets})
    assert report.pixel_agreement > 0.95
    want = np.argmax(_frozen_call(model, images, False), -1)
    got = _frozen_call(fresh, images, False) + offsets  # the offsets were subtracted after measuring
    assert (np.argmax(got, -1) == want).mean() > 0.95

    with pytest.raises(KsegError, match="no convolution with a bias has that name"):
        load_tflite_weights(_net(), path, images, bias_offsets={"stem_conv": offsets})


def test_another_architecture_or_an_unsupported_layer_is_refused_in_one_line(trained_like, tmp_path):
    model, images = trained_like
    path = to_tflite(model, tmp_path / "tiny.tflite", "float32")
    with pytest.raises(KsegError, match="has 5 convolutions but this tiny has 6"):
        load_tflite_weights(_net(extra_conv=True), path, images)
    with pytest.raises(KsegError, match="Dense layer"):
        load_tflite_weights(_net(dense=True), path, images)
    with pytest.raises(KsegError, match="not found"):
        load_tflite_weights(_net(), tmp_path / "missing.tflite", images)


def test_cli_recovers_an_exported_run_and_it_trains_on(tmp_path, capsys):
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.models.saving import load_keras_file

    shapes = tmp_path / "shapes"
    ds = write_shapes_dataset(shapes, 16, size=(48, 64), num_classes=3, seed=1)
    (shapes / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    cfg = tmp_path / "c.yaml"
    model_yaml = ("{name: unet, kwargs: {encoder: efficientnet_lite0, pretrained: false, encoder_stages: 2, "
                  "decoder_filters: [8], decoder_block: separable, global_context: true}}")
    cfg.write_text(f"name: c\nout_dir: {tmp_path / 'runs'}\nmodel: {model_yaml}\n"
                   f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
                   "  size: [32, 32]\n  batch_size: 4\n"
                   "train: {epochs: 1, learning_rate: 0.01, verbose: 0, early_stop_patience: null}\n")
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "runs" / "c"
    tfl = tmp_path / "c.tflite"
    assert main(["export", str(run / "best.keras"), "--config", str(cfg), "--quantization", "int8",
                 "--parity", "0", "--out", str(tfl)]) == 0
    out = tmp_path / "back" / "c.keras"
    capsys.readouterr()
    assert main(["recover", str(tfl), "--config", str(cfg), "--images", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "17 convolutions loaded, 12 BatchNorms rebuilt on 8 training images" in printed
    agree = float(printed.split("agree: ")[1].split("%")[0])
    assert agree > 90.0
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    back = load_keras_file(out)
    assert np.isfinite(np.asarray(back(x))).all()

    # it is a starting point for kseg train (model.init_from)
    cfg2 = tmp_path / "c2.yaml"
    cfg2.write_text(cfg.read_text().replace("name: c\n", "name: c2\n").replace(
        "model: {name: unet,", f"model: {{init_from: '{out}', name: unet,"))
    assert main(["train", "--config", str(cfg2)]) == 0

    # no calibration in the card, a wrong suffix: one line each
    assert main(["recover", str(tfl), "--config", str(cfg), "--uncalibrate", "--out", str(out)]) == 2
    assert "records no calibration biases" in capsys.readouterr().err
    assert main(["recover", str(tfl), "--config", str(cfg), "--out", str(tmp_path / "c.h5")]) == 2
    assert "give a .keras file name" in capsys.readouterr().err


def test_a_batchnorm_that_follows_no_convolution_is_refused(tmp_path):
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    a = L.Conv2D(4, 3, padding="same", use_bias=False, name="a")(inp)
    b = L.Conv2D(4, 3, padding="same", use_bias=False, name="b")(inp)
    x = L.BatchNormalization(name="after_concat")(L.Concatenate()([a, b]))
    model = keras.Model(inp, L.Conv2D(2, 1, name="logits")(x), name="odd")
    path = to_tflite(model, tmp_path / "odd.tflite", "float32")
    with pytest.raises(KsegError, match="a has no bias and no BatchNormalization after it"):
        load_tflite_weights(model, path, _images(4))

    x = L.BatchNormalization(name="after_biased")(L.Conv2D(4, 3, padding="same", name="biased")(inp))
    model = keras.Model(inp, L.Conv2D(2, 1, name="logits")(x), name="odd2")
    path = to_tflite(model, tmp_path / "odd2.tflite", "float32")
    with pytest.raises(KsegError, match="BatchNormalization after_biased does not follow a convolution without bias"):
        load_tflite_weights(model, path, _images(4))
