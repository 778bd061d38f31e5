"""TFLite export: conversions, builtin-op check, model card, Keras/TFLite parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.data.synthetic import make_shapes
from kseg.errors import KsegError
from kseg.export import assert_builtin_ops, parity, to_tflite, tflite_ops, write_model_card

SIZE = 32
CLASSES = ("background", "square", "disc")


def small_model(size=SIZE, num_classes=3, seed=0):
    """A tiny segmentation net with the zoo's building blocks (normalisation inside)."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    s = x
    x = L.MaxPooling2D(2)(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Conv2D(16, 1, activation="relu")(x)
    x = L.UpSampling2D(2, interpolation="bilinear")(x)
    x = L.Concatenate()([s, x])
    x = L.Conv2D(num_classes, 1)(x)
    return keras.Model(inp, x, name="small_seg")


@pytest.fixture(scope="module")
def trained():
    """The small model trained ~60 steps on synthetic shapes, and held-out images."""
    images, masks = make_shapes(72, size=(SIZE, SIZE), num_classes=3, seed=0)
    model = small_model()
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:64].astype("float32"), masks[:64], batch_size=8, epochs=25, verbose=0)
    return model, images[64:], masks[64:], images[:64].astype("float32")


@pytest.fixture(scope="module")
def int8_path(trained, tmp_path_factory):
    model, _, _, train_images = trained
    path = tmp_path_factory.mktemp("export") / "small_int8.tflite"
    to_tflite(model, path, "int8", representative_data=train_images,
              card={"class_names": list(CLASSES), "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                    "training_data": "synthetic shapes", "data_licence": "n/a (generated)"})
    return path


def test_int8_is_builtin_only_with_uint8_io(int8_path):
    from ai_edge_litert.interpreter import Interpreter

    ops = assert_builtin_ops(int8_path)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONCATENATION"} <= set(ops)
    # whole graph in int8: QUANTIZE ops only requantize (uint8 I/O ↔ int8), no float island
    assert "DEQUANTIZE" not in ops
    it = Interpreter(model_path=str(int8_path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    # calibrated on RGB 0..255: uint8 input is the pixel itself (scale 1, zero point 0)
    scale, zero = inp["quantization"]
    assert scale == pytest.approx(1.0, abs=1e-3) and zero == 0


def test_model_card_describes_the_model(int8_path):
    card = json.loads(int8_path.with_suffix(".json").read_text())
    assert card["class_names"] == list(CLASSES)
    assert card["colors"][1] == [255, 0, 0]
    assert card["quantization"] == "int8"
    assert card["input"]["shape"] == [1, SIZE, SIZE, 3] and card["input"]["dtype"] == "uint8"
    assert card["output"]["shape"] == [1, SIZE, SIZE, 3] and card["output"]["meaning"] == "logits"
    assert card["output"]["quantization"]["scale"] > 0
    assert card["size_bytes"] == int8_path.stat().st_size
    assert card["training_data"] == "synthetic shapes"


def test_int8_parity_with_float_model(trained, int8_path):
    model, images, masks, _ = trained
    result = parity(model, int8_path, list(images), list(masks))
    print("int8 parity", result)
    # measured: agreement 0.989, mIoU 0.473 (Keras) vs 0.477 (int8) on 8 held-out images;
    # all-background would score about 0.25, so the mIoU comparison means something
    assert result["pixel_agreement"] > 0.95
    assert result["miou_keras"] > 0.4
    assert abs(result["miou_tflite"] - result["miou_keras"]) < 0.05
    assert result["n_pixels"] == 8 * SIZE * SIZE


def test_float32_matches_keras_and_smaller_variants_shrink(trained, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, images, _, _ = trained
    f32 = to_tflite(model, tmp_path / "f32.tflite", "float32")
    f16 = to_tflite(model, tmp_path / "f16.tflite", "float16")
    # weights under 1024 elements stay float in "dynamic": size it with a wider model
    wide = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(64, 3), keras.layers.Conv2D(64, 3)])
    dyn = to_tflite(wide, tmp_path / "dyn.tflite", "dynamic")
    wide32 = to_tflite(wide, tmp_path / "wide32.tflite", "float32")
    it = Interpreter(model_path=str(f32))
    it.allocate_tensors()
    x = images[:1].astype("float32")
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.abs(y - np.asarray(model(x))).max() < 1e-4
    s32, s16, sdyn, swide = (p.stat().st_size for p in (f32, f16, dyn, wide32))
    assert s16 < s32 and sdyn < 0.4 * swide
    assert set(tflite_ops(f32)) >= {"CONV_2D", "DEPTHWISE_CONV_2D"}


def test_assert_builtin_ops_rejects_flex(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((3, 3), tf.float32)])
    def f(x):
        return tf.linalg.inv(x + tf.eye(3))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(conv.convert())
    assert "FlexMatrixInverse" in tflite_ops(path)
    with pytest.raises(KsegError, match="FlexMatrixInverse"):
        assert_builtin_ops(path)


def test_export_errors(trained, tmp_path):
    model = trained[0]
    with pytest.raises(KsegError, match="quantization='int4'"):
        to_tflite(model, tmp_path / "x.tflite", "int4")
    with pytest.raises(KsegError, match="needs representative_data"):
        to_tflite(model, tmp_path / "x.tflite", "int8")
    with pytest.raises(KsegError, match="quantization-aware model"):
        to_tflite(model, tmp_path / "x.tflite", "qat")
    free = keras.Model(*(lambda i: (i, keras.layers.Conv2D(2, 1)(i)))(keras.Input((None, None, 3))))
    with pytest.raises(KsegError, match="free input size"):
        to_tflite(free, tmp_path / "x.tflite", "float32")
    assert not (tmp_path / "x.tflite").exists()


def test_card_refuses_wrong_class_count(int8_path):
    with pytest.raises(KsegError, match="class_names has 2 names"):
        write_model_card(int8_path, class_names=["a", "b"])


def _cli(argv):
    import argparse

    from kseg.cli import export, quantize

    parser = argparse.ArgumentParser(prog="kseg")
    sub = parser.add_subparsers(dest="command")
    export.add(sub)
    quantize.add(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export_int8_writes_card_with_parity_and_latency(trained, tmp_path, capsys):
    import re

    from kseg.data.synthetic import write_shapes_dataset

    model = trained[0]
    data = tmp_path / "shapes"
    write_shapes_dataset(data, 24, size=(SIZE, SIZE), num_classes=3, seed=5)
    model.save(tmp_path / "best.keras")
    out = tmp_path / "exports" / "shapes_int8.tflite"
    assert _cli(["export", str(tmp_path / "best.keras"), "--quantization", "int8", "--data", str(data),
                 "--format", "masks", "--calibration", "16", "--parity", "4", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["class_names"][0] == "background" and len(card["class_names"]) == 3
    assert card["metrics"]["parity_n_images"] <= 4 and card["metrics"]["parity_pixel_agreement"] > 0.9
    assert card["latency_ms"]["median_ms"] > 0 and card["latency_ms"]["input"] == [SIZE, SIZE]
    assert card["training_data"] == str(data) and card["quantization"] == "int8"
    assert card["params"] == model.count_params()
    assert_builtin_ops(out)
    # progress on stderr, as plain lines (not a terminal here): calibration and parity
    err = capsys.readouterr().err
    assert "calibration: 16/16 images in " in err, err
    n = card["metrics"]["parity_n_images"]
    assert re.search(rf"^parity: {n}/{n} images in [0-9.]+ s$", err, re.M), err
    assert "\r" not in err


@pytest.mark.slow
def test_cli_quantize_then_export_qat(trained, tmp_path):
    from kseg.data.synthetic import write_shapes_dataset

    data = tmp_path / "shapes"
    write_shapes_dataset(data, 24, size=(SIZE, SIZE), num_classes=3, seed=6)
    trained[0].save(tmp_path / "best.keras")
    qat_dir = tmp_path / "qat"
    assert _cli(["quantize", str(tmp_path / "best.keras"), "--data", str(data), "--format", "masks",
                 "--epochs", "1", "--batch-size", "4", "--out", str(qat_dir)]) == 0
    assert (qat_dir / "qat_model.h5").is_file() and (qat_dir / "qat.json").is_file()
    out = tmp_path / "shapes_qat.tflite"
    assert _cli(["export", str(qat_dir), "--quantization", "qat", "--data", str(data), "--format", "masks",
                 "--parity", "4", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["quantization"] == "qat" and card["input"]["dtype"] == "uint8"
    assert card["metrics"]["parity_pixel_agreement"] > 0.9


def _config_run(trained, tmp_path, n, seed, data_extra="", extra=""):
    """A shapes dataset of ``n`` images, a config training on it (``data_extra`` lines under
    ``data:``, ``extra`` top-level lines) and the trained model saved as best.keras."""
    from kseg.data.synthetic import write_shapes_dataset

    data = tmp_path / "shapes"
    write_shapes_dataset(data, n, size=(SIZE, SIZE), num_classes=3, seed=seed)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: shapes\ndata:\n  train:\n    - {{path: {data}, format: masks}}\n"
                   f"{data_extra}  size: [{SIZE}, {SIZE}]\n{extra}")
    trained[0].save(tmp_path / "best.keras")
    return data, cfg


def test_cli_export_with_config_uses_its_held_out_split(trained, tmp_path):
    """--config: calibration from the config's training data, parity on its validation split."""
    from kseg.data.readers import open_dataset

    data, cfg = _config_run(trained, tmp_path, 20, 7, data_extra="  val_fraction: 0.2\n  batch_size: 4\n")
    out = tmp_path / "cfg_int8.tflite"
    assert _cli(["export", str(tmp_path / "best.keras"), "--quantization", "int8", "--config", str(cfg),
                 "--calibration", "8", "--parity", "10", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    _, val = open_dataset(data, "masks").split(0.2, seed=0)
    assert card["metrics"]["parity_n_images"] == len(val) == 4  # the held-out 20%, not the first files
    assert str(data) in card["training_data"] and "run.yaml" in card["training_data"]


def test_cli_quantize_without_data_is_one_line_error(trained, tmp_path):
    trained[0].save(tmp_path / "best.keras")
    with pytest.raises(KsegError, match="--config"):
        _cli(["quantize", str(tmp_path / "best.keras"), "--out", str(tmp_path / "q")])


def test_spread_indices_cover_the_set():
    from kseg.cli.export import _spread

    assert _spread(10, 3) == [0, 4, 9] or _spread(10, 3) == [0, 5, 9]
    assert _spread(3, 10) == [0, 1, 2] and _spread(0, 5) == []


def test_quantize_fine_tunes_with_the_configs_loss_and_class_weights(tmp_path):
    """kseg quantize --config fine-tunes with the training loss (median-frequency weights
    computed from the training split as kseg train does), usable by the tf_keras QAT model."""
    import tensorflow as tf

    from kseg.data.readers import open_dataset
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.cli.quantize import config_loss as _config_loss
    from kseg.losses import get_loss
    from kseg.quantize.twin import tf_keras_module
    from kseg.train import dataset_class_weights

    data = tmp_path / "shapes"
    write_shapes_dataset(data, 12, size=(SIZE, SIZE), num_classes=3, seed=8)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: shapes\ndata:\n  train:\n    - {{path: {data}, format: masks}}\n  size: [{SIZE}, {SIZE}]\n"
                   "train:\n  loss: ce\n  class_weights: median_frequency\n")
    train_set = open_dataset(data, "masks")
    fn, name = _config_loss(cfg, train_set)
    assert name == "ce with median_frequency class weights"
    weights = dataset_class_weights(train_set, 3, "median_frequency")
    assert not np.allclose(weights, weights[0])  # the shapes' classes are not balanced
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, (2, 8, 8)).astype("int32")
    y_true[0, 0, :4] = 255  # ignored pixels
    y_pred = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    want = float(get_loss("ce", class_weights=[float(w) for w in weights])(y_true, y_pred))
    assert float(fn(tf.constant(y_true), tf.constant(y_pred))) == pytest.approx(want, rel=1e-5)
    # and a tf_keras model trains with it
    tfk = tf_keras_module()
    m = tfk.Sequential([tfk.layers.Conv2D(3, 1, input_shape=(8, 8, 3))])
    m.compile(tfk.optimizers.Adam(1e-3), loss=fn)
    hist = m.fit(y_pred, y_true, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_cli_export_takes_float_ops_from_the_config(trained, tmp_path, capsys):
    """A config's export.float_ops is the int8 default of kseg export --config (said in one
    line, recorded in the card); --float-ops '' quantizes every op."""
    _, cfg = _config_run(trained, tmp_path, 12, 8, extra="export:\n  float_ops: [RESIZE_BILINEAR]\n")
    base = ["export", str(tmp_path / "best.keras"), "--quantization", "int8", "--config", str(cfg),
            "--calibration", "4", "--parity", "0"]
    assert _cli(base + ["--out", str(tmp_path / "mixed.tflite")]) == 0
    assert "int8 with RESIZE_BILINEAR in float" in capsys.readouterr().out
    card = json.loads((tmp_path / "mixed.json").read_text())
    assert card["float_ops"] == ["RESIZE_BILINEAR"] and card["input"]["dtype"] == "float32"
    assert _cli(base + ["--float-ops", "", "--out", str(tmp_path / "full.tflite")]) == 0
    card = json.loads((tmp_path / "full.json").read_text())
    assert "float_ops" not in card and card["input"]["dtype"] == "uint8"
