"""Keep only chosen people sharp: an instance model picks the people, the semantic mask keeps the edges.

A semantic person mask says *where people are*, not *which person is which*, so it cannot blur
one person and not another. ``PersonKeeper`` adds that with the Mask R-CNN person model:

1. **Detection beside the frames.** The instance model (the int8 Mask R-CNN: ~21 ms of CPU per
   call on one thread, ten times the semantic model) runs on its own lower-priority thread
   (``apps.common.detect.LatestFrameDetector``): a frame is handed over only when the thread is
   idle and the rate cap allows (the apps: 5 per second), so it always works on a fresh frame,
   nothing queues, and the frame loop never waits; between detections the last one is used
   and the semantic mask, computed on every frame, carries the motion (point 3).
2. **A choice that does not jump.** The first detection picks a person by the ``keep`` rule
   (``largest``, ``nearest`` or ``center``; a detection whose mask mostly repeats a
   better-scoring one, such as a weak detector's box around two people, is left out:
   ``group_detections``); every later detection
   follows *that* person by box IoU with the previous choice (``PersonTracker``), so a second
   person coming closer or growing does not steal the focus. A person who is not found for
   ``hold`` detections in a row is let go and the rule picks again.
3. **Semantic edges.** The kept region is the semantic mask restricted to the chosen person:
   connected regions of the semantic mask (at a small working resolution) that overlap the
   chosen instance's mask and hardly any other person's are kept whole; a region shared with
   another person (people touching) keeps only the chosen instance's dilated mask minus the
   other people's masks. The restriction is dilated and feathered a little and multiplied with
   the semantic alpha, so the edges the effect draws stay the semantic model's (refined) edges.

When the instance model finds nobody (or before its first result), the semantic mask is
returned unchanged: the plain portrait mode, nobody blurred by mistake.

Example:
    keeper = PersonKeeper(load_instance_detector("exports/person-instances.tflite"), keep="largest")
    effect = Portrait(strength=0.6, keeper=keeper)
    out = effect.apply(frame, masks)      # only the chosen person stays sharp
    keeper.close()
"""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

KEEP_CHOICES = ("all", "largest", "nearest", "center")
DEFAULT_INSTANCE_MODEL = "exports/person-instances.tflite"
KEEP_HELP = ("all: every person sharp (no instance model); largest: the person with the largest mask; "
             "nearest: the person whose box reaches lowest in the frame (feet or body nearest the camera; "
             "ties within 3%% of the frame height go to the larger mask); center: the person whose box "
             "centre is nearest the frame's centre")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` and ``(M, 4)`` boxes ``(x1, y1, x2, y2)`` → ``(N, M)``."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def choose(boxes, areas, keep: str, frame_shape) -> int | None:
    """Index of the person ``keep`` picks among detections (``None`` if there are none).

    Args:
        boxes: ``(D, 4)`` ``(x1, y1, x2, y2)`` in frame pixels.
        areas: ``(D,)`` mask areas in pixels.
        keep: ``"largest"`` (largest mask), ``"nearest"`` (lowest box bottom; ties within 3 %
            of the frame height go to the larger mask), ``"center"`` (box centre nearest the
            frame's centre).
        frame_shape: ``(H, W, ...)``.

    Example:
        choose([[0, 0, 10, 10], [20, 0, 40, 30]], [100, 600], "largest", (48, 64))   # 1
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    areas = np.asarray(areas, np.float32).reshape(-1)
    if not len(boxes):
        return None
    h, w = frame_shape[:2]
    if keep == "largest":
        return int(np.argmax(areas))
    if keep == "nearest":
        bottom = boxes[:, 3]
        near = np.nonzero(bottom >= bottom.max() - 0.03 * h)[0]
        return int(near[np.argmax(areas[near])])
    if keep == "center":
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        return int(np.argmin((cx - w / 2) ** 2 + (cy - h / 2) ** 2))
    raise KsegError(f"keep={keep!r}: choose one of {', '.join(KEEP_CHOICES)}")


def group_detections(masks, overlap: float = 0.5) -> np.ndarray:
    """Which detections repeat a better-scoring one: mask NMS over the instance masks.

    A weak detector adds low-scoring boxes around two people next to each other, or around a
    part of one person; as "the largest person" such a box would keep both people sharp.
    Instance masks of different people hardly overlap (each is the person's visible part), so a
    detection whose mask shares at least ``overlap`` of the smaller of its mask and a
    better-scoring detection's mask is dropped.

    Args:
        masks: ``(D, h, w)`` 0/1 masks, best score first.
        overlap: shared share of the smaller mask that makes a repeat.

    Returns:
        ``(D,)`` bool, True for a detection to drop.

    Example:
        group_detections(masks)     # [False, False, True]: the third spans the first two
    """
    masks = np.asarray(masks)
    if not len(masks):
        return np.zeros(0, bool)
    m = masks.reshape(len(masks), -1).astype(bool)
    size = m.sum(1)
    out = np.zeros(len(m), bool)
    for i in range(len(m)):
        for j in range(i):
            if not out[j] and (m[i] & m[j]).sum() >= overlap * max(min(size[i], size[j]), 1):
                out[i] = True
                break
    return out


class PersonTracker:
    """The chosen person across detections: picked once by a rule, then followed by box IoU.

    Args:
        keep: the rule for a new choice (``largest``, ``nearest``, ``center``).
        min_iou: a detection is the same person as the previous choice if their boxes overlap
            at least this much (the best such detection wins).
        hold: detections in a row without the chosen person before the choice is let go.

    Attributes:
        box: the chosen person's last box (``None`` when nobody is chosen).
        missed: detections in a row without the chosen person.
    """

    def __init__(self, keep: str = "largest", min_iou: float = 0.3, hold: int = 3):
        if keep not in KEEP_CHOICES[1:]:
            raise KsegError(f"keep={keep!r}: choose one of {', '.join(KEEP_CHOICES[1:])}")
        self.keep = keep
        self.min_iou = float(min_iou)
        self.hold = int(hold)
        self.box = None
        self.missed = 0

    def reset(self):
        """Forget the choice (the next detection picks by the rule)."""
        self.box, self.missed = None, 0

    def update(self, boxes, areas, frame_shape) -> int | None:
        """The index of the chosen person among these detections, or ``None`` (not found).

        ``None`` while ``box`` is still set means "keep showing the last choice" (missed for
        fewer than ``hold`` detections); with ``box`` ``None`` nobody is chosen.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if self.box is not None and len(boxes):
            iou = box_iou(self.box[None], boxes)[0]
            j = int(np.argmax(iou))
            if iou[j] >= self.min_iou:
                self.box, self.missed = boxes[j].copy(), 0
                return j
        if self.box is not None:
            self.missed += 1
            if self.missed < self.hold:
                return None
            self.reset()
        j = choose(boxes, areas, self.keep, frame_shape)
        if j is not None:
            self.box, self.missed = boxes[j].copy(), 0
        return j


class PersonKeeper:
    """Restrict a semantic person mask to the chosen person (see the module docstring).

    Args:
        detector: ``rgb → {"boxes" (D, 4) x1,y1,x2,y2, "scores" (D,), "masks" (D, h, w) 0/1}``
            at the resolution of the frame it is given (``load_instance_detector``).
        keep: ``largest``, ``nearest`` or ``center`` (``all`` needs no keeper).
        threaded: run the detector on its own thread at its own rate (else inside the calls it
            is due in: deterministic, for tests and offline processing).
        detect_scale: the frame is shrunk by this before detection (0.5: 640×480 → 320×240,
            already the 320-px model's input).
        work_width: width of the working resolution of the restriction (160).
        hold: detections without the chosen person before it is let go (``PersonTracker``).
        min_iou: ``PersonTracker``'s box IoU for "the same person".
        grow: dilation of the restriction, as a fraction of the working width (covers soft
            semantic edges and motion since the detection).
        feather: blur of the restriction's edge, as a fraction of the working width.
        max_rate: at most this many detections per second (``None``: back to back); on a
            2-core machine the detection thread takes CPU from the pipeline (the apps use
            ``apps.common.detect.DEFAULT_RATE``, 5).

    Attributes:
        detections: detector results used so far; ``detect_ms``: the last detector call's ms.
        chosen_box: the chosen person's box in frame pixels (``None``: nobody chosen).
        state: ``"waiting"`` (no detection yet), ``"chosen"``, ``"holding"`` (chosen person
            missed, last mask kept) or ``"nobody"`` (mask returned unchanged).

    Example:
        keeper = PersonKeeper(detector, keep="nearest")
        alpha = keeper(frame, alpha)        # (H, W) float32, only the chosen person left
    """

    def __init__(self, detector, keep: str = "largest", threaded: bool = True, detect_scale: float = 0.5,
                 work_width: int = 160, hold: int = 3, min_iou: float = 0.3, grow: float = 0.02,
                 feather: float = 0.02, max_rate: float | None = None):
        from apps.common.detect import LatestFrameDetector

        self.detector = detector
        self.max_rate = max_rate
        self.keep = keep
        self.tracker = PersonTracker(keep, min_iou=min_iou, hold=hold)
        self.threaded = bool(threaded)
        self.detect_scale = float(detect_scale)
        self.runner = LatestFrameDetector(detector, threaded=threaded, max_rate=max_rate, scale=detect_scale)
        self.work_width = int(work_width)
        self.grow = float(grow)
        self.feather = float(feather)
        self.detections = 0
        self.chosen_box = None
        self.state = "waiting"
        self._chosen = self._others = None  # work-resolution masks of the chosen person / the rest
        self._bufs = {}

    # ------------------------------------------------------------ detection

    @property
    def detect_ms(self) -> float:
        """The last detector call's wall milliseconds."""
        return self.runner.detect_ms

    @property
    def _thread(self):
        return self.runner._thread

    def submit(self, frame) -> bool:
        """Hand ``frame`` to the detector if it is due (``LatestFrameDetector.submit``; never waits)."""
        return self.runner.submit(frame)

    def _take_result(self):
        return self.runner.take()

    # ------------------------------------------------------------ the chosen person

    def _work_size(self, shape):
        h, w = shape[:2]
        ww = min(self.work_width, w)
        return ww, max(1, round(h * ww / w))

    def _apply_result(self, result):
        import cv2

        self.detections += 1
        boxes, masks = result["boxes"], result["masks"]
        ww, wh = self._work_size(result["shape"])
        small = np.stack([cv2.resize(m.astype(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST) for m in masks]) \
            if len(masks) else np.zeros((0, wh, ww), np.uint8)
        keep = group_detections(small)
        boxes, small = boxes[~keep], small[~keep]
        areas = small.sum(axis=(1, 2)).astype(np.float32) * (result["shape"][1] / ww) ** 2
        j = self.tracker.update(boxes, areas, result["shape"])
        if j is not None:
            self._chosen = small[j].astype(bool)
            self._others = np.any(np.delete(small, j, axis=0), axis=0) if len(small) > 1 else np.zeros((wh, ww), bool)
            self.chosen_box = boxes[j]
            self.state = "chosen"
        elif self.tracker.box is not None:
            self.state = "holding"  # missed for a moment: the last mask stays
        else:
            self._chosen = self._others = None
            self.chosen_box = None
            self.state = "nobody"

    def weight(self, alpha):
        """The restriction ``(h, w)`` in [0, 1] at the working resolution (``None``: keep all).

        ``None`` too when every region of the semantic mask is the chosen person's alone (the
        usual webcam frame with one person): the restriction would change nothing there, and
        skipping it saves the full-resolution multiply on every frame.
        """
        import cv2

        if self._chosen is None:
            return None
        wh, ww = self._chosen.shape
        a = cv2.resize(alpha, (ww, wh), interpolation=cv2.INTER_AREA)
        fg = (a >= 0.5).astype(np.uint8)
        n, labels = cv2.connectedComponents(fg, connectivity=8)
        flat = labels.ravel()
        mine = np.bincount(flat, weights=self._chosen.ravel().astype(np.float32), minlength=n)
        theirs = np.bincount(flat, weights=self._others.ravel().astype(np.float32), minlength=n)
        own = (mine > 0) & (theirs <= 0.25 * mine)
        own[0] = False
        shared = (mine > 0) & ~own
        shared[0] = False
        if own[1:].all():  # every region is the chosen person's alone (one person in view): nothing to take away
            return None
        wgt = own[labels].astype(np.float32)
        r = max(1, round(self.grow * ww))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        if shared.any():  # touching people: the chosen instance's own (dilated) mask inside the region
            mine_grown = cv2.dilate(self._chosen.astype(np.uint8), kernel).astype(bool)
            part = shared[labels] & mine_grown & ~(self._others & ~self._chosen)
            np.maximum(wgt, part.astype(np.float32), out=wgt)
        f = max(1, round(self.feather * ww))
        # grown by the feather too, so the blur softens only what lies beyond the semantic region
        grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * (r + f) + 1, 2 * (r + f) + 1))
        wgt = cv2.dilate(wgt, grow)
        return cv2.GaussianBlur(wgt, (2 * f + 1, 2 * f + 1), 0)

    def __call__(self, frame, alpha, out=None):
        """Submit ``frame`` for detection and return ``alpha`` restricted to the chosen person.

        Args:
            frame: ``(H, W, 3)`` RGB uint8.
            alpha: ``(H, W)`` float32 semantic person mask in [0, 1] (not modified).
            out: optional ``(H, W)`` float32 output buffer.

        Returns:
            ``(H, W)`` float32: ``alpha`` times the chosen person's region (``alpha`` itself
            when nobody is chosen).
        """
        import cv2

        self.submit(frame)
        result = self._take_result()
        if result is not None:
            self._apply_result(result)
        wgt = self.weight(alpha)
        if wgt is None:
            return alpha
        h, w = alpha.shape[:2]
        full = self._bufs.get("full")
        if full is None or full.shape != (h, w):
            full = self._bufs["full"] = np.empty((h, w), np.float32)
        cv2.resize(wgt, (w, h), dst=full, interpolation=cv2.INTER_LINEAR)
        out = out if out is not None else self._bufs.setdefault("out", np.empty((h, w), np.float32))
        if out.shape != (h, w):
            out = self._bufs["out"] = np.empty((h, w), np.float32)
        return np.multiply(alpha, full, out=out)

    def reset(self):
        """Forget the choice (the next detection picks again by the rule)."""
        self.tracker.reset()
        self.runner.reset()
        self._chosen = self._others = self.chosen_box = None
        self.state = "waiting"

    def close(self):
        """Stop the detection thread."""
        self.runner.close()


def load_instance_detector(path=DEFAULT_INSTANCE_MODEL, num_threads: int = 1, min_score: float = 0.5,
                           option: str = "--keep"):
    """A person detector for ``PersonKeeper`` and ``MaskOverlay`` from an instance model file.

    Args:
        path: an instance ``.tflite`` with its card (or a ``.keras`` Mask R-CNN); the shipped
            person model by default.
        num_threads: interpreter threads (1: the app's pipeline already uses the other core).
        min_score: detections scoring below this are ignored.
        option: the option that needs the model, for the message when it is missing
            (``--keep`` or ``--instances``).

    Returns:
        ``rgb → {"boxes", "scores", "masks"}`` of the person class only, at the frame's size.

    Raises:
        KsegError: the file is missing (with how to get it), damaged, or a semantic model.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        from apps.common.sources import resolve

        p = resolve(path)
    if not p.is_file():
        raise KsegError(
            f"instance model {path} not found; {option} needs a person instance model: it ships as "
            f"{DEFAULT_INSTANCE_MODEL} in a complete checkout, or export it with `kseg export "
            "runs/mask_rcnn_person_lite0/last.weights.h5 --config configs/mask_rcnn_person_lite0.yaml "
            f"--quantization float16 --out {DEFAULT_INSTANCE_MODEL}` "
            + ("(or use --keep all)" if option == "--keep" else f"(or leave out {option})")
        )
    from kseg.runtime import detect_instances, load_instance_model

    model = load_instance_model(p, num_threads=num_threads)
    names = [str(n).lower() for n in (model.class_names or ("background", "person"))]
    person = names.index("person") if "person" in names else 1

    def detect(rgb):
        det = detect_instances(model.model, rgb, min_score=min_score)
        keep = det["classes"] == person
        return {k: v[keep] for k, v in det.items()}

    return detect
