"""Test doubles for the apps: a segmenter with known masks, small synthetic clips."""

from __future__ import annotations

import numpy as np

PARSING_CLASSES = ("background", "skin", "hair", "upper_clothes", "dress", "lower_clothes", "footwear", "accessories")

H, W = 256, 256
# rectangles in frame pixels (y0, y1, x0, x1), multiples of 8: the fake model's 32×32 grid maps
# onto them exactly
PERSON = (64, 256, 80, 176)
HAIR = (16, 64, 96, 160)
SKIN = (64, 112, 104, 152)
CLOTHES = (112, 256, 80, 176)
# the refined edge band: the guided filter works at a quarter of the frame (radius 1 there), is
# applied at half and upsampled, so a mask edge moves pixels up to ~14 px away; beyond, exact
MARGIN = 16


class FakeSegmenter:
    """Logits +8 for the class painted in each rectangle, background elsewhere; no model involved.

    The logits are computed at the model's input size from rectangles given in the pixels of
    an H×W test frame (whatever the size of the image it is handed, as a real model sees a
    resized frame), so the masks the estimator returns at frame resolution are those
    rectangles (soft for a few pixels at the edges).
    """

    output_kind = "logits"
    path = None

    def __init__(self, class_names=("background", "person"), regions=None, input_size=(32, 32)):
        self.class_names = tuple(class_names)
        self.num_classes = len(class_names)
        self.input_size = input_size
        self.person_index = self.class_names.index("person") if "person" in self.class_names else None
        self.regions = regions if regions is not None else {"person": PERSON}
        self.calls = 0

    def logits(self, rgb):
        self.calls += 1
        h, w = self.input_size
        sy, sx = h / H, w / W  # rectangles are in the coordinates of an H×W test frame
        out = np.zeros((h, w, self.num_classes), np.float32)
        out[..., 0] = 8.0
        for name, (y0, y1, x0, x1) in self.regions.items():
            c = self.class_names.index(name)
            ys, xs = slice(round(y0 * sy), round(y1 * sy)), slice(round(x0 * sx), round(x1 * sx))
            out[ys, xs, :] = 0.0
            out[ys, xs, c] = 8.0
        return out


def parsing_segmenter():
    """A fake 8-class parsing model: hair, skin (face) and upper clothes."""
    return FakeSegmenter(PARSING_CLASSES, {"hair": HAIR, "skin": SKIN, "upper_clothes": CLOTHES}, (32, 32))


def textured_frame(seed=0):
    """RGB frame: a random-noise background, a smooth person (face, a lit orange jumper), dark hair."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    y0, y1, x0, x1 = PERSON
    frame[y0:y1, x0:x1] = (200, 160, 130)
    y0, y1, x0, x1 = CLOTHES
    shade = np.linspace(0.55, 1.0, x1 - x0)[None, :, None]  # light from the right: folds/shading
    frame[y0:y1, x0:x1] = (np.array([235, 150, 20]) * shade).astype(np.uint8)
    y0, y1, x0, x1 = HAIR
    frame[y0:y1, x0:x1] = (60, 40, 30)
    return frame


def interior(box, margin):
    """Slices for a rectangle shrunk by ``margin`` pixels."""
    y0, y1, x0, x1 = box
    return slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin)


def outside(box, margin, shape=(H, W)):
    """Boolean mask of pixels at least ``margin`` pixels away from a rectangle."""
    y0, y1, x0, x1 = box
    m = np.ones(shape, bool)
    m[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = False
    return m


class ListSink:
    """Keeps a copy of every frame written."""

    name = "list"
    closed_by_user = False

    def __init__(self):
        self.frames = []
        self.closed = False

    def write(self, rgb):
        self.frames.append(rgb.copy())

    def poll_key(self):
        return -1

    def close(self):
        self.closed = True


class GatedDetector:
    """An instance detector that answers only when the test lets it: each call waits for ``release``.

    It records every image it is handed (``seen``) and says when a call is waiting (``waiting``),
    so a test can check, without timing anything, that the frame loop ran on while a detection
    was in flight, and which frame the detection got.

    Args:
        answer: ``rgb → detections dict`` (at the size of ``rgb``).
        timeout: seconds a call waits for ``release`` before failing (a test that forgot to
            release fails instead of hanging).
    """

    def __init__(self, answer, timeout: float = 30.0):
        import threading

        self.answer = answer
        self.timeout = timeout
        self.seen = []
        self.waiting = threading.Event()
        self._go = threading.Semaphore(0)

    @property
    def calls(self) -> int:
        return len(self.seen)

    def __call__(self, rgb):
        self.seen.append(rgb.copy())
        self.waiting.set()
        released = self._go.acquire(timeout=self.timeout)
        self.waiting.clear()
        if not released:
            raise TimeoutError("the test never released the detector")
        return self.answer(rgb)

    def release(self, n: int = 1):
        """Let ``n`` calls (waiting or future) return."""
        for _ in range(n):
            self._go.release()


class FakeClock:
    """A clock the test moves by hand (``LatestFrameDetector(clock=...)``)."""

    def __init__(self, t: float = 0.0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t
