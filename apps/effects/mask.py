"""Debug overlay: the background tinted, the mask's 0.5 contour drawn."""

from __future__ import annotations

import numpy as np

from apps.effects.base import Effect, parse_color


class MaskOverlay(Effect):
    """Show what the model sees: background tinted with ``color``, the 0.5 contour in yellow.

    Args:
        strength: tint opacity 0..1.
        color: tint colour.

    Example:
        out = MaskOverlay().apply(rgb, person[..., None])
    """

    name = "mask"
    needs = ("person",)

    def __init__(self, strength: float = 0.6, color="#d62839"):
        super().__init__(strength)
        self.color = parse_color(color)

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
        return out
