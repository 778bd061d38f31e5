"""Heads-up display: effect, model, frames/s and per-stage timings drawn onto the output frame."""

from __future__ import annotations

import numpy as np

STAGES = ("capture", "infer", "refine", "effect", "output")


class Hud:
    """Draws two or three lines of text in the top-left corner of an RGB frame (in place).

    The frames/s shown is an exponential moving average of the rate at which frames leave the
    pipeline; stage timings are moving averages too, so the numbers are readable live.

    Args:
        enabled: draw at all (key ``h`` toggles).
        smoothing: weight of the old value in the moving averages (0.9).

    Example:
        hud = Hud()
        hud.update(now, {"infer": 5.1, "effect": 2.0})
        hud.draw(out, "portrait 0.50", "portrait.tflite", person=True)
    """

    def __init__(self, enabled: bool = True, smoothing: float = 0.9):
        self.enabled = enabled
        self.smoothing = smoothing
        self.fps = 0.0
        self.ms = {}
        self._last = None

    def update(self, now: float, stage_ms: dict) -> None:
        """Feed the time a frame left the pipeline (seconds) and its stage timings (ms)."""
        s = self.smoothing
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self.fps = inst if self.fps == 0 else s * self.fps + (1 - s) * inst
        self._last = now
        for k, v in stage_ms.items():
            self.ms[k] = v if k not in self.ms else s * self.ms[k] + (1 - s) * v

    def lines(self, effect: str, model: str, person: bool = True) -> list[str]:
        """The text lines the HUD shows."""
        stages = "  ".join(f"{k} {self.ms[k]:.1f}" for k in STAGES if k in self.ms)
        out = [f"{effect} | {model} | {self.fps:5.1f} fps", f"ms: {stages}"]
        if not person:
            out.append("no person in view")
        return out

    def draw(self, frame: np.ndarray, effect: str, model: str, person: bool = True) -> np.ndarray:
        """Draw onto ``frame`` (RGB uint8, modified in place) and return it."""
        import cv2

        if not self.enabled:
            return frame
        lines = self.lines(effect, model, person)
        scale = max(0.4, frame.shape[1] / 1280)
        th = int(22 * scale / 0.5)
        width = min(frame.shape[1], int(max(len(t) for t in lines) * 10 * scale / 0.5) + 12)
        height = min(frame.shape[0], th * len(lines) + 8)
        box = frame[:height, :width]
        box >>= 1  # darken the panel behind the text (in place, no allocation)
        for i, text in enumerate(lines):
            color = (255, 200, 0) if text == "no person in view" else (255, 255, 255)
            cv2.putText(frame, text, (6, th * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
        return frame
