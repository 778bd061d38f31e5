"""Debug overlay: the background tinted, the mask's 0.5 contour drawn; optionally each person in a colour."""

from __future__ import annotations

import numpy as np

from apps.effects.base import Effect, parse_color


class MaskOverlay(Effect):
    """Show what the model sees: background tinted with ``color``, the 0.5 contour in yellow.

    With an instance detector, each person it finds is tinted and outlined in a colour of its
    own (panoptic style): the detections go through ``kseg.runtime.combine_panoptic``, so a pixel
    claimed by two people goes to the higher score and a detection mostly hidden behind a better
    one is dropped. The detector runs on every frame, in the caller's thread (the shipped
    Mask R-CNN takes ~0.15 s per call on a 2-core CPU): an inspection view, not a real-time one.

    Args:
        strength: tint opacity 0..1.
        color: tint colour.
        instances: ``rgb → {"masks" (D, H, W) 0/1, "scores" (D,)}`` at the frame's size, e.g.
            ``apps.common.keep.load_instance_detector()``; ``None`` (default): no instance colours.
        instance_strength: opacity of the instance colours 0..1.

    Example:
        out = MaskOverlay().apply(rgb, person[..., None])
        people = MaskOverlay(instances=load_instance_detector()).apply(rgb, person[..., None])
    """

    name = "mask"
    needs = ("person",)

    def __init__(self, strength: float = 0.6, color="#d62839", instances=None, instance_strength: float = 0.5):
        super().__init__(strength)
        self.color = parse_color(color)
        self.instances = instances
        self.instance_strength = float(np.clip(instance_strength, 0.0, 1.0))
        self.segments = []  # the last frame's instance segments (combine_panoptic's), best score first

    def describe(self) -> str:
        line = super().describe()
        return line if self.instances is None else f"{line}, {len(self.segments)} people"

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
        if self.instances is not None:
            self._color_instances(frame, binary, out)
        return out

    def _color_instances(self, frame, binary, out):
        import cv2

        from kseg.runtime import combine_panoptic, instance_colors

        det = self.instances(frame)
        if not len(det.get("scores", ())):
            self.segments = []
            return
        # things only (stuff={}): the detector already dropped low scores
        pan = combine_panoptic(binary, det, stuff={}, score_threshold=-np.inf)
        self.segments = pan.segments
        a = self.instance_strength
        for seg, color in zip(pan.segments, instance_colors(len(pan.segments))):
            m = pan.ids == seg["id"]
            out[m] = np.rint((1.0 - a) * out[m] + a * color.astype(np.float32)).astype(np.uint8)
            edge, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, edge, -1, tuple(int(v) for v in color), 2, cv2.LINE_AA)
