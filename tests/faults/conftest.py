"""The fault-injection suite: what a user's machine and hand do to kseg, and what kseg must say.

Each test records ``(case, expected, got)`` through the ``fault`` fixture; the table of every
case run is printed at the end of the session (``pytest tests/faults``; the hooks that gather it
are in tests/conftest.py, which the xdist controller loads). Fast cases run by
default; interrupts at random points of real runs are ``@pytest.mark.slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Fault:
    """Records one case of the suite: ``fault.check(case, expected, got, ok)``.

    The row travels in the test's report (``user_properties``), so that the table is complete when
    pytest-xdist runs the tests in other processes (``make test``)."""

    def __init__(self, node):
        self.node = node

    def check(self, case: str, expected: str, got: str, ok: bool) -> None:
        row = (case, expected, " ".join(str(got).split())[:110], "ok" if ok else "FAILED")
        self.node.user_properties.append(("fault", row))
        assert ok, f"{case}: expected {expected}, got {got}"


@pytest.fixture
def fault(request):
    return Fault(request.node)


def kseg_cli(*args, env=None, cwd=None, timeout=600):
    """Run ``python -m kseg ARGS`` in a subprocess; returns ``CompletedProcess`` (text)."""
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
    e.pop("KSEG_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "kseg", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=cwd or ROOT, timeout=timeout)


def kseg_lines(stderr: str) -> list[str]:
    """The lines kseg itself printed on stderr (TensorFlow's and Keras' log lines left out)."""
    return [ln for ln in stderr.splitlines() if ln.startswith(("kseg:", "webcam:", "demo:"))]


def one_line(stderr: str) -> str:
    """kseg's one error line, or everything when there is not exactly one (so the failure shows it)."""
    lines = kseg_lines(stderr)
    return lines[0] if len(lines) == 1 and "Traceback" not in stderr else stderr[-2000:]


def shapes_dataset(root: Path, n=24, num_classes=3, size=(48, 64), seed=1) -> Path:
    from kseg.data.synthetic import write_shapes_dataset

    ds = write_shapes_dataset(root, n, size=size, num_classes=num_classes, seed=seed)
    (root / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    return root


@pytest.fixture
def sigint_at(monkeypatch, tmp_path):
    """``with sigint_at("backup"):`` sends this process SIGINT (``times`` times) when it reaches
    that pause point of ``kseg._faults`` (the code holds there for a second meanwhile)."""
    import contextlib
    import signal
    import threading
    import time

    from kseg import _faults

    @contextlib.contextmanager
    def at(point: str, times: int = 1, sig=signal.SIGINT):
        marker = tmp_path / f"reached-{point}"
        monkeypatch.setenv("KSEG_FAULT_PAUSE", point)
        monkeypatch.setenv("KSEG_FAULT_MARKER", str(marker))
        monkeypatch.setenv("KSEG_FAULT_SECONDS", "1")
        monkeypatch.setattr(_faults, "_DONE", set())
        done = threading.Event()
        sent = []

        def watch():
            while not done.is_set():
                if marker.exists():
                    for _ in range(times):
                        os.kill(os.getpid(), sig)
                        sent.append(point)
                        time.sleep(0.2)
                    return
                time.sleep(0.02)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            yield sent
        finally:
            done.set()
            t.join()

    return at


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs at ``path`` (root only); ``False`` where mounting is not allowed."""
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def full_dir(tmp_path):
    """A folder on a file system with almost no space left: a 64 KiB tmpfs filled up, where this
    process may mount; otherwise ``None`` (the test patches writes to raise ENOSPC instead)."""
    d = tmp_path / "full"
    if not _mount_tmpfs(d, "size=64k"):
        d.mkdir()
        yield d, False
        return
    try:
        with open(d / "filler", "wb") as f:
            try:
                f.write(b"\0" * 60_000)
            except OSError:
                pass
        yield d, True
    finally:
        _umount(d)


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only folder: a tmpfs mounted ro (root: chmod does not stop root), else chmod 555."""
    d = tmp_path / "readonly"
    if _mount_tmpfs(d, "ro,size=64k"):
        try:
            yield d
        finally:
            _umount(d)
        return
    d.mkdir()
    d.chmod(0o555)
    try:
        yield d
    finally:
        d.chmod(0o755)


def no_space(monkeypatch, folder: Path):
    """Where no tmpfs can be mounted: every write under ``folder`` raises ENOSPC, as a full disk does."""
    import errno
    import io

    real_open = io.open

    def fake_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and str(file).startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)
