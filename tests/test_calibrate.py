"""kseg calibrate: per-class logit biases fitted for mIoU and folded into the classifier."""

import json

import numpy as np
import pytest

from kseg.calibrate import apply_class_biases, classifier_layer, dataset_miou, fit_class_biases
from kseg.cli import main
from kseg.data.synthetic import write_shapes_dataset
from kseg.errors import KsegError


def _over_predicting(n=20000, shift=1.5, seed=0):
    """Logits of three classes where class 2 gets ``shift`` too much: many class-0/1 pixels go to 2."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    logits = 2.0 * np.eye(3)[labels] + rng.normal(0, 1.0, (n, 3))
    logits[:, 2] += shift
    return logits.astype(np.float32), labels


def test_fit_takes_back_the_shift_a_class_was_given_and_raises_miou():
    plain = fit_class_biases(*_over_predicting(shift=0.0))
    logits, labels = _over_predicting(shift=1.5)
    fit = fit_class_biases(logits, labels)
    assert fit.biases[0] == 0.0 == plain.biases[0]  # the background stays fixed: only differences matter
    # the objective sees logits + biases, so 1.5 more on class 2 is 1.5 less in its bias (to the grid's step)
    assert fit.biases[2] - plain.biases[2] == pytest.approx(-1.5, abs=0.3)
    assert fit.biases[1] == pytest.approx(plain.biases[1], abs=0.3)
    assert fit.miou_after > fit.miou_before + 0.05
    assert fit.iou_after[2] > fit.iou_before[2]
    # mIoU is not accuracy: even the unshifted argmax gains from a smaller bias on the rare class
    assert plain.miou_after >= plain.miou_before and plain.biases[2] < 0


def test_balanced_fit_serves_the_small_source_the_pooled_fit_drowns():
    big_l, big_y = _over_predicting(n=40000, shift=0.0, seed=1)  # a large, well calibrated source
    small_l, small_y = _over_predicting(n=2000, shift=2.0, seed=2)  # a small one that over-predicts class 2
    logits, labels = np.concatenate([big_l, small_l]), np.concatenate([big_y, small_y])
    groups = np.repeat([0, 1], [len(big_y), len(small_y)])
    pooled = fit_class_biases(logits, labels)
    balanced = fit_class_biases(logits, labels, groups=groups)
    # one group is the pooled objective
    same = fit_class_biases(logits, labels, groups=np.zeros(len(labels), int))
    np.testing.assert_array_equal(same.biases, pooled.biases)
    assert same.miou_after == pytest.approx(pooled.miou_after)

    def per_source(b):
        return dataset_miou(big_l, big_y, b), dataset_miou(small_l, small_y, b)

    (pb, ps), (bb, bs) = per_source(pooled.biases), per_source(balanced.biases)
    assert balanced.miou_after == pytest.approx((bb + bs) / 2)  # the objective is the mean over sources
    assert bs > ps + 0.01 and (bb + bs) / 2 > (pb + ps) / 2  # the small source gains, the mean too
    assert balanced.biases[2] < pooled.biases[2]  # by taking back more of class 2's shift
    with pytest.raises(KsegError, match="groups must be"):
        fit_class_biases(logits, labels, groups=groups[:10])


def test_fit_refuses_labels_out_of_range():
    logits, labels = _over_predicting(n=100)
    labels[0] = 255
    with pytest.raises(KsegError, match="class ids 0..2"):
        fit_class_biases(logits, labels)


def test_apply_adds_exactly_the_biases_to_the_logits():
    from kseg.models.unet import UNet

    model = UNet(num_classes=3, input_shape=(32, 32, 3), filters=4, depth=2)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    before = np.asarray(model(x))
    apply_class_biases(model, [0.0, -1.0, 0.5])
    after = np.asarray(model(x))
    np.testing.assert_allclose(after - before, np.broadcast_to([0.0, -1.0, 0.5], before.shape), atol=1e-5)
    with pytest.raises(KsegError, match="2 biases given for a model with 3 classes"):
        apply_class_biases(model, [0.0, 1.0])


def test_a_model_without_a_classifier_convolution_is_one_clear_error():
    import keras

    x = inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(2, 1, use_bias=False, name="logits")(x)
    with pytest.raises(KsegError, match="no classifier convolution with a bias"):
        classifier_layer(keras.Model(inputs, outputs))


def _trained_run(tmp_path, sources=1, images=16):
    """A one-epoch U-Net run on ``sources`` synthetic shapes datasets: ``(config, run folder)``."""
    entries = []
    for k in range(sources):
        shapes = tmp_path / f"shapes{k}"
        ds = write_shapes_dataset(shapes, images, size=(48, 64), num_classes=3, seed=k + 1)
        (shapes / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
        entries.append(f"{{path: '{shapes}', format: masks}}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\nout_dir: {tmp_path / 'runs'}\nmodel: {{name: unet, kwargs: {{filters: 4, depth: 2}}}}\n"
                   f"data:\n  train: [{', '.join(entries)}]\n  val_fraction: 0.25\n"
                   "  size: [32, 32]\n  batch_size: 4\n"
                   "train: {epochs: 1, learning_rate: 0.01, verbose: 0, early_stop_patience: null}\n")
    assert main(["train", "--config", str(cfg)]) == 0
    return cfg, tmp_path / "runs" / "c"


def test_calibrate_command_writes_a_model_with_the_biases(tmp_path, capsys):
    cfg, run = _trained_run(tmp_path)
    out = tmp_path / "cal" / "model.keras"
    assert main(["calibrate", str(run / "best.keras"), "--config", str(cfg), "--out", str(out),
                 "--images", "8", "--pixels", "300"]) == 0
    printed = capsys.readouterr().out
    assert "fitted on" in printed and "mIoU on those pixels" in printed
    info = json.loads(out.with_suffix(".calibration.json").read_text())
    assert info["images"] == 8 and len(info["biases"]) == 3 and info["biases"][0] == 0.0
    assert info["miou_after"] >= info["miou_before"]
    assert (out.parent / "classes.json").is_file()  # kseg export finds the class names beside it
    assert info["balance"] == "pixels"

    from kseg.models.saving import load_keras_file

    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    old, new = load_keras_file(run / "best.keras"), load_keras_file(out)
    np.testing.assert_allclose(np.asarray(new(x)) - np.asarray(old(x)),
                               np.broadcast_to(info["biases"], (1, 32, 32, 3)), atol=1e-4)

    # the model itself as --out, and a non-.keras name, are refused in one line
    assert main(["calibrate", str(run / "best.keras"), "--config", str(cfg), "--out", str(run / "best.keras")]) == 2
    assert "is the model itself" in capsys.readouterr().err
    assert main(["calibrate", str(run / "best.keras"), "--config", str(cfg), "--out", str(tmp_path / "m.h5")]) == 2
    assert "give a .keras file name" in capsys.readouterr().err


def test_calibrate_balanced_over_the_configs_sources(tmp_path, capsys):
    cfg, run = _trained_run(tmp_path, sources=2, images=12)
    out = tmp_path / "cal" / "model.keras"
    assert main(["calibrate", str(run / "best.keras"), "--config", str(cfg), "--out", str(out),
                 "--images", "12", "--pixels", "200", "--balance", "sources"]) == 0
    printed = capsys.readouterr().out
    assert "mean over sources of their mIoU" in printed
    assert printed.count(" -> ") == 3  # each source's mIoU before and after, and their mean
    info = json.loads(out.with_suffix(".calibration.json").read_text())
    assert info["balance"] == "sources" and info["images"] == 12  # 6 of each source's 9 training images
    assert info["miou_after"] >= info["miou_before"]
