"""train.ema: the optimizer's moving average of the weights is what validation and the checkpoints
hold, and a resumed run carries on as one that was never stopped."""

import csv

import numpy as np

from kseg.cli import main

MODEL = "model: {name: unet, kwargs: {filters: 4, depth: 2}}\n"


def _run(tmp_path, shapes, name, epochs, lr=0.01, ema=None):
    cfg = tmp_path / f"{name}.yaml"
    extra = f", ema: {ema}" if ema is not None else ""
    cfg.write_text(
        f"name: {name}\nout_dir: {tmp_path / 'runs'}\n{MODEL}"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
        f"  size: [32, 32]\n  batch_size: 4\n"
        f"train: {{epochs: {epochs}, learning_rate: {lr}, schedule: constant, verbose: 0, "
        f"early_stop_patience: null, seed: 0{extra}}}\n"
    )
    assert main(["train", "--config", str(cfg)]) == 0
    return tmp_path / "runs" / name


def _kernels(path):
    import keras

    model = keras.saving.load_model(path, compile=False)
    return np.concatenate([w.numpy().ravel() for w in model.trainable_weights])


def test_checkpoints_hold_the_moving_average(tmp_path, shapes):
    start = _kernels(_run(tmp_path, shapes, "still", 2, lr=1e-12) / "last.keras")  # the initial weights
    raw = _kernels(_run(tmp_path, shapes, "raw", 2) / "last.keras")
    averaged = _kernels(_run(tmp_path, shapes, "ema", 2, ema=0.999) / "last.keras")
    moved = np.abs(raw - start).sum()
    assert moved > 0
    # Keras starts the average at the weights after the first step (Adam moves each by about the
    # learning rate), and 9 more steps at momentum 0.999 barely move it; the raw weights go on
    assert np.abs(averaged - start).sum() < 0.5 * moved
    assert np.abs(averaged - raw).sum() > 0.5 * moved


def test_a_resumed_run_swaps_the_average_back_before_training_on(tmp_path, shapes):
    whole = _run(tmp_path, shapes, "whole", 3, ema=0.9)
    _run(tmp_path, shapes, "cut", 1, ema=0.9)
    cut = _run(tmp_path, shapes, "cut", 3, ema=0.9)  # the same run, resumed from its epoch-1 backup
    assert [int(r["epoch"]) for r in csv.DictReader(open(cut / "history.csv"))] == [0, 1, 2]
    # the cut run's first part ended at its last epoch: its backup must still hold the raw weights
    # (not the average Keras copies over them then), and the resume must train on from those
    np.testing.assert_allclose(_kernels(cut / "last.keras"), _kernels(whole / "last.keras"), atol=1e-6)


def test_a_momentum_outside_0_1_is_one_clear_line(tmp_path, shapes, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        f"name: bad\nout_dir: {tmp_path / 'runs'}\n{MODEL}"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  size: [32, 32]\n  batch_size: 4\n"
        "train: {epochs: 1, verbose: 0, ema: 1.5}\n"
    )
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.ema 1.5" in err and "Traceback" not in err
