"""Virtual try-on: recolour the upper clothes (and the hair) keeping the garment's shading.

Shading and folds live in lightness; colour lives in chroma. So the garment is converted to
CIELAB, its chroma (a, b) is replaced by the target's (keeping a little of the original's
variation for prints and texture), and its lightness is shifted towards the target's mean
while every local deviation — the folds, the shadows — is kept as it was. The result is
blended back with the parsing model's soft mask, inside the garment's bounding box only.
"""

from __future__ import annotations

import numpy as np

from apps.effects.base import Compositor, Effect, parse_color

PALETTE = ["#2a6fdb", "#d62839", "#2bb673", "#f2c14e", "#7d3cff", "#ffffff", "#202020"]
HAIR_PALETTE = [None, "#b03a2e", "#e8c07d", "#6c3483", "#1f77b4"]
# hair masks are softer and less certain than garment masks (a strand is hard to see); recolour
# from a probability of 0.5, fully from 0.9, so skin next to the hair (hands held by the face,
# which the shipped parsing model gives P(hair) ≈ 0.4) keeps its colour
HAIR_RAMP = (0.5, 0.9)


def _lab_of(rgb_color) -> np.ndarray:
    import cv2

    px = np.array(rgb_color, np.uint8).reshape(1, 1, 3)
    return cv2.cvtColor(px, cv2.COLOR_RGB2LAB).reshape(3).astype(np.float32)


def _weighted_mean(lab: np.ndarray, weight: np.ndarray, step: int = 4) -> np.ndarray:
    """Mean of ``lab`` (uint8, 3 channels) weighted by ``weight``, from every ``step``-th pixel.

    A mean needs no full-resolution sum; the subsample keeps it to a small float32 matrix
    product (a uint8 × float32 ``tensordot`` over a whole frame took 16 ms).
    """
    sub = lab[::step, ::step].reshape(-1, 3).astype(np.float32)
    w = np.ascontiguousarray(weight[::step, ::step], np.float32).reshape(-1)
    total = float(w.sum())
    if total < 1e-6:
        return sub.mean(0) if len(sub) else np.zeros(3, np.float32)
    return (w @ sub) / total


def recolor(region: np.ndarray, weight: np.ndarray, color, lightness: float = 0.6, keep_chroma: float = 0.25,
            ) -> np.ndarray:
    """``region`` (uint8 RGB) recoloured to ``color``, keeping its lightness variations.

    Args:
        region: ``(h, w, 3)`` uint8 RGB pixels.
        weight: ``(h, w)`` float32 mask in ``[0, 1]``; the statistics (mean lightness and
            chroma) are weighted by it.
        color: target colour (anything ``parse_color`` takes).
        lightness: 0 keeps the garment's mean lightness, 1 moves it to the target's.
        keep_chroma: how much of the original chroma variation around its mean survives.

    Returns:
        ``(h, w, 3)`` uint8 RGB, recoloured everywhere (blend it with ``weight`` afterwards).

    Example:
        new = recolor(shirt_rgb, shirt_mask, "#2a6fdb")
    """
    import cv2

    lab = cv2.cvtColor(region, cv2.COLOR_RGB2LAB)
    target = _lab_of(parse_color(color))
    mean = _weighted_mean(lab, weight)
    # one affine map per channel, applied by cv2.transform in uint8 with saturation:
    # L' = L + lightness·(L_t - mean_L);  a' = a_t + keep_chroma·(a - mean_a);  same for b
    k = float(keep_chroma)
    m = np.array([
        [1, 0, 0, lightness * (target[0] - mean[0])],
        [0, k, 0, target[1] - k * mean[1]],
        [0, 0, k, target[2] - k * mean[2]],
    ], np.float32)
    return cv2.cvtColor(cv2.transform(lab, m), cv2.COLOR_LAB2RGB)


def retexture(region: np.ndarray, weight: np.ndarray, texture: np.ndarray, shading: float = 1.0) -> np.ndarray:
    """``region`` (uint8 RGB) re-dressed in ``texture`` (same size), keeping the garment's shading.

    The texture's colour (a, b) and its own lightness pattern are used; the garment's lightness
    deviations from its mean (folds, shadows) are added on top, times ``shading``.

    Args:
        region: ``(h, w, 3)`` uint8 RGB pixels of the garment's box.
        weight: ``(h, w)`` float32 garment mask (weights the mean lightness).
        texture: ``(h, w, 3)`` uint8 RGB texture, already tiled to the box.
        shading: how much of the garment's lightness variation is kept (1.0).

    Returns:
        ``(h, w, 3)`` uint8 RGB (blend it with ``weight`` afterwards).
    """
    import cv2

    lab = cv2.cvtColor(region, cv2.COLOR_RGB2LAB)
    tex = cv2.cvtColor(texture, cv2.COLOR_RGB2LAB)
    mean_l = float(_weighted_mean(lab, weight)[0])
    light = cv2.addWeighted(tex[..., 0], 1.0, lab[..., 0], shading, -shading * mean_l)  # saturating uint8
    return cv2.cvtColor(cv2.merge([light, tex[..., 1], tex[..., 2]]), cv2.COLOR_LAB2RGB)


def _bbox(mask: np.ndarray, thr: float, pad: int):
    rows = np.flatnonzero(mask.max(axis=1) > thr)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].max(axis=0) > thr)
    h, w = mask.shape
    return (max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad), max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad))


class TryOn(Effect):
    """Recolour the upper clothes (a shirt, a jumper, a dress top) and optionally the hair.

    Needs the parsing model (classes ``upper_clothes``, ``dress``, ``hair``).

    Args:
        color: the garment's new colour.
        hair_color: the hair's new colour, or ``None`` to leave the hair alone.
        strength: opacity of the new colour, 0..1 (1 by default).
        lightness: how far the garment's mean lightness moves to the target's (0.75).
        texture: an image (path or RGB array) to re-dress the garment in instead of a flat
            colour; tiled in frame coordinates so the pattern stays put; shading kept.

    Raises:
        KsegError: a colour that is not one, or a texture image that cannot be read.

    Example:
        out = TryOn("#d62839", hair_color="#e8c07d").apply(rgb, masks)   # masks: (H, W, 2)
    """

    name = "tryon"
    needs = ("upper_clothes+dress", "hair")
    model = "parsing"

    def __init__(self, color="#2a6fdb", hair_color=None, strength: float = 1.0, lightness: float = 0.75,
                 texture=None):
        super().__init__(strength)
        self.texture = None
        self.texture_label = None
        if texture is not None:
            if isinstance(texture, np.ndarray):
                self.texture, self.texture_label = texture, "texture"
            else:
                from pathlib import Path

                from apps.effects.background import BackgroundSwap

                self.texture = BackgroundSwap._read_image(Path(texture), "texture image")
                self.texture_label = Path(texture).name
        self._tiled = None
        self.color = parse_color(color)
        self.hair_color = parse_color(hair_color) if hair_color is not None else None
        self.lightness = float(lightness)
        self._roi_comp = Compositor()

    def describe(self):
        s = f"tryon {self.texture_label}" if self.texture is not None else "tryon #%02x%02x%02x" % self.color
        if self.hair_color is not None:
            s += " hair #%02x%02x%02x" % self.hair_color
        return s + f" {self.strength:.2f}"

    def next_color(self):
        """Cycle the garment colour through a small palette (key ``c``); drops a texture."""
        if self.texture is not None:
            self.texture = None
            return
        hexes = ["#%02x%02x%02x" % parse_color(c) for c in PALETTE]
        cur = "#%02x%02x%02x" % self.color
        self.color = parse_color(PALETTE[(hexes.index(cur) + 1) % len(PALETTE)] if cur in hexes else PALETTE[0])

    def next_hair_color(self):
        """Cycle the hair colour (``None`` = unchanged) (key ``v``)."""
        cur = None if self.hair_color is None else "#%02x%02x%02x" % self.hair_color
        i = HAIR_PALETTE.index(cur) if cur in HAIR_PALETTE else 0
        nxt = HAIR_PALETTE[(i + 1) % len(HAIR_PALETTE)]
        self.hair_color = None if nxt is None else parse_color(nxt)

    def _tiled_texture(self, shape):
        if self._tiled is None or self._tiled.shape[:2] != shape[:2]:
            th, tw = self.texture.shape[:2]
            reps = (-(-shape[0] // th), -(-shape[1] // tw), 1)
            self._tiled = np.ascontiguousarray(np.tile(self.texture, reps)[: shape[0], : shape[1]])
        return self._tiled

    def _paint(self, out, mask, color, lightness, keep_chroma, opacity, texture=False, ramp=None):
        box = _bbox(mask, 0.05 if ramp is None else ramp[0], 4)
        if box is None:
            return
        y0, y1, x0, x1 = box
        region = out[y0:y1, x0:x1]
        wgt = mask[y0:y1, x0:x1]
        if ramp is not None:  # only confident pixels: weak responses (hands by the face) stay as they are
            lo, hi = ramp
            wgt = np.clip((wgt - lo) * (1.0 / (hi - lo)), 0.0, 1.0)
        if texture:
            tex = np.ascontiguousarray(self._tiled_texture(out.shape)[y0:y1, x0:x1])
            new = retexture(np.ascontiguousarray(region), wgt, tex)
        else:
            new = recolor(region, wgt, color, lightness, keep_chroma)
        alpha = wgt * opacity if opacity < 1 else wgt
        blended = self._roi_comp(new, region, np.ascontiguousarray(alpha))
        out[y0:y1, x0:x1] = blended

    def apply(self, frame, masks, out=None):
        if out is None:
            out = np.empty_like(frame)
        np.copyto(out, frame)
        if masks.ndim == 2:
            masks = masks[..., None]
        self._paint(out, masks[..., 0], self.color, self.lightness, 0.25, self.strength, self.texture is not None)
        if self.hair_color is not None and masks.shape[-1] > 1:
            self._paint(out, masks[..., 1], self.hair_color, 0.35, 0.4, 0.8 * self.strength, ramp=HAIR_RAMP)
        return out
