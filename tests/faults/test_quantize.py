"""``kseg quantize``: class counts, paths and sizes checked before fine-tuning starts
(kseg/cli/quantize.py). Before: a 2-class model on an 11-class dataset failed after 68 s with
"internal error: InvalidArgumentError"."""

import time

import pytest

from kseg.cli import main

from .conftest import kseg_lines, shapes_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from kseg.models import build_model

    root = tmp_path_factory.mktemp("model")
    build_model("unet", filters=4, depth=2, num_classes=2, input_shape=(32, 32, 3)).save(root / "best.keras")
    shapes_dataset(root / "shapes11", n=8, num_classes=11)
    return root


def test_quantize_class_mismatch_before_fine_tuning(model, tmp_path, capsys, fault):
    t = time.monotonic()
    rc = main(["quantize", str(model / "best.keras"), "--data", str(model / "shapes11"), "--format", "masks",
               "--out", str(tmp_path / "qat"), "--epochs", "1"])
    took = time.monotonic() - t
    lines = kseg_lines(capsys.readouterr().err)
    fault.check("quantize: 2-class model, 11-class data", "exit 2, one line before fine-tuning, nothing written",
                f"exit {rc} after {took:.1f} s: {lines}",
                rc == 2 and len(lines) == 1 and "has 11 classes" in lines[0] and "predicts 2" in lines[0]
                and not any((tmp_path / "qat").iterdir()))


@pytest.mark.parametrize("argv,message", [
    (["--data", "no/such/folder"], "dataset folder no/such/folder not found"),
    (["--size", "0", "0", "--data", "x"], "--size 0 0: must be at least 1 pixel"),
])
def test_quantize_paths_and_sizes_first(model, tmp_path, capsys, fault, argv, message):
    rc = main(["quantize", str(model / "best.keras"), "--out", str(tmp_path / "qat"), *argv])
    lines = kseg_lines(capsys.readouterr().err)
    fault.check(f"quantize {' '.join(argv)}", "exit 2, one line", f"exit {rc}: {lines}",
                rc == 2 and len(lines) == 1 and message in lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigint_during_quantize(model, tmp_path, fault, seed):
    """Ctrl-C at a random moment of QAT fine-tuning: "interrupted", exit 130, no partial qat_model.h5."""
    import os
    import random
    import signal
    import subprocess
    import sys

    from .conftest import ROOT

    shapes = shapes_dataset(tmp_path / "shapes2", n=12, num_classes=2)
    out = tmp_path / "qat"
    delay = random.Random(seed).uniform(8.0, 30.0)
    p = subprocess.Popen([sys.executable, "-m", "kseg", "quantize", str(model / "best.keras"), "--data", str(shapes),
                          "--format", "masks", "--out", str(out), "--epochs", "3", "--batch-size", "4"], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    lines = kseg_lines(err)
    files = sorted(f.name for f in out.iterdir()) if out.exists() else []
    complete = files == ["history.json", "qat.json", "qat_model.h5"]
    fault.check(f"quantize: SIGINT at {delay:.1f} s", "exit 130 'interrupted' and no model, or exit 0 and all files",
                f"exit {p.returncode}: {lines} {files}", "Traceback" not in err and (
                    (p.returncode == 130 and lines == ["kseg: interrupted"] and "qat_model.h5" not in files)
                    or (p.returncode == 0 and complete)))
