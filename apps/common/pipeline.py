"""Capture → segment → render, in three threads, with a fixed pool of frame buffers.

- The **capture** thread reads frames into free buffers. On a live source (a camera) it never
  waits: when the segmenter is behind, the waiting frame is replaced by the newest one
  (stale frames are dropped, so the output shows the present); files are read without loss.
- The **inference** thread runs the model (``MaskEstimator.infer``).
- The **render** loop (the calling thread, which OpenCV windows need) refines the masks
  (``MaskEstimator.refine_masks``: smoothing, which needs frame order, and edges), applies the
  effect, draws the HUD, writes the sinks and reads keys. Keeping the refinement here balances
  the two busy threads: the model alone is the longest stage.

OpenCV and the TFLite interpreter release the GIL, so the stages overlap on two cores. Every
buffer (frame, masks, output) lives in one of ``slots`` pre-allocated slots that circulate
between the threads, so the loop allocates no frame-sized arrays.

Example:
    run = Pipeline(source, [VideoFileSink("out.mp4")], effect, estimator).run()
    print(run.fps, run.stage_ms)
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from apps.common.hud import Hud
from kseg import _faults

_END = object()
TIMING_WINDOW = 4096  # stage medians are over the last this many frames (fixed memory on long runs)


@dataclass
class RunStats:
    """What a run measured.

    Attributes:
        frames: frames rendered.
        dropped: frames dropped as stale (live sources only).
        wall_s: seconds from the first frame read to the last frame written.
        stage_ms: per-stage median milliseconds (``capture``, ``infer``, ``refine``, ``effect``,
            ``output``) over the last 4096 frames.
        ended: why the run stopped (``end of source``, ``max frames``, ``window closed``, ``quit key``).
    """

    frames: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    stage_ms: dict = field(default_factory=dict)
    ended: str = ""

    @property
    def fps(self) -> float:
        """Frames rendered per second of wall time."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def format_line(self) -> str:
        """One line: frames, frames/s and the stage breakdown."""
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        drop = f", {self.dropped} dropped" if self.dropped else ""
        return f"{self.frames} frames in {self.wall_s:.2f} s: {self.fps:.1f} frames/s{drop} (median ms: {stages})"


class _Slot:
    __slots__ = ("frame", "half", "out", "masks", "names", "ms", "person", "est", "logits", "half_used")

    def __init__(self, shape):
        self.frame = np.empty(shape + (3,), np.uint8)
        self.half = np.empty((shape[0] // 2, shape[1] // 2, 3), np.uint8)
        self.out = np.empty(shape + (3,), np.uint8)
        self.masks = {}
        self.names = None
        self.ms = {}
        self.person = True
        self.est = self.logits = self.half_used = None

    def masks_for(self, k):
        m = self.masks.get(k)
        if m is None:
            m = self.masks[k] = np.empty(self.frame.shape[:2] + (k,), np.float32)
        return m


class Pipeline:
    """Run ``source → estimator → effect → sinks`` until the source ends or the user stops.

    ``effect`` and ``estimator`` are plain attributes: a key handler may replace them while the
    pipeline runs (a frame whose masks were made for another effect is shown unchanged).

    Args:
        source: a ``Source``.
        sinks: list of ``Sink`` objects (all closed at the end, also on errors).
        effect: an ``Effect``.
        estimator: a ``MaskEstimator`` producing ``effect.needs``.
        hud: a ``Hud`` (``None``: no HUD).
        threaded: three threads (default) or one sequential loop.
        slots: frame buffers in flight (threaded).
        max_frames: stop after this many frames.
        on_key: ``f(key) -> bool``; called with each key a window reports; ``False`` stops.
        model_label: model name for the HUD.
        min_person: below this mean person mask the HUD says "no person in view".
        on_frame: ``f(index, frame, out)`` called after the sinks with the input and output
            frames (read-only views of buffers that are reused: copy what you keep).
        cv_threads: OpenCV worker threads during the run (restored afterwards). ``"auto"``: 1
            when threaded — the stages already run in parallel, and OpenCV splitting each small
            operation over both cores as well made them 2–3× slower (median) on a busy machine —
            and OpenCV's default otherwise; ``None``: leave it alone.

    Raises:
        KsegError: from the source (camera lost), the sinks, or the estimator. Sinks are finished
            before it propagates: a camera's video is finalized with the frames so far; from a
            file source (video, image folder) the partial video is removed (``Sink.abort``).
    """

    def __init__(self, source, sinks, effect, estimator, hud: Hud | None = None, threaded: bool = True,
                 slots: int = 4, max_frames: int | None = None, on_key=None, model_label: str = "",
                 min_person: float = 0.003, on_frame=None, cv_threads: int | None | str = "auto"):
        self.source = source
        self.sinks = list(sinks)
        self.effect = effect
        self.estimator = estimator
        self.hud = hud
        self.threaded = threaded
        self.n_slots = max(2, int(slots))
        self.max_frames = max_frames
        self.on_key = on_key
        self.model_label = model_label
        self.min_person = min_person
        self.on_frame = on_frame
        self.cv_threads = cv_threads
        self.stats = RunStats()
        self._times = {}
        self._stop = threading.Event()
        self._error = None

    # ---------------------------------------------------------------- stages

    def _capture(self, slot) -> bool:
        t0 = time.perf_counter()
        frame = self.source.read(slot.frame)
        slot.ms = {"capture": (time.perf_counter() - t0) * 1e3}
        return frame is not None

    def _infer(self, slot):
        est = self.estimator  # may be swapped by a key: the slot remembers which one ran
        slot.est = est
        slot.logits, slot.half_used = est.infer(slot.frame, slot.half)
        slot.ms["infer"] = est.infer_ms

    def _refine(self, slot):
        est = slot.est
        k = len(est.names)
        est.refine_masks(slot.frame, slot.logits, slot.half_used, slot.masks_for(k))
        slot.logits = None
        slot.names = est.names
        slot.ms["refine"] = est.refine_ms
        slot.person = est.person_fraction >= self.min_person

    def _render(self, slot) -> bool:
        """Effect, HUD, sinks, keys; ``False`` to stop."""
        t0 = time.perf_counter()
        effect = self.effect
        if slot.names == tuple(effect.needs):
            effect.apply(slot.frame, slot.masks[len(slot.names)], slot.out)
        else:  # masks from before an effect switch: show the frame as it is
            np.copyto(slot.out, slot.frame)
        t1 = time.perf_counter()
        if self.hud is not None:
            self.hud.draw(slot.out, effect.describe(), self.model_label, slot.person)
        for sink in self.sinks:
            sink.write(slot.out)
        _faults.pause("app-frame")
        t2 = time.perf_counter()
        slot.ms["effect"] = (t1 - t0) * 1e3
        slot.ms["output"] = (t2 - t1) * 1e3
        for name, v in slot.ms.items():
            ring = self._times.get(name)
            if ring is None:
                ring = self._times[name] = [np.zeros(TIMING_WINDOW), 0]
            ring[0][ring[1] % TIMING_WINDOW] = v
            ring[1] += 1
        if self.hud is not None:
            self.hud.update(t2, slot.ms)
        if self.on_frame is not None:
            self.on_frame(self.stats.frames, slot.frame, slot.out)
        self.stats.frames += 1
        keep = True
        for sink in self.sinks:
            key = sink.poll_key()
            if key >= 0 and self.on_key is not None and self.on_key(key) is False:
                self.stats.ended = "quit key"
                keep = False
            if sink.closed_by_user:
                self.stats.ended = "window closed"
                keep = False
        if self.max_frames is not None and self.stats.frames >= self.max_frames:
            self.stats.ended = "max frames"
            keep = False
        return keep

    # ---------------------------------------------------------------- loops

    def run(self) -> RunStats:
        """Run to the end; returns ``RunStats``. Sinks and the source are closed afterwards."""
        import cv2

        previous = cv2.getNumThreads()
        n = 1 if self.cv_threads == "auto" and self.threaded else self.cv_threads
        if isinstance(n, int):
            cv2.setNumThreads(n)
        t0 = time.perf_counter()
        failed = False
        try:
            if self.threaded:
                self._run_threaded()
            else:
                self._run_sequential()
        except BaseException:
            failed = True
            raise
        finally:
            self.stats.wall_s = time.perf_counter() - t0
            # a failed or interrupted run over files leaves no partial video (running it again
            # makes the whole one); a camera's recording up to the failure is kept
            finish = "abort" if failed and not self.source.live else "close"
            errors = []
            for sink in self.sinks:
                try:
                    getattr(sink, finish)()
                except Exception as e:  # keep closing the others
                    errors.append(e)
            self.source.close()
            cv2.setNumThreads(previous)
            self.stats.stage_ms = {k: float(np.median(buf[: min(n, TIMING_WINDOW)])) for k, (buf, n) in self._times.items()}
            if errors and self._error is None:
                raise errors[0]
        return self.stats

    def _run_sequential(self):
        slot = _Slot(self.source.shape)
        while True:
            if not self._capture(slot):
                self.stats.ended = "end of source"
                return
            self._infer(slot)
            self._refine(slot)
            if not self._render(slot):
                return

    def _fail(self, e):
        if self._error is None:
            self._error = e
        self._stop.set()

    def _put(self, q, item):
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q):
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _capture_loop(self, free, q_infer):
        live = self.source.live
        scratch = _Slot(self.source.shape) if live else None
        try:
            while not self._stop.is_set():
                if live:
                    try:
                        slot = free.get_nowait()
                    except queue.Empty:  # everything in flight: read and drop, keep the camera fresh
                        if not self._capture(scratch):
                            break
                        self.stats.dropped += 1
                        continue
                else:
                    slot = self._get(free)
                    if slot is _END:
                        break
                if not self._capture(slot):
                    free.put(slot)
                    break
                if live:
                    try:
                        q_infer.put_nowait(slot)
                    except queue.Full:
                        try:
                            stale = q_infer.get_nowait()
                            free.put(stale)
                            self.stats.dropped += 1
                        except queue.Empty:
                            pass
                        if not self._put(q_infer, slot):
                            break
                elif not self._put(q_infer, slot):
                    break
        except BaseException as e:
            # the source failed (camera unplugged): frames already read are still rendered and
            # written, then the error is raised; so no _stop here
            if self._error is None:
                self._error = e
        finally:
            if not self._stop.is_set():
                self._put(q_infer, _END)

    def _infer_loop(self, q_infer, q_render):
        try:
            while True:
                slot = self._get(q_infer)
                if slot is _END:
                    break
                self._infer(slot)
                if not self._put(q_render, slot):
                    break
        except BaseException as e:
            self._fail(e)
        finally:
            if not self._stop.is_set():
                self._put(q_render, _END)

    def _run_threaded(self):
        shape = self.source.shape
        free = queue.Queue()
        for _ in range(self.n_slots):
            free.put(_Slot(shape))
        q_infer = queue.Queue(maxsize=1 if self.source.live else self.n_slots)
        q_render = queue.Queue(maxsize=self.n_slots)
        threads = [
            threading.Thread(target=self._capture_loop, args=(free, q_infer), name="kseg-capture", daemon=True),
            threading.Thread(target=self._infer_loop, args=(q_infer, q_render), name="kseg-infer", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            while True:
                slot = self._get(q_render)
                if slot is _END:
                    if not self.stats.ended:
                        self.stats.ended = "end of source" if self._error is None else "error"
                    break
                self._refine(slot)
                keep = self._render(slot)
                free.put(slot)
                if not keep:
                    break
        except BaseException as e:
            self._fail(e)
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=5)
        if self._error is not None:
            raise self._error
