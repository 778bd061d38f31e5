"""Debug overlay: the background tinted, the mask's 0.5 contour drawn; optionally each person in a colour."""

from __future__ import annotations

import numpy as np

from apps.effects.base import Effect, parse_color

MAX_COLORS = 32  # instance colour slots (the detector returns at most 20 people)


class MaskOverlay(Effect):
    """Show what the models see: background tinted with ``color``, the 0.5 contour in yellow.

    With an instance detector the overlay is panoptic: the background is the stuff the semantic
    model sees (tinted as without instances; the apps' person models have no other stuff
    class) and each person the instance model finds is a thing, tinted and outlined in a colour
    of its own that stays with them from frame to frame:

    - the detector runs beside the frames (``apps.common.detect.LatestFrameDetector``: its own
      thread, the latest frame, at most ``max_rate`` a second), so the overlay keeps the
      semantic model's frame rate;
    - each detection's masks go through ``kseg.runtime.combine_panoptic`` (a pixel claimed by
      two people goes to the higher score, a detection mostly hidden behind a better one is
      dropped), then are matched to the people of the previous detection by mask IoU
      (``apps.common.instances.InstanceTracks``): a matched person keeps their colour;
    - on every frame the current semantic mask is shared among the people (``split_people``:
      a region one person's instance mask overlaps is theirs, one several people's overlap is
      split by nearest instance mask), so outlines follow the semantic model's edges of this
      frame; a person the detector did not find keeps the plain semantic overlay.

    Args:
        strength: tint opacity of the background, 0..1.
        color: background tint colour.
        instances: ``rgb → {"boxes" (D, 4), "scores" (D,), "masks" (D, H, W) 0/1}`` at the size
            of the image it is given, e.g. ``apps.common.keep.load_instance_detector()``;
            ``None`` (default): no instance colours.
        instance_strength: opacity of the instance colours, 0..1.
        threaded: run the detector on its own thread (default); ``False``: in the frames it is
            due in (deterministic: tests, offline processing).
        max_rate: at most this many detections per second (``None``: back to back; the apps
            use 5).
        detect_scale: frames are shrunk by this before detection (0.5: 640×480 → 320×240).
        work_width: width of the resolution at which people are matched and the mask is split.
        min_iou: mask IoU for "the same person" between detections.
        hold: detections without a person before their colour is let go.

    Attributes:
        people: the people shown on the last frame: dicts ``id`` (stable), ``color`` (RGB),
            ``score``, ``area`` (frame pixels coloured).

    Example:
        out = MaskOverlay().apply(rgb, person[..., None])
        overlay = MaskOverlay(instances=load_instance_detector(), max_rate=5)
        out = overlay.apply(rgb, person[..., None])      # each person in their own colour
        overlay.close()
    """

    name = "mask"
    needs = ("person",)

    def __init__(self, strength: float = 0.6, color="#d62839", instances=None, instance_strength: float = 0.5,
                 threaded: bool = True, max_rate: float | None = None, detect_scale: float = 0.5,
                 work_width: int = 320, min_iou: float = 0.3, hold: int = 2):
        super().__init__(strength)
        self.color = parse_color(color)
        self.instances = instances
        self.instance_strength = float(np.clip(instance_strength, 0.0, 1.0))
        self.work_width = int(work_width)
        self.people = []
        self.runner = self.tracks = None
        if instances is not None:
            from apps.common.detect import LatestFrameDetector
            from apps.common.instances import InstanceTracks

            self.runner = LatestFrameDetector(instances, threaded=threaded, max_rate=max_rate, scale=detect_scale)
            self.tracks = InstanceTracks(min_iou=min_iou, hold=hold)
        # the people's masks (1 + index in tracks.people) and the nearest person per pixel, at the
        # working resolution: they change only with a detection
        self._seeds = self._nearest = None

    def describe(self) -> str:
        line = super().describe()
        if self.instances is None:
            return line
        return f"{line}, {len(self.people)} {'person' if len(self.people) == 1 else 'people'}"

    def apply(self, frame, masks, out=None):
        import cv2

        alpha = masks[..., 0] if masks.ndim == 3 else masks
        h, w = frame.shape[:2]
        solid = self._buf("solid", (h, w, 3))
        if self._bufs.get("solid_color") != self.color:
            solid[:] = self.color
            self._bufs["solid_color"] = self.color
        tint = cv2.addWeighted(frame, 1.0 - self.strength, solid, self.strength, 0.0, dst=self._buf("tint", (h, w, 3)))
        out = self.compositor(frame, tint, alpha, out)
        binary = cv2.compare(alpha, 0.5, cv2.CMP_GT, dst=self._buf("bin", (h, w)))
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 220, 0), 2, cv2.LINE_AA)
        if self.runner is not None:
            self._color_people(frame, alpha, binary, out)
        return out

    # ------------------------------------------------------------ instances

    def _work_size(self, shape):
        h, w = shape[:2]
        ww = min(self.work_width, w)
        return ww, max(1, round(h * ww / w))

    def _take_detection(self, shape):
        """Feed the detector this frame if it is due; fold in a finished detection, if any."""
        import cv2

        from apps.common.instances import nearest_seed
        from kseg.runtime import combine_panoptic

        det = self.runner.take()
        if det is None:
            return
        ww, wh = self._work_size(shape)
        masks = np.asarray(det["masks"])
        small = np.stack([cv2.resize(m.astype(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST) for m in masks]) \
            if len(masks) else np.zeros((0, wh, ww), np.uint8)
        scores = np.asarray(det["scores"], np.float32)
        # things only (stuff={}): the detector already dropped low scores
        pan = combine_panoptic(np.zeros((wh, ww), np.uint8), {"masks": small, "scores": scores}, stuff={},
                               score_threshold=-np.inf)
        people = np.stack([pan.ids == s["id"] for s in pan.segments]) if pan.segments else np.zeros((0, wh, ww), bool)
        self.tracks.update(people, [s["score"] for s in pan.segments])
        self._seeds = self.tracks.seeds((wh, ww))
        self._nearest = nearest_seed(self._seeds)

    def _color_people(self, frame, alpha, binary, out):
        import cv2

        from apps.common.instances import split_people
        from kseg.runtime import instance_colors

        h, w = frame.shape[:2]
        self.runner.submit(frame)
        self._take_detection(frame.shape)
        people = self.tracks.people
        if not people or self._nearest is None:
            self.people = []
            return
        ww, wh = self._work_size(frame.shape)
        if self._nearest.shape != (wh, ww):  # the frame size changed since the detection
            self.tracks.reset()
            self._seeds = self._nearest = None
            self.people = []
            return
        fg = cv2.resize(alpha, (ww, wh), interpolation=cv2.INTER_AREA) >= 0.5
        labels = split_people(fg, self._seeds, nearest=self._nearest).astype(np.uint8)
        # whose each pixel is: the labels, reaching one working pixel beyond them so that the
        # full-resolution semantic edge, which decides the coloured extent, is covered
        small = np.where(labels > 0, labels, cv2.dilate(labels, np.ones((3, 3), np.uint8)))
        which = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST, dst=self._buf("which", (h, w)))
        colors = instance_colors(MAX_COLORS)
        lut = np.zeros((256, 3), np.uint8)
        for k, p in enumerate(people):
            lut[k + 1] = colors[p.slot % MAX_COLORS]
        # the colour layer at the working resolution, then nearest-upsampled: the same pixels as
        # `which`, for a fraction of a full-resolution lookup
        layer = cv2.resize(lut[small], (w, h), interpolation=cv2.INTER_NEAREST, dst=self._buf("layer", (h, w, 3)))
        a = self.instance_strength
        blended = cv2.addWeighted(out, 1.0 - a, layer, a, 0.0, dst=self._buf("blended", (h, w, 3)))
        paint = cv2.bitwise_and(binary, cv2.compare(which, 0, cv2.CMP_GT), dst=self._buf("paint", (h, w)))
        cv2.copyTo(blended, paint, out)
        shown = []
        for k, p in enumerate(people):
            mine = cv2.bitwise_and(paint, cv2.compare(which, k + 1, cv2.CMP_EQ))
            area = int(cv2.countNonZero(mine))
            if not area:
                continue
            color = tuple(int(v) for v in lut[k + 1])
            edge, _ = cv2.findContours(mine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, edge, -1, color, 2, cv2.LINE_AA)
            shown.append({"id": p.id, "color": color, "score": p.score, "area": area})
        self.people = shown

    def close(self) -> None:
        """Stop the detection thread."""
        if self.runner is not None:
            self.runner.close()
