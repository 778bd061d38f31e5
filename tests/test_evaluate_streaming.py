"""kseg evaluate streams a dataset: bounded read-ahead, order kept, bad samples reported."""

from __future__ import annotations

import threading
import time

import numpy as np

from kseg.errors import KsegError
from kseg.evaluate import iter_loaded


class CountingSet:
    """A dataset whose load() records how many loaded samples are not yet consumed."""

    def __init__(self, n, bad=()):
        self.n, self.bad = n, set(bad)
        self.lock = threading.Lock()
        self.loaded = 0
        self.consumed = 0
        self.max_waiting = 0

    def load(self, i):
        if i in self.bad:
            raise KsegError(f"image {i}.jpg is corrupt")
        with self.lock:
            self.loaded += 1
            self.max_waiting = max(self.max_waiting, self.loaded - self.consumed)
        return np.full((2, 2, 3), i, np.uint8), np.zeros((2, 2), np.uint8)


def test_iter_loaded_keeps_order_and_bounds_memory():
    ds = CountingSet(200, bad={3, 150})
    skipped, seen = [], []
    for i, image, _ in iter_loaded(ds, range(200), skipped, workers=2, ahead=4):
        assert image[0, 0, 0] == i % 256
        seen.append(i)
        time.sleep(0.001)  # a consumer slower than the readers
        ds.consumed += 1
    assert seen == [i for i in range(200) if i not in (3, 150)]
    assert skipped == ["image 3.jpg is corrupt", "image 150.jpg is corrupt"]
    # 4 queued + the one being handed over; ThreadPoolExecutor.map would queue all 200
    assert ds.max_waiting <= 6
