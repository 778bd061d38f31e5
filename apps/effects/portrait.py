"""Portrait mode: the background blurred the way a wide-aperture lens does it.

A lens spreads each out-of-focus point into a disc (the aperture's shape), not a Gaussian, and
bright points dominate because light adds up linearly. So the blur is a disc kernel applied to
the image in (approximately) linear light, which makes highlights bloom into round bokeh.
It runs at a quarter of the frame's resolution (a blurred background has no detail to lose)
and is mask-aware: the person's pixels are left out of the average, so no halo of the person
bleeds into the background near the edges.
"""

from __future__ import annotations

import numpy as np

from apps.effects.base import Effect


def disc_kernel(radius: float) -> np.ndarray:
    """A normalized disc of ``radius`` pixels with an anti-aliased rim, float32.

    Example:
        disc_kernel(1).shape   # (3, 3)
    """
    r = max(float(radius), 0.5)
    n = int(np.ceil(r))
    y, x = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float32)
    k = np.clip(r + 0.5 - np.sqrt(x * x + y * y), 0.0, 1.0).astype(np.float32)
    return k / k.sum()


class Portrait(Effect):
    """Background blur with a disc (bokeh) kernel, in linear light, at reduced resolution.

    Args:
        strength: 0..1; the blur radius is ``strength · 6 %`` of the frame's longer side
            (0.5 → 19 px at 640×480).
        scale: resolution the blur runs at, as a fraction of the frame (0.25).
        gamma: the blur averages ``(x/255)^gamma``; larger makes highlights bloom more (2.2
            is about sRGB's light response).
        keeper: an ``apps.common.keep.PersonKeeper``: only the person it chooses stays sharp
            (``None``: every person).

    Example:
        out = Portrait(strength=0.6).apply(rgb, person_mask[..., None])
        only_one = Portrait(keeper=PersonKeeper(load_instance_detector(), keep="largest"))
    """

    name = "portrait"
    needs = ("person",)

    def __init__(self, strength: float = 0.5, scale: float = 0.25, gamma: float = 2.2, keeper=None):
        super().__init__(strength)
        self.keeper = keeper
        self.scale = float(scale)
        self.gamma = float(gamma)
        self._lut = ((np.arange(256, dtype=np.float32) / 255.0) ** self.gamma).reshape(1, 256)
        self._kernels = {}

    def radius(self, shape) -> float:
        """Blur radius in full-resolution pixels for a frame of ``shape``."""
        return self.strength * 0.06 * max(shape[:2])

    def _kernel(self, r):
        key = round(r * 2) / 2
        k = self._kernels.get(key)
        if k is None:
            k = self._kernels[key] = disc_kernel(key)
        return k

    def background(self, frame, alpha):
        """The blurred background at full resolution (uint8), person pixels left out of the blur."""
        import cv2

        h, w = frame.shape[:2]
        sh, sw = max(4, round(h * self.scale)), max(4, round(w * self.scale))
        small = cv2.resize(frame, (sw, sh), dst=self._buf("small", (sh, sw, 3)), interpolation=cv2.INTER_AREA)
        a_small = cv2.resize(alpha, (sw, sh), dst=self._buf("a_small", (sh, sw), np.float32),
                             interpolation=cv2.INTER_AREA)
        lin = cv2.LUT(small, self._lut_for(3), dst=self._buf("lin", (sh, sw, 3), np.float32))
        four = self._buf("four", (sh, sw, 4), np.float32)
        wgt = four[..., 3]
        np.subtract(1.0, a_small, out=wgt)  # background weight
        np.multiply(lin, wgt[..., None], out=four[..., :3])
        r = self.radius(frame.shape) * (sw / w)
        blurred = self._buf("blur4", (sh, sw, 4), np.float32)
        if r >= 0.5:
            cv2.filter2D(four, -1, self._kernel(r), dst=blurred, borderType=cv2.BORDER_REFLECT)
        else:
            np.copyto(blurred, four)
        den = np.maximum(blurred[..., 3:], 1e-3, out=self._buf("den", (sh, sw, 1), np.float32))
        rgb_lin = np.divide(blurred[..., :3], den, out=self._buf("rgb_lin", (sh, sw, 3), np.float32))
        # where no background is near (deep inside the person) fall back to the unblurred image
        np.copyto(rgb_lin, lin, where=den < 2e-3)
        cv2.pow(rgb_lin, 1.0 / self.gamma, dst=rgb_lin)
        bg_small = cv2.convertScaleAbs(rgb_lin, dst=self._buf("bg_small", (sh, sw, 3)), alpha=255.0)
        return cv2.resize(bg_small, (w, h), dst=self._buf("bg", (h, w, 3)), interpolation=cv2.INTER_LINEAR)

    def describe(self) -> str:
        """One line for the HUD (with the keep rule when only chosen people stay sharp)."""
        line = super().describe()
        return line if self.keeper is None else f"{line}, keep {self.keeper.keep}"

    def close(self) -> None:
        """Stop the keeper's detection thread."""
        if self.keeper is not None:
            self.keeper.close()

    def _lut_for(self, channels):
        lut = self._bufs.get(("lut", channels))
        if lut is None:
            lut = self._bufs[("lut", channels)] = np.repeat(self._lut.reshape(1, 256, 1), channels, axis=2)
        return lut

    def apply(self, frame, masks, out=None):
        alpha = masks[..., 0] if masks.ndim == 3 else masks
        if self.keeper is not None:
            alpha = self.keeper(frame, np.ascontiguousarray(alpha, np.float32))
        bg = self.background(frame, alpha)
        return self.compositor(frame, bg, alpha, out)
