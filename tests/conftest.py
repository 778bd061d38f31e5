"""Shared fixtures. Tests that need ../shared/data use the `shared_data` fixture or the
`shared_data` marker and are skipped, not failed, when it is absent."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it."""
    import keras

    keras.utils.set_random_seed(0)
    yield
