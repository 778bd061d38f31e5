"""Shared fixtures. Tests that need ../shared/data use the `shared_data` fixture or the
`shared_data` marker and are skipped, not failed, when it is absent."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import signal

# A suite started in the background by a non-interactive shell (`nohup make test &`, some CI
# runners) inherits SIGINT ignored, and so would every process a test starts: the Ctrl-C tests
# (tests/faults, test_distribute) would find nothing interrupted. Ignored survives exec, a handler
# does not: with Python's own handler here, the processes the tests start get the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

from kseg.paths import shared_data_dir


def pytest_collection_modifyitems(config, items):
    if shared_data_dir().is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data not found at {shared_data_dir()}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data():
    """Path to the real datasets; skips the test when they are absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A tiny synthetic masks dataset (24 images of shapes, 3 classes) for end-to-end training tests."""
    import json

    from kseg.data.synthetic import write_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    ds = write_shapes_dataset(root, 24, size=(48, 64), num_classes=3, seed=1)
    (root / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    return root


def load_benchmark(name: str):
    """A script of benchmarks/ (not a package) imported as a module, e.g. ``load_benchmark("vs_mediapipe")``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it."""
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_interrupt_left_over():
    """A Ctrl-C a test made Python drop (tests/faults) stays on record in kseg.errors for the rest of
    the process, and the next test's first atomic write would raise it: each test starts clean."""
    from kseg.errors import forget_swallowed_interrupts

    forget_swallowed_interrupts()
    yield
    forget_swallowed_interrupts()


# The fault-injection table (tests/faults): each case's row travels in its test report, so the table is
# whole when pytest-xdist runs the tests in other processes; printed once at the end of the session.
_FAULT_ROWS: list[tuple[str, str, str, str]] = []


def pytest_runtest_logreport(report):
    """Collect the fault rows of each finished test (in this process or from an xdist worker)."""
    if report.when == "call":
        _FAULT_ROWS.extend(tuple(row) for key, row in report.user_properties if key == "fault")


def pytest_terminal_summary(terminalreporter):
    if not _FAULT_ROWS:
        return
    tr = terminalreporter
    tr.section("fault-injection cases")
    w = max(len(r[0]) for r in _FAULT_ROWS)
    for case, expected, got, status in _FAULT_ROWS:
        tr.write_line(f"{status:6s} {case:{w}s} | expected: {expected} | got: {got}")
    lost = sum(r[3] != "ok" for r in _FAULT_ROWS)
    tr.write_line(f"{len(_FAULT_ROWS)} cases tried, {len(_FAULT_ROWS) - lost} survived, {lost} lost")
