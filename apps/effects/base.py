"""What every effect shares: the ``Effect`` interface, alpha compositing, colour parsing."""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

NAMED_COLORS = {
    "green": (0, 177, 64),
    "blue": (0, 71, 187),
    "red": (200, 30, 40),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "yellow": (240, 200, 30),
    "purple": (110, 40, 160),
    "pink": (230, 90, 160),
    "orange": (240, 120, 20),
}


def parse_color(spec) -> tuple[int, int, int]:
    """An RGB triple from ``"#2a6fdb"``, ``"42,111,219"``, a name (``"green"``) or a tuple.

    Raises:
        KsegError: not a colour.

    Example:
        parse_color("#ff8000")   # (255, 128, 0)
    """
    if isinstance(spec, (tuple, list, np.ndarray)) and len(spec) == 3:
        return tuple(int(np.clip(v, 0, 255)) for v in spec)
    s = str(spec).strip().lower()
    if s in NAMED_COLORS:
        return NAMED_COLORS[s]
    if s.startswith("#") and len(s) == 7:
        try:
            return tuple(int(s[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    parts = s.split(",")
    if len(parts) == 3:
        try:
            vals = [int(p) for p in parts]
            if all(0 <= v <= 255 for v in vals):
                return tuple(vals)
        except ValueError:
            pass
    raise KsegError(
        f"{spec!r} is not a colour; give #rrggbb, R,G,B (0..255) or one of {', '.join(sorted(NAMED_COLORS))}"
    )


def looks_like_color(spec) -> bool:
    """``True`` when ``parse_color`` would accept ``spec``."""
    try:
        parse_color(spec)
        return True
    except KsegError:
        return False


def reusable(bufs: dict, name: str, shape, dtype=np.uint8) -> np.ndarray:
    """``bufs[name]`` if it has this shape and dtype, else a new empty array kept there (no per-frame allocation)."""
    arr = bufs.get(name)
    if arr is None or arr.shape != shape or arr.dtype != dtype:
        arr = bufs[name] = np.empty(shape, dtype)
    return arr


class Compositor:
    """``out = alpha·fg + (1 - alpha)·bg`` for uint8 RGB images and a float alpha in ``[0, 1]``.

    Done in uint8 with OpenCV (two scaled multiplies and a saturating add), with buffers reused
    across frames. ``alpha == 1`` gives ``fg`` exactly and ``alpha == 0`` gives ``bg`` exactly.

    Example:
        comp = Compositor()
        out = comp(frame, blurred, alpha)    # alpha: (H, W) float32
    """

    def __init__(self):
        self._bufs = {}

    def _buf(self, name, shape, dtype=np.uint8):
        return reusable(self._bufs, name, shape, dtype)

    def __call__(self, fg, bg, alpha, out=None):
        import cv2

        h, w = fg.shape[:2]
        if alpha.ndim == 3:
            alpha = alpha[..., 0]
        a8 = cv2.convertScaleAbs(alpha, dst=self._buf("a8", (h, w)), alpha=255.0)
        a83 = cv2.merge([a8, a8, a8], dst=self._buf("a83", (h, w, 3)))
        ia83 = cv2.bitwise_not(a83, dst=self._buf("ia83", (h, w, 3)))  # 255 - a for uint8
        t1 = cv2.multiply(fg, a83, dst=self._buf("t1", (h, w, 3)), scale=1 / 255)
        t2 = cv2.multiply(bg, ia83, dst=self._buf("t2", (h, w, 3)), scale=1 / 255)
        if out is None:
            out = np.empty_like(fg)
        return cv2.add(t1, t2, dst=out)


class Effect:
    """An effect: ``apply(frame, masks, out) -> out``, a pure function of the frame and its masks.

    Attributes:
        name: the effect's name on the command line and in the HUD.
        needs: the soft masks it takes, in order (names for ``MaskEstimator``).
        model: which model gives those masks: ``"person"`` (the portrait model, or any model
            with a person/background split) or ``"parsing"`` (the clothes/hair model).
        strength: the main knob, 0..1 (keys ``+``/``-``).
    """

    name = "effect"
    needs: tuple[str, ...] = ("person",)
    model = "person"

    def __init__(self, strength: float = 0.5):
        self.strength = float(np.clip(strength, 0.0, 1.0))
        self.compositor = Compositor()
        self._bufs = {}

    def _buf(self, name, shape, dtype=np.uint8):
        return reusable(self._bufs, name, shape, dtype)

    def adjust(self, delta: float) -> None:
        """Change ``strength`` by ``delta``, kept in ``[0, 1]``."""
        self.strength = float(np.clip(self.strength + delta, 0.0, 1.0))

    def describe(self) -> str:
        """One line for the HUD."""
        return f"{self.name} {self.strength:.2f}"

    def apply(self, frame: np.ndarray, masks: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The effect on ``frame`` (``(H, W, 3)`` uint8 RGB) given ``masks`` (``(H, W, K)`` float32).

        Args:
            frame: the input frame (not modified).
            masks: soft masks in ``[0, 1]``, one channel per name in ``needs``.
            out: where to write the result (allocated if ``None``).

        Returns:
            The output frame, ``(H, W, 3)`` uint8 RGB.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release anything the effect opened (a background video)."""
