"""``kseg export`` against a full disk, a read-only folder, mismatched data and Ctrl-C
(kseg/export.py, kseg/cli/export.py, kseg/paths.py).

Every case: one line naming the file or folder and the fix, a non-zero exit, no "wrote", and no
partial ``.tflite`` or card: an earlier export at ``--out`` is left byte for byte.
"""

import json
import time

import pytest

from kseg.cli import main

from .conftest import kseg_lines, no_space, shapes_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained-looking run folder: best.keras (3 classes, 32×32) and classes.json."""
    from kseg.models import build_model

    root = tmp_path_factory.mktemp("model")
    build_model("unet", filters=4, depth=2, num_classes=3, input_shape=(32, 32, 3)).save(root / "best.keras")
    (root / "classes.json").write_text(json.dumps({"class_names": ["background", "circle", "rectangle"],
                                                   "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}))
    shapes_dataset(root / "shapes3", n=8, num_classes=3)
    shapes_dataset(root / "shapes11", n=8, num_classes=11)
    return root


def _export(model, out, *extra):
    return main(["export", str(model / "best.keras"), "--quantization", "float32", "--parity", "0",
                 "--threads", "1", "--out", str(out), *extra])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_export_to_a_read_only_folder_is_refused_at_once(model, readonly_dir, capsys, fault):
    t = time.monotonic()
    rc = _export(model, readonly_dir / "m.tflite")
    took = time.monotonic() - t
    out, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check("export --out on a read-only folder", "exit 2 at once, 'cannot write to DIR (...): choose another --out'",
                f"exit {rc} after {took:.1f} s: {lines}",
                rc == 2 and lines == [f"kseg: error: cannot write to {readonly_dir} (read-only file system): choose "
                                      "another --out"] and took < 5 and "wrote" not in out)


def test_export_to_a_full_disk(model, full_dir, monkeypatch, capsys, fault):
    folder, mounted = full_dir
    if not mounted:
        no_space(monkeypatch, folder)
    before = _snapshot(folder)
    rc = _export(model, folder / "m.tflite")
    out, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check(f"export --out on a full disk ({'tmpfs' if mounted else 'ENOSPC patched'})",
                "exit 2, 'cannot write ... (no space left on device)', nothing left",
                f"exit {rc}: {lines}; files {sorted(_snapshot(folder))}",
                rc == 2 and len(lines) == 1 and "no space left on device" in lines[0] and str(folder) in lines[0]
                and ".kseg-staging" not in lines[0] and "wrote" not in out and _snapshot(folder) == before)


def test_export_int8_class_mismatch_before_any_conversion(model, tmp_path, capsys, fault):
    t = time.monotonic()
    rc = main(["export", str(model / "best.keras"), "--quantization", "int8", "--data", str(model / "shapes11"),
               "--format", "masks", "--out", str(tmp_path / "m.tflite")])
    took = time.monotonic() - t
    lines = kseg_lines(capsys.readouterr().err)
    fault.check("export int8: 3-class model, 11-class calibration data", "exit 2, one line, no .tflite",
                f"exit {rc} after {took:.1f} s: {lines}",
                rc == 2 and len(lines) == 1 and "has 11 classes" in lines[0] and "predicts 3" in lines[0]
                and not list(tmp_path.glob("m.*")))


@pytest.mark.parametrize("point,sig", [("export-convert", "SIGINT"), ("export-card", "SIGINT"),
                                       ("export-card", "SIGTERM")])
def test_sigint_during_export_keeps_the_earlier_export(model, tmp_path, capsys, sigint_at, fault, point, sig):
    import signal

    out = tmp_path / "exports" / "m.tflite"
    assert _export(model, out) == 0
    before = _snapshot(out.parent)
    capsys.readouterr()
    with sigint_at(point, sig=getattr(signal, sig)) as sent:
        rc = _export(model, out, "--licence", "changed")
    o, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check(f"export: {sig} at {point}", "exit 130, 'interrupted', the earlier .tflite and card untouched",
                f"exit {rc}: {lines}", sent and rc == 130 and lines == ["kseg: interrupted"] and "wrote" not in o
                and _snapshot(out.parent) == before)


def test_an_interrupt_python_drops_is_not_swallowed(model, tmp_path, monkeypatch, capsys, fault):
    """Before: Ctrl-C inside AtomicFunction.__del__ printed "Exception ignored ... KeyboardInterrupt" and
    the export went on to exit 0."""
    from kseg import _faults

    class Collected:
        def __del__(self):
            raise KeyboardInterrupt  # what Ctrl-C inside TensorFlow's garbage collection does

    real = _faults.pause

    def pause(name):
        if name == "export-card":
            Collected()  # dropped at once: Python can only report the exception, not raise it
        real(name)

    monkeypatch.setattr(_faults, "pause", pause)
    rc = _export(model, tmp_path / "m.tflite")
    o, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check("export: Ctrl-C dropped in a __del__", "exit 130, nothing written, no 'Exception ignored'",
                f"exit {rc}: {lines}", rc == 130 and lines == ["kseg: interrupted"] and "Exception ignored" not in err
                and not list(tmp_path.glob("m.*")) and "wrote" not in o)
