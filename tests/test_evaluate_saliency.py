"""kseg evaluate scores binary models as salient-object detectors too (MAE, S, E, F-beta).

A tiny model with a known output (foreground logit = (R - 128) / 16 of each pixel) runs on four
real portraits at their own size, so the expected maps are computed here in NumPy; a sigmoid
model (one channel), a two-class softmax model and their float ``.tflite`` exports must agree
with that computation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kseg.evaluate import class_probabilities, foreground_index, saliency_maps

H, W = 320, 240  # the portraits' size
KEYS = ("mae", "s_measure", "max_e_measure", "mean_e_measure", "adaptive_e_measure", "max_f_beta",
        "mean_f_beta", "adaptive_f_beta", "weighted_f_beta")


def test_class_probabilities_sigmoid_and_softmax():
    one = class_probabilities(np.array([[[0.0], [np.log(3.0)], [-1e4]]], np.float32))
    np.testing.assert_allclose(one[0], [[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]], atol=1e-6)
    two = class_probabilities(np.array([[[0.0, np.log(3.0)]]], np.float32))
    np.testing.assert_allclose(two[0, 0], [0.25, 0.75], atol=1e-6)


def test_foreground_index_and_maps():
    assert foreground_index(("background", "person")) == 1
    assert foreground_index(("person", "background")) == 0
    assert foreground_index(("bg", "pet")) == 1
    assert foreground_index(("a", "b", "c")) is None
    probs = np.array([[[0.0, 1.0], [0.6, 0.4], [1.0, 0.0]]], np.float32)
    pred, gt = saliency_maps(probs, np.array([[1, 0, 255]], np.uint8), fg=1)
    assert pred.tolist() == [[255, 102, 0]]
    assert gt.tolist() == [[255, 0, 0]]  # ignore (255) counts as background


def _model(channels, fixed):
    import keras

    inp = keras.Input((H, W, 3) if fixed else (None, None, 3))
    red = keras.layers.Conv2D(1, 1, name="red")(inp)  # (R - 128) / 16
    if channels == 1:
        out = red
    else:
        out = keras.layers.Concatenate()([keras.layers.Lambda(lambda t: t * 0.0)(red), red])
    model = keras.Model(inp, out)
    model.get_layer("red").set_weights([np.array([1 / 16, 0, 0], np.float32).reshape(1, 1, 3, 1),
                                        np.array([-8.0], np.float32)])
    return model


def _expected(ds, n):
    from kseg.metrics import SaliencyMetrics

    sod = SaliencyMetrics()
    inter = union = 0
    for i in range(n):
        image, mask = ds.load(i)
        p = 1 / (1 + np.exp(-(image[..., 0].astype(np.float64) - 128) / 16))
        sod.update(np.rint(p * 255).astype(np.uint8), np.where(mask == 1, 255, 0).astype(np.uint8))
        pred, valid = p > 0.5, mask != 255
        inter += int((pred & (mask == 1) & valid).sum())
        union += int(((pred | (mask == 1)) & valid).sum())
    return sod.result(), inter / union


def _root():
    from kseg.paths import shared_data_dir

    return shared_data_dir() / "portraits"


@pytest.fixture(scope="module")
def portraits():
    from kseg.data.readers import open_dataset

    if not _root().is_dir():
        pytest.skip(f"shared data not found at {_root()}")
    return open_dataset(_root(), "masks")


@pytest.mark.shared_data
def test_evaluate_reports_saliency_of_sigmoid_and_softmax_models(portraits):
    from kseg.evaluate import evaluate

    expected, person_iou = _expected(portraits, 4)
    for channels in (1, 2):
        report = evaluate(_model(channels, fixed=False), portraits, size=(H, W), limit=4)
        assert report.foreground == "person"
        for k in KEYS:
            assert report.saliency[k] == pytest.approx(expected[k], abs=2e-4), (channels, k)
        assert report.scores["per_class_iou"][1] == pytest.approx(person_iou, abs=1e-3)
        d = report.to_dict()
        assert d["saliency"]["foreground_class"] == "person" and set(KEYS) <= set(d["saliency"])
        assert "salient object (person): MAE" in report.format_text()


@pytest.mark.shared_data
def test_cli_evaluate_tflite_reports_saliency(portraits, tmp_path, capsys):
    import tensorflow as tf

    from kseg.cli import main

    expected, _ = _expected(portraits, 4)
    for channels in (1, 2):
        conv = tf.lite.TFLiteConverter.from_keras_model(_model(channels, fixed=True))
        path = tmp_path / f"sal{channels}.tflite"
        path.write_bytes(conv.convert())
        capsys.readouterr()  # the converter's own output
        assert main(["evaluate", str(path), str(_root()), "--format", "masks", "--limit", "4", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["num_images"] == 4 and d["saliency"]["foreground_class"] == "person"
        for k in KEYS:
            assert d["saliency"][k] == pytest.approx(expected[k], abs=2e-3), (channels, k)
        assert d["per_class_iou"]["person"] > 0


@pytest.mark.shared_data
def test_multiclass_dataset_has_no_saliency(tmp_path):
    from kseg.data.readers import open_dataset
    from kseg.evaluate import evaluate
    from kseg.paths import shared_data_dir

    import keras

    ds = open_dataset(shared_data_dir() / "camvid", "camvid", split="val")
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(11, 1)(inp))
    report = evaluate(model, ds, size=(64, 96), limit=2)
    assert report.saliency is None and "saliency" not in report.to_dict()
    assert "salient" not in report.format_text()
