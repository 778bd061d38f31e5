"""Effects: pure functions of a frame and its soft masks (``Effect.apply(frame, masks, out)``).

``portrait`` (lens-like background blur), ``swap`` (background colour/image/video), ``tryon``
(recolour upper clothes and hair, parsing model), ``mask`` (debug overlay; with an instance
detector, each person in a colour of their own).

Example:
    effect = make_effect("portrait", strength=0.6)
    out = effect.apply(rgb, masks)
"""

from __future__ import annotations

import inspect

from apps.effects.background import BackgroundSwap
from apps.effects.base import Compositor, Effect, parse_color
from apps.effects.mask import MaskOverlay
from apps.effects.portrait import Portrait, disc_kernel
from apps.effects.tryon import TryOn, recolor, retexture
from kseg.errors import KsegError

EFFECTS = {"portrait": Portrait, "swap": BackgroundSwap, "tryon": TryOn, "mask": MaskOverlay}

__all__ = [
    "EFFECTS", "BackgroundSwap", "Compositor", "Effect", "MaskOverlay", "Portrait", "TryOn",
    "disc_kernel", "make_effect", "parse_color", "recolor", "retexture",
]


def make_effect(name: str, **kwargs) -> Effect:
    """Build an effect by name; keyword arguments it does not take (or that are ``None``) are ignored.

    Example:
        make_effect("swap", background="green", strength=0.2)
    """
    cls = EFFECTS.get(name)
    if cls is None:
        raise KsegError(f"unknown effect {name!r}; choose one of {', '.join(EFFECTS)}")
    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in params and v is not None})
