"""A slow detector beside a fast frame loop: the latest frame, a bounded rate, never a wait.

The person instance model (the shipped int8 Mask R-CNN: ~13 ms per call on 2 threads, ~21 ms of
CPU on one) is several times slower than the semantic model (~2 ms), so the apps do not run it
on every frame. ``LatestFrameDetector`` runs it on a thread of its own:

- ``submit(frame)`` hands a frame over only when the detector is idle and the last detection
  started at least ``1 / max_rate`` seconds ago; otherwise it returns at once without even
  copying the frame. So the detector always works on the newest frame it could have, no queue
  builds up, and the frame loop never waits for it.
- ``take()`` returns the newest finished detection once (``None`` when there is none new); a
  detector error is raised there, in the caller's thread, as one ``KsegError`` line.
- On Linux the thread lowers its own scheduling priority (``nice``): on a busy 2-core machine
  the frame loop's threads come first and the detector uses what they leave.

With ``threaded=False`` the detection runs inside ``submit`` (same rate rule, deterministic:
tests and offline processing).

Example:
    runner = LatestFrameDetector(load_instance_detector(), max_rate=5)
    for frame in frames:
        runner.submit(frame)
        det = runner.take()           # None most frames; a dict when a detection finished
    runner.close()
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from kseg.errors import KsegError

DEFAULT_RATE = 5.0  # instance detections per second: ~10 % of one core for the int8 person model


def lower_thread_priority(step: int = 5) -> bool:
    """Raise the calling thread's nice value by ``step`` (Linux only: there nice is per thread).

    Returns ``True`` when done. Elsewhere ``setpriority`` would change the whole process, so it
    is left alone; a refusal (a sandbox) is ignored.
    """
    if not sys.platform.startswith("linux") or step <= 0:
        return False
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + int(step)))
        return True
    except (AttributeError, OSError):
        return False


class LatestFrameDetector:
    """Run ``detector`` on the latest frame, on its own thread, at most ``max_rate`` times a second.

    Args:
        detector: ``rgb → {"boxes" (D, 4) x1,y1,x2,y2, "scores" (D,), "masks" (D, h, w) 0/1}`` at
            the resolution of the image it is given (``apps.common.keep.load_instance_detector``).
        threaded: run on a thread of its own (default); ``False``: inside ``submit``.
        max_rate: at most this many detections per second, counted from the start of one to the
            start of the next (``None`` or 0: back to back).
        scale: frames are shrunk by this before detection (0.5: 640×480 → 320×240, already the
            320-px model's input); boxes come back in frame pixels, masks at the detection size.
        nice: how much lower the thread's priority is (Linux; 0: unchanged).
        clock: the time source (tests give a fake one).

    Attributes:
        detections: detections finished so far; ``detect_ms``: the last one's wall milliseconds.

    Raises:
        KsegError: from ``take`` (and, unthreaded, ``submit``) when the detector failed.
    """

    def __init__(self, detector, threaded: bool = True, max_rate: float | None = DEFAULT_RATE, scale: float = 0.5,
                 nice: int = 5, clock=time.perf_counter):
        if max_rate is not None and not max_rate >= 0:
            raise KsegError(f"detection rate {max_rate}: give a number of detections per second ≥ 0 (0: no cap)")
        self.detector = detector
        self.threaded = bool(threaded)
        self.max_rate = float(max_rate) if max_rate else None
        self.scale = float(scale)
        self.nice = int(nice)
        self.clock = clock
        self.detections = 0
        self.detect_ms = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._busy = False  # a frame handed over and not finished
        self._pending = None
        self._buffer = None  # the frame buffer handed to the thread (reused)
        self._started = None  # clock() when the detector was last called
        self._result = None
        self._error = None
        self._stop = False
        self._thread = None
        if self.threaded:  # started here, not on the first frame: starting a thread can take a while
            self._thread = threading.Thread(target=self._loop, name="kseg-instances", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ the detection itself

    def detect(self, frame) -> dict:
        """One detection on ``frame`` now, in the calling thread: ``boxes`` in frame pixels,
        ``scores``, ``masks`` at the detection size, ``shape`` (the frame's ``(H, W)``).

        The thread calls this; so does ``submit`` when unthreaded.
        """
        import cv2

        h, w = frame.shape[:2]
        s = self.scale
        small = frame if s == 1.0 else cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                                                  interpolation=cv2.INTER_AREA)
        self._started = self.clock()  # the rate counts from detector call to detector call
        t = time.perf_counter()
        det = self.detector(small)
        self.detect_ms = (time.perf_counter() - t) * 1e3
        sy, sx = h / small.shape[0], w / small.shape[1]
        boxes = np.asarray(det["boxes"], np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
        masks = np.asarray(det["masks"])
        scores = np.asarray(det.get("scores", np.ones(len(masks))), np.float32).reshape(-1)
        return {"boxes": boxes, "scores": scores, "masks": masks, "shape": (h, w)}

    # ------------------------------------------------------------ hand-over

    def due(self) -> bool:
        """Would ``submit`` hand a frame over now (idle, and the rate allows it)?"""
        with self._lock:
            return self._due_locked()

    def _due_locked(self):
        if self._busy or self._stop:
            return False
        return self.max_rate is None or self._started is None or self.clock() - self._started >= 1.0 / self.max_rate

    def submit(self, frame) -> bool:
        """Hand ``frame`` to the detector if it is due (see the module docstring); ``True`` if handed.

        Never waits for a detection when threaded; the frame is copied (the pipeline reuses its
        buffers) only when it is handed over.
        """
        if not self.threaded:
            if not self._due_locked():
                return False
            try:
                result = self.detect(frame)
            except Exception as e:
                raise self._failure(e) from None
            self.detections += 1
            self._result = result
            return True
        with self._wake:
            if not self._due_locked():
                return False
            if self._buffer is None or self._buffer.shape != frame.shape:
                self._buffer = np.empty_like(frame)
            np.copyto(self._buffer, frame)  # the thread is idle: nobody reads the buffer now
            self._pending = self._buffer
            self._busy = True
            self._wake.notify()
        return True

    def _loop(self):
        lower_thread_priority(self.nice)
        while True:
            with self._wake:
                while self._pending is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                frame, self._pending = self._pending, None
            try:
                result = self.detect(frame)
            except Exception as e:  # reported by the next take(), in the caller's thread
                with self._wake:
                    self._error, self._busy, self._stop = e, False, True
                    self._wake.notify_all()
                return
            with self._wake:
                self._result = result
                self.detections += 1
                self._busy = False
                self._wake.notify_all()

    def take(self) -> dict | None:
        """The newest detection not taken yet (``None``: none finished since the last call)."""
        with self._lock:
            result, self._result = self._result, None
            error, self._error = self._error, None
        if error is not None:
            raise self._failure(error)
        return result

    @staticmethod
    def _failure(e) -> KsegError:
        return KsegError(f"the instance model failed: {type(e).__name__}: {str(e)[:160]}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no detection is in flight (tests, the end of a clip); ``False`` on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._busy or self._stop, timeout)

    def reset(self):
        """Drop a finished detection not taken yet and let the next ``submit`` hand over at once."""
        with self._lock:
            self._result = None
            self._started = None

    def close(self):
        """Stop the thread (a detection in flight finishes first)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
