"""Background swap: the person over a colour, an image or a (looping) video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apps.effects.base import Effect, looks_like_color, parse_color
from kseg.errors import KsegError


def cover(image: np.ndarray, shape) -> np.ndarray:
    """``image`` scaled and centre-cropped to fill ``shape`` ``(H, W)`` without distortion."""
    import cv2

    h, w = shape[:2]
    ih, iw = image.shape[:2]
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    y, x = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(resized[y : y + h, x : x + w])


class BackgroundSwap(Effect):
    """Replace the background with a colour, an image or a video.

    Args:
        background: a colour (``"green"``, ``"#00b140"``, ``"0,177,64"``, an RGB tuple), an image
            path, a video path (looped) or an ``(H, W, 3)`` uint8 RGB array.
        strength: blur of a still background (0: sharp … 1: strongly blurred), as a camera would
            show a far wall.

    Raises:
        KsegError: the image or video cannot be read.

    Example:
        out = BackgroundSwap("assets/beach.jpg").apply(rgb, person[..., None])
    """

    name = "swap"
    needs = ("person",)

    def __init__(self, background="green", strength: float = 0.0):
        super().__init__(strength)
        self.video = None
        self.image = None
        self.color = None
        if isinstance(background, np.ndarray):
            if background.dtype != np.uint8 or background.ndim != 3 or background.shape[2] != 3:
                raise KsegError(f"background array is {background.dtype} {background.shape}; give H×W×3 uint8 RGB")
            self.image = background
            self.label = "image"
        elif isinstance(background, (tuple, list)) or looks_like_color(background):
            self.color = parse_color(background)
            self.label = "#%02x%02x%02x" % self.color
        else:
            from apps.common.sources import VIDEO_SUFFIXES, VideoSource

            p = Path(background)
            self.label = p.name
            if p.suffix.lower() in VIDEO_SUFFIXES:
                self.video = VideoSource(p, loop=True)
            else:
                self.image = self._read_image(p)
        self._cache_key = None
        self._cached = None

    @staticmethod
    def _read_image(p: Path, what: str = "background image") -> np.ndarray:
        import cv2

        if not p.is_file():
            hint = "give an image, a video or a colour such as green or #00b140" if what == "background image" else "give an image file"
            raise KsegError(f"{what} {p} not found; {hint}")
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise KsegError(f"cannot read {what} {p}; is it a complete JPEG/PNG?")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def describe(self):
        return f"swap {self.label}" + (f" blur {self.strength:.2f}" if self.video is None and self.color is None else "")

    def background(self, shape) -> np.ndarray:
        """The background at ``shape`` ``(H, W)`` (cached for colours and images)."""
        import cv2

        h, w = shape[:2]
        if self.video is not None:
            frame = self.video.read(self._buf("vframe", self.video.shape + (3,)))
            if frame.shape[:2] == (h, w):
                return frame
            return cv2.resize(frame, (w, h), dst=self._buf("vbg", (h, w, 3)), interpolation=cv2.INTER_LINEAR)
        key = (h, w, round(self.strength, 3))
        if key != self._cache_key:
            if self.color is not None:
                bg = np.empty((h, w, 3), np.uint8)
                bg[:] = self.color
            else:
                bg = cover(self.image, (h, w))
                k = int(round(self.strength * 0.04 * max(h, w))) * 2 + 1
                if k > 1:
                    bg = cv2.GaussianBlur(bg, (k, k), 0)
            self._cache_key, self._cached = key, bg
        return self._cached

    def apply(self, frame, masks, out=None):
        alpha = masks[..., 0] if masks.ndim == 3 else masks
        return self.compositor(frame, self.background(frame.shape), alpha, out)

    def close(self):
        if self.video is not None:
            self.video.close()
