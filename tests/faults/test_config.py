"""Config values of the wrong type or out of range: one line naming the key, the value and what
is expected, exit 2, before anything is built (kseg/config.py, kseg/cli/common.py)."""

import pytest

from kseg.cli import main

from .conftest import shapes_dataset

CASES = [
    # (what the user wrote: a YAML line in train: / data:, or --set), the message it must give
    ("train", "epochs: \"two\"", "config train.epochs must be a whole number, got 'two'"),
    ("data", "batch_size: two", "config data.batch_size must be a whole number, got 'two'"),
    ("data", "size: big", "config data.size must be a list of 2 whole numbers like [256, 256], got 'big'"),
    ("data", "size: [0, 0]", "config data.size must be [H, W] with H and W of at least 1 pixel"),
    ("train", "epochs: 0", "config train.epochs must be at least 1, got 0"),
    ("train", "learning_rate: fast", "config train.learning_rate must be a number, got 'fast'"),
    ("data", "on_error: ignore", "config data.on_error must be skip or fail, got 'ignore'"),
    ("data", "augment: {flip: maybe}", "config data.augment.flip must be true or false, got 'maybe'"),
]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("shapes"), n=8)


def _config(tmp_path, shapes, train="", data=""):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: c\nout_dir: {tmp_path / 'runs'}\nmodel: {{name: unet, kwargs: {{filters: 4, depth: 2}}}}\n"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  size: [32, 32]\n  batch_size: 4\n"
        + (f"  {data}\n" if data else "")
        + "train:\n  verbose: 0\n" + (f"  {train}\n" if train else "")
    )
    return cfg


@pytest.mark.parametrize("section,line,message", CASES)
def test_config_value_of_wrong_type_is_one_line(tmp_path, shapes, capsys, fault, section, line, message):
    cfg = _config(tmp_path, shapes, **{section: line})
    rc = main(["train", "--config", str(cfg)])
    err = capsys.readouterr().err.strip().splitlines()
    fault.check(f"config {section}: {line}", f"exit 2, one line '{message[:40]}...'", f"exit {rc}: {err}",
                rc == 2 and len(err) == 1 and message in err[0])
    assert not (tmp_path / "runs" / "c").exists()  # refused before the run folder is made


@pytest.mark.parametrize("argv,message", [
    (["--set", "data.size=64"], "config data.size must be a list of 2 whole numbers like [256, 256], got 64"),
    (["--set", "train.epochs=-1"], "config train.epochs must be at least 1, got -1"),
    (["--size", "0", "0"], "--size 0 0: must be at least 1 pixel"),
    (["--epochs", "-1"], "--epochs -1: must be at least 1"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
])
def test_train_flags_out_of_range_are_one_line(tmp_path, shapes, capsys, fault, argv, message):
    rc = main(["train", "--config", str(_config(tmp_path, shapes)), *argv])
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    fault.check(f"kseg train {' '.join(argv)}", "exit 2, one line, no 'run written'", f"exit {rc}: {err} {out!r}",
                rc == 2 and len(err) == 1 and message in err[0] and "written" not in out)
    assert not (tmp_path / "runs" / "c" / "best.keras").exists()


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "M", "D", "--size", "0", "0"], "--size 0 0: must be at least 1 pixel"),
    (["predict", "M", "x.png", "--size", "-5", "64"], "--size -5 64: must be at least 1 pixel"),
    (["export", "M", "--out", "x.tflite", "--calibration", "0"], "--calibration 0: must be at least 1 image"),
    (["quantize", "M", "--out", "q", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["benchmark", "M", "--threads", "0"], "--threads 0: must be at least 1"),
    (["evaluate", "M", "D", "--held-out", "1.5"], "--held-out 1.5: must be a fraction between 0 and 1"),
])
def test_numeric_flags_checked_before_any_work(capsys, fault, argv, message):
    rc = main(argv)  # M and D do not exist: the flag must be refused before anything is opened
    err = capsys.readouterr().err.strip().splitlines()
    fault.check(f"kseg {' '.join(argv)}", "exit 2, one line naming the flag", f"exit {rc}: {err}",
                rc == 2 and len(err) == 1 and message in err[0])
