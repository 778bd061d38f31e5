"""Every command's output folder is checked before any work: a read-only one is one line naming
it and the option, exit 2 (was: "internal error ... report it", export only after 26 s of work).
A full disk while training is one line too, with no partial file
(kseg/cli/*, kseg/paths.py)."""

import time

import pytest

from kseg.cli import main

from .conftest import ROOT, kseg_lines, shapes_dataset


def _commands(ro, data):
    model = ROOT / "exports" / "portrait.tflite"
    return {
        "data preview": (["data", "preview", str(data), "--format", "masks", "--out", str(ro / "p.png")], "--out"),
        "predict": (["predict", "M.keras", str(data / "images" / "0000.png"), "--out", str(ro / "pred")], "--out"),
        "evaluate --out": (["evaluate", "M.keras", str(data), "--format", "masks", "--out", str(ro / "ev")], "--out"),
        "benchmark --json": (["benchmark", str(model), "--json", str(ro / "b.json")], "--json"),
        "quantize --out": (["quantize", "M.keras", "--data", str(data), "--out", str(ro / "qat")], "--out"),
        "export --out": (["export", "M.keras", "--out", str(ro / "m.tflite")], "--out"),
        "demo --out": (["demo", "--out", str(ro / "demo")], "--out"),
        "train --out-dir": (["train", "--data", str(data), "--format", "masks", "--out-dir", str(ro / "runs"),
                             "--name", "r"], "--out-dir (out_dir in the config)"),
    }


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("shapes"), n=8)


@pytest.mark.parametrize("command", ["data preview", "predict", "evaluate --out", "benchmark --json",
                                     "quantize --out", "export --out", "demo --out", "train --out-dir"])
def test_read_only_output_folder_is_one_line_before_any_work(readonly_dir, shapes, capsys, fault, command):
    argv, option = _commands(readonly_dir, shapes)[command]
    t = time.monotonic()
    rc = main(argv)
    took = time.monotonic() - t
    err = capsys.readouterr().err
    lines = kseg_lines(err)
    folder = readonly_dir / {"train --out-dir": "runs/r", "predict": "pred", "evaluate --out": "ev",
                             "quantize --out": "qat", "demo --out": "demo"}.get(command, "")
    expected = f"kseg: error: cannot write to {str(folder).rstrip('/')} (read-only file system): choose another {option}"
    fault.check(f"kseg {command} into a read-only folder", "exit 2 at once, 'cannot write to DIR (read-only "
                f"file system): choose another {option}'", f"exit {rc} after {took:.1f} s: {lines}",
                rc == 2 and lines == [expected] and took < 5 and "Traceback" not in err)


def test_train_on_a_full_disk(tmp_path, shapes, full_dir, capsys, fault):
    folder, mounted = full_dir
    if not mounted:
        pytest.skip("needs a small tmpfs (root); the ENOSPC path of atomic_path is covered by the export test")
    (folder / "filler").unlink()  # 64 KiB: the run's small files fit, its first checkpoint does not
    argv = ["train", "--data", str(shapes), "--format", "masks", "--out-dir", str(folder), "--name", "r",
            "--size", "32", "32", "--epochs", "1", "--batch-size", "4", "--set", "model.kwargs={filters: 4, depth: 2}",
            "--set", "train.verbose=0"]
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = kseg_lines(err)
    partial = [p.name for p in (folder / "r").rglob(".*")]
    fault.check("train on a full disk", "exit 2, 'cannot write ...keras (no space left on device)', no partial file",
                f"exit {rc}: {lines} {partial or ''}", rc == 2 and len(lines) == 1 and "no space left on device"
                in lines[0] and "--out-dir" in lines[0] and not partial and "run written" not in out)
