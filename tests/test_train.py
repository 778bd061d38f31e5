"""kseg train / evaluate / predict end to end on tiny synthetic data."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kseg.cli import main

MODEL = "model: {name: unet, kwargs: {filters: 4, depth: 2}}\n"


def _config(tmp_path, shapes, epochs, name="t", model=MODEL, extra=""):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        f"name: {name}\nout_dir: {tmp_path / 'runs'}\n{model}"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
        f"  size: [32, 32]\n  batch_size: 4\n"
        f"train: {{epochs: {epochs}, learning_rate: 0.01, verbose: 0, early_stop_patience: null}}\n{extra}"
    )
    return cfg


def _epochs(run):
    return [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]


def test_train_writes_run_and_resumes(tmp_path, shapes):
    cfg = _config(tmp_path, shapes, epochs=1)
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "runs" / "t"
    for f in ("best.keras", "last.keras", "history.csv", "curves.png", "config.yaml", "classes.json"):
        assert (run / f).is_file(), f
    assert _epochs(run) == [0]
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert np.isfinite(float(rows[0]["loss"])) and 0.0 <= float(rows[0]["val_mean_iou"]) <= 1.0
    # same run, more epochs: resumes at epoch 1 instead of starting over
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=2"]) == 0
    assert _epochs(run) == [0, 1]


def test_train_refuses_another_architecture_in_the_same_run(tmp_path, shapes, capsys):
    cfg = _config(tmp_path, shapes, epochs=1, name="arch")
    assert main(["train", "--config", str(cfg)]) == 0
    other = _config(tmp_path, shapes, epochs=2, name="arch", model="model: {name: unet, kwargs: {filters: 8, depth: 2}}\n")
    assert main(["train", "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint of model unet" in err and "Traceback" not in err


def test_train_progress_in_a_log_is_lines_not_a_bar(tmp_path, shapes, capsys, monkeypatch):
    """Not a terminal (a log): Keras' line per epoch, kseg's lines within the epoch, no bar."""
    monkeypatch.setenv("KSEG_PROGRESS_EVERY", "0")  # a line at every step (30 s by default)
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    cfg = _config(tmp_path, shapes, epochs=2, name="log")
    assert main(["train", "--config", str(cfg), "--set", "train.verbose=auto", "--set", "train.steps_per_epoch=3"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\b" not in out
    lines = out.splitlines()
    for epoch in (1, 2):
        assert [ln.split(",")[0] for ln in lines if ln.startswith(f"epoch {epoch}/2:")] == [
            f"epoch {epoch}/2: {s}/3 steps (" + f"{100 * s / 3:.0f}%)" for s in (1, 2)]  # then Keras' own line
    keras_lines = [ln for ln in lines if "val_mean_iou" in ln]
    assert len(keras_lines) == 2 and all(ln.startswith("3/3 - ") for ln in keras_lines), out
    logs = tmp_path / "runs" / "log" / "logs"  # TensorBoard's, as the last line says
    assert lines[-1] == f"curves in TensorBoard: tensorboard --logdir {logs}"
    assert list((logs / "train").glob("events.out.tfevents.*")) and list((logs / "validation").glob("events.out.tfevents.*"))


def test_train_on_one_pass_per_epoch_knows_the_length_after_the_first_and_warns_nothing(
        tmp_path, shapes, capsys, monkeypatch):
    """Without steps_per_epoch the pipeline's length is unknown to Keras until its first pass ends:
    no "ran out of data; interrupting training" warning then (nothing is interrupted), and the
    second epoch's lines have a total and an eta."""
    import warnings

    monkeypatch.setenv("KSEG_PROGRESS_EVERY", "0")
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    cfg = _config(tmp_path, shapes, epochs=2, name="pass")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--config", str(cfg), "--set", "train.verbose=auto"]) == 0
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "ran out of data" in m or "shuffle=True" in m], said
    lines = capsys.readouterr().out.splitlines()
    first = [ln.split(",")[0] for ln in lines if ln.startswith("epoch 1/2:")]
    second = [ln.split(",")[0] for ln in lines if ln.startswith("epoch 2/2:")]
    n = 18 // 4  # training images / batch (the last partial batch dropped)
    assert first == [f"epoch 1/2: {s} steps" for s in range(1, n + 1)]  # a line after every step
    assert second == [f"epoch 2/2: {s}/{n} steps ({100 * s / n:.0f}%)" for s in range(1, n)]  # then Keras' line


def test_unknown_config_key_is_one_line(tmp_path, shapes, capsys):
    cfg = _config(tmp_path, shapes, epochs=1, extra="trian: {}\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key trian" in err[0]


def test_evaluate_and_predict(tmp_path, shapes, capsys):
    cfg = _config(tmp_path, shapes, epochs=1, name="ev")
    assert main(["train", "--config", str(cfg)]) == 0
    best = tmp_path / "runs" / "ev" / "best.keras"
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["evaluate", str(best), str(shapes), "--format", "masks", "--out", str(out), "--json", "--limit", "6"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "evaluation: 6/6 images in " in captured.err  # progress, as a log sees it
    assert report["num_images"] == 6
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 6 * 48 * 64  # scored at label resolution
    assert abs(report["pixel_accuracy"] - np.trace(cm) / cm.sum()) < 1e-9
    assert (out / "confusion.png").is_file() and len(list((out / "overlays").glob("*.png"))) == 6
    # --held-out 0.25: exactly the validation split kseg train held out (24 images → 6)
    assert main(["evaluate", str(best), str(shapes), "--format", "masks", "--held-out", "0.25", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "ev" / "history.csv")))
    assert held["num_images"] == 6
    assert abs(held["miou"] - float(rows[-1]["val_mean_iou"])) < 0.2  # same images (train scores at 32×32)
    img = sorted((shapes / "images").glob("*.png"))[0]
    assert main(["predict", str(best), str(img), "--out", str(tmp_path / "pred")]) == 0
    import cv2

    mask = cv2.imread(str(tmp_path / "pred" / f"{img.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 64) and mask.max() < 3


def test_mirrored_strategy_on_two_cpu_devices(tmp_path, shapes):
    cfg = _config(tmp_path, shapes, epochs=1, name="mirror")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run(
        [sys.executable, "-m", "kseg", "train", "--config", str(cfg), "--strategy", "mirrored", "--cpu-devices", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mirrored strategy: 2 replicas" in r.stdout
    assert _epochs(tmp_path / "runs" / "mirror") == [0]


def test_init_from_starts_from_a_checkpoint_and_refuses_another_architecture(tmp_path, shapes, capsys):
    import keras

    cfg = _config(tmp_path, shapes, epochs=1, name="first")
    assert main(["train", "--config", str(cfg)]) == 0
    best = tmp_path / "runs" / "first" / "best.keras"
    from kseg.config import load_config
    from kseg.train import build_from_config

    ft = _config(tmp_path, shapes, epochs=1, name="ft",
                 model=f"model: {{name: unet, kwargs: {{filters: 4, depth: 2}}, init_from: '{best}'}}\n")
    model = build_from_config(load_config(ft), num_classes=3)
    assert "train.warmup_epochs: 1" in capsys.readouterr().err  # a fine-tune without warm-up is told
    src = keras.saving.load_model(best)
    for a, b in zip(model.get_weights(), src.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = _config(tmp_path, shapes, epochs=1, name="ft2",
                    model=f"model: {{name: unet, kwargs: {{filters: 8, depth: 2}}, init_from: '{best}'}}\n")
    assert main(["train", "--config", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "init_from" in err[0] and "first/best.keras" in err[0]


@pytest.mark.slow
def test_deep_supervision_trains_every_side_saves_the_fused_model_and_resumes(tmp_path, shapes):
    """U²-Net with deep_supervision: the loss is summed over the fused and the six side outputs,
    history and best-checkpoint use the fused output's metrics under the usual names, and best.keras
    is the single-output model that evaluate and export load; a run stopped after its first epoch
    goes on to the second. Slow: U²-Net's training step takes minutes to trace on two cores."""
    import keras

    from kseg.models.saving import load_model

    model = "model: {name: u2net, kwargs: {small: true, width: 0.25, deep_supervision: true}}\n"
    cfg = _config(tmp_path, shapes, epochs=1, name="ds", model=model)
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "runs" / "ds"
    row = list(csv.DictReader(open(run / "history.csv")))[0]
    for key in ("loss", "val_loss", "mean_iou", "val_mean_iou", "pixel_accuracy", "logits_loss",
                *(f"side{k}_loss" for k in range(1, 7))):
        assert key in row and np.isfinite(float(row[key])), key
    assert not any(k.startswith(("logits_mean", "val_logits_mean")) for k in row)
    # the total is the sum of the seven terms (same loss, weight 1 each)
    parts = float(row["logits_loss"]) + sum(float(row[f"side{k}_loss"]) for k in range(1, 7))
    assert float(row["loss"]) == pytest.approx(parts, rel=1e-3)
    assert float(row["val_mean_iou"]) == pytest.approx(float((run / "best_score.txt").read_text()))
    best = load_model(run / "best.keras")
    assert not isinstance(best.output, dict) and tuple(best.output.shape) == (None, 32, 32, 3)
    raw = keras.saving.load_model(run / "best.keras", compile=False)  # saved single-output already
    assert not raw.deep_supervision
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=2"]) == 0
    assert _epochs(run) == [0, 1]
