"""LatestFrameDetector: the latest frame, a rate cap, never a wait; no timing is asserted here.

A ``GatedDetector`` answers only when the test releases it, so "the frame loop ran on while a
detection was in flight" is checked by state (the detector is still waiting when ``submit``
returns), and the rate cap runs on a ``FakeClock``.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from apps.common.detect import LatestFrameDetector, lower_thread_priority
from kseg.errors import KsegError
from tests.apps.fakes import FakeClock, GatedDetector

H, W = 40, 60


def frame(value):
    """A frame whose every pixel is ``value`` (which frame a detector saw is its pixel value)."""
    return np.full((H, W, 3), value, np.uint8)


def one_person(rgb):
    h, w = rgb.shape[:2]
    m = np.zeros((1, h, w), np.uint8)
    m[0, h // 4:, w // 4: w // 2] = 1
    # the score says which frame it was: pixel value / 100
    return {"boxes": np.array([[w / 4, h / 4, w / 2, h]], np.float32),
            "scores": np.array([rgb[0, 0, 0] / 100], np.float32), "masks": m}


def test_submit_never_waits_and_the_detector_gets_the_latest_frame():
    det = GatedDetector(one_person)
    runner = LatestFrameDetector(det, max_rate=None, scale=1.0)
    try:
        assert runner.submit(frame(1)) is True
        assert det.waiting.wait(30)  # the first detection is in flight, held by the test
        for v in (2, 3, 4, 5):  # the frame loop goes on: nothing handed over, nothing waited for
            assert runner.submit(frame(v)) is False
            assert det.waiting.is_set() and runner.take() is None
        det.release()
        assert runner.wait(30)
        first = runner.take()
        assert first["scores"][0] == pytest.approx(0.01) and runner.take() is None  # frame 1; each result once
        latest = frame(6)
        assert runner.submit(latest) is True
        latest[:] = 99  # the pipeline reuses its buffers: the detector has its own copy
        assert det.waiting.wait(30)
        det.release()
        assert runner.wait(30)
        # frame 6, the newest when the detector was free; 2-5 were never queued
        assert runner.take()["scores"][0] == pytest.approx(0.06)
        assert [int(s[0, 0, 0]) for s in det.seen] == [1, 6] and runner.detections == 2
    finally:
        det.release(5)
        runner.close()
    assert runner._thread is None


def test_boxes_come_back_in_frame_pixels_and_masks_at_the_detection_size():
    runner = LatestFrameDetector(one_person, threaded=False, max_rate=None, scale=0.5)
    assert runner.submit(frame(7))
    r = runner.take()
    np.testing.assert_allclose(r["boxes"], [[15, 10, 30, 40]])  # (7.5, 5, 15, 20) at half size, × 2
    assert r["masks"].shape == (1, H // 2, W // 2) and r["shape"] == (H, W)
    np.testing.assert_allclose(r["scores"], [0.07])


@pytest.mark.parametrize("threaded", [False, True])
def test_rate_cap_counts_from_detector_call_to_detector_call(threaded):
    clock = FakeClock(0.0)
    calls = []

    def detector(rgb):
        calls.append((clock(), int(rgb[0, 0, 0])))
        return one_person(rgb)

    runner = LatestFrameDetector(detector, threaded=threaded, max_rate=4.0, scale=1.0, clock=clock)
    handed = []
    try:
        for i, t in enumerate((0.0, 0.125, 0.2, 0.25, 0.375, 0.4375, 0.5)):  # binary-exact times
            clock.t = t
            handed.append(runner.submit(frame(i)))
            assert runner.wait(30)  # threaded: let the detection finish before the clock moves on
    finally:
        runner.close()
    assert handed == [True, False, False, True, False, False, True]  # every 0.25 s at most
    assert calls == [(0.0, 0), (0.25, 3), (0.5, 6)]


def test_zero_rate_means_no_cap_and_a_negative_rate_is_one_line():
    clock = FakeClock()
    runner = LatestFrameDetector(one_person, threaded=False, max_rate=0, clock=clock)
    assert all(runner.submit(frame(i)) for i in range(3)) and runner.detections == 3
    with pytest.raises(KsegError, match=r"detection rate -1.*≥ 0"):
        LatestFrameDetector(one_person, max_rate=-1)


def test_a_detector_error_is_one_line_in_the_callers_thread():
    def broken(rgb):
        raise ValueError("tensor 7 has the wrong shape")

    runner = LatestFrameDetector(broken, max_rate=None)
    try:
        assert runner.submit(frame(1))
        assert runner.wait(30)
        with pytest.raises(KsegError, match="the instance model failed: ValueError: tensor 7 has the wrong shape"):
            runner.take()
        assert runner.submit(frame(2)) is False  # stopped: nothing more is handed over
    finally:
        runner.close()
    sync = LatestFrameDetector(broken, threaded=False)
    with pytest.raises(KsegError, match="ValueError"):
        sync.submit(frame(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux only")
def test_the_detection_thread_runs_at_a_lower_priority():
    seen = {}

    def probe():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        seen["done"] = lower_thread_priority(5)
        seen["before"], seen["after"] = before, os.getpriority(os.PRIO_PROCESS, tid)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen["done"] and seen["after"] == min(19, seen["before"] + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == seen["before"]  # this thread untouched
