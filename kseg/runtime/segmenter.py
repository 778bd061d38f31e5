"""Run a segmentation model on RGB frames: ``Segmenter(path).segment(rgb) -> SegmentationResult``.

The runtime loads a ``.tflite`` model with ai-edge-litert's interpreter (XNNPACK by default) or
a ``.keras`` model (Keras imported only then), reads the model card ``NAME.json`` beside it, and
does all pre- and post-processing: resize to the model's input size, quantize the input when
the model takes uint8/int8, dequantize the output, softmax, and upsample the probabilities back
to the frame's resolution. It never imports Keras training code.

Example:
    from kseg.runtime import Segmenter
    seg = Segmenter("exports/selfie_int8.tflite", num_threads=2)
    result = seg.segment(rgb)               # rgb: H×W×3 uint8
    person = result.category_mask == seg.person_index
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.runtime.cards import card_path, card_task, check_tflite_file, read_card


@dataclass
class SegmentationResult:
    """What ``Segmenter.segment`` returns.

    Attributes:
        category_mask: ``(H, W)`` uint8 class index per pixel, at the input frame's resolution.
        confidence: ``(H, W, C)`` float32 class probabilities (they sum to 1 per pixel); for a
            model with one sigmoid output channel ``C = 2``: ``[1 - p, p]``.
    """

    category_mask: np.ndarray
    confidence: np.ndarray


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed channel-major: numpy reduces a short last axis (8
    classes) about five times slower than a long first one (12 ms against 2.3 at 384×384×8)."""
    t = np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)
    t -= t.max(axis=0)
    np.exp(t, out=t)
    t /= t.sum(axis=0)
    return np.ascontiguousarray(np.moveaxis(t, 0, -1))


def _resize(image: np.ndarray, size_hw) -> np.ndarray:
    import cv2

    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _upsample(probs: np.ndarray, size_hw) -> np.ndarray:
    import cv2

    h, w = size_hw
    if probs.shape[:2] == (h, w):
        return probs
    c = probs.shape[-1]
    if c <= 512:
        out = cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR)
        return out.reshape(h, w, c)
    return np.stack([cv2.resize(probs[..., i], (w, h), interpolation=cv2.INTER_LINEAR) for i in range(c)], -1)


def flip_permutation(num_classes: int, flip_pairs=None, where: str = "flip_pairs") -> np.ndarray | None:
    """Channel order that turns a mirrored image's class map into the original's: classes of each
    ``(a, b)`` pair in ``flip_pairs`` (left arm / right arm) trade places; ``None`` when there are none.

    Raises:
        KsegError: a pair that is not two distinct class indices below ``num_classes``, or a class
            in two pairs.
    """
    if not flip_pairs:
        return None
    perm, seen = np.arange(num_classes), set()
    for pair in flip_pairs:
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
        if not ok or not all(0 <= v < num_classes for v in pair) or pair[0] == pair[1] or seen & set(pair):
            raise KsegError(f"{where}: {pair!r} is not a pair of two other class indices 0..{num_classes - 1}; "
                            "give [[LEFT, RIGHT], ...] with each class in one pair at most")
        seen |= set(pair)
        perm[pair[0]], perm[pair[1]] = pair[1], pair[0]
    return perm


def flip_average(probs: np.ndarray, mirrored_probs: np.ndarray, perm: np.ndarray | None = None) -> np.ndarray:
    """Horizontal-flip test-time augmentation: the mean of ``probs`` ``(H, W, C)`` and the
    probabilities ``mirrored_probs`` predicted for the mirror image, mirrored back (and with left /
    right classes swapped by ``perm``, see ``flip_permutation``)."""
    back = mirrored_probs[:, ::-1]
    if perm is not None:
        back = back[..., perm]
    out = probs + back
    out *= 0.5
    return out


def pick_fastest(times_ms, tolerance: float = 0.05) -> int:
    """Index of the fastest of ``times_ms``, or of the first within ``tolerance`` (relative) of it:
    a close call goes to the earlier entry, so timing noise does not flip a preference."""
    best = min(times_ms)
    return next(i for i, t in enumerate(times_ms) if t <= best * (1.0 + tolerance))


def _timing_frame() -> np.ndarray:
    """A 480×640 RGB frame with texture (a flat frame could time a kernel's shortcut)."""
    y, x = np.mgrid[0:480, 0:640]
    return np.stack([(x * 255) // 639, (y * 255) // 479, ((x ^ y) & 255)], axis=-1).astype(np.uint8)


class _TFLiteBackend:
    def __init__(self, path: Path, num_threads):
        from ai_edge_litert.interpreter import Interpreter

        check_tflite_file(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise KsegError(f"cannot load {path}: {first}; the file is damaged or uses unsupported ops") from None
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            if card_task(path) == "instance_segmentation":
                raise KsegError(f"{path} is an instance-segmentation model (Mask R-CNN), not a semantic one; load "
                                f"it with kseg.runtime.load_instance_model")
            raise KsegError(f"{path} has {len(inp)} inputs and {len(out)} outputs; a kseg segmenter has one of each")
        self.inp, self.out = inp[0], out[0]
        shape = [int(v) for v in self.inp["shape"]]
        if len(shape) != 4 or shape[-1] != 3:
            raise KsegError(f"{path} takes input of shape {shape}; a kseg segmenter takes (1, H, W, 3) RGB")
        self.input_size = (shape[1], shape[2])
        self.num_classes = int(self.out["shape"][-1])
        self.input_dtype = np.dtype(self.inp["dtype"])
        self.output_dtype = np.dtype(self.out["dtype"])

    def logits(self, rgb_resized: np.ndarray) -> np.ndarray:
        x = rgb_resized[None]
        if self.input_dtype in (np.uint8, np.int8):
            scale, zero = self.inp["quantization"]
            if self.input_dtype == np.uint8 and abs(scale - 1.0) < 1e-6 and zero == 0:
                x = x.astype(np.uint8, copy=False)
            else:
                info = np.iinfo(self.input_dtype)
                q = np.round(x.astype(np.float32) / scale + zero)
                x = np.clip(q, info.min, info.max).astype(self.input_dtype)
        else:
            x = x.astype(self.input_dtype)
        self.interpreter.set_tensor(self.inp["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])[0]
        if self.output_dtype in (np.uint8, np.int8):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32, copy=False)


class _KerasBackend:
    def __init__(self, model, fallback_size=None):
        self.model = model
        h, w = model.input_shape[1:3]
        if h is None or w is None:
            if fallback_size is None:
                raise KsegError(
                    "the .keras model has a free input size; give its model card an input size "
                    "(input.shape) or export it with --size"
                )
            h, w = fallback_size
        self.input_size = (int(h), int(w))
        self.num_classes = int(model.output_shape[-1])

    def logits(self, rgb_resized: np.ndarray) -> np.ndarray:
        y = self.model(rgb_resized[None].astype(np.float32), training=False)
        return np.asarray(y)[0].astype(np.float32)


class Segmenter:
    """A segmentation model ready for frames: ``.tflite`` (ai-edge-litert) or ``.keras``.

    Args:
        path: a ``.tflite`` or ``.keras`` file; its model card ``NAME.json`` (or the run's
            ``classes.json``) is read when present. A loaded Keras model may be passed instead.
        num_threads: interpreter threads (``None``: the interpreter's default). XNNPACK is used.
        card: a model card dict to use instead of the file beside the model.
        flip: horizontal-flip test-time augmentation: each frame is run twice, as is and
            mirrored, and the two class-probability maps are averaged (the mirrored one mirrored
            back; classes named in the card's ``flip_pairs``, e.g. ``[[14, 15]]`` for left and
            right arm, trade places). Twice the model time; a steadier, more symmetric map
            (README "Test-time flip" has what it gains on the shipped models).

    Attributes:
        class_names: tuple of class names (from the card; ``class_0``… without one).
        num_classes: number of classes (2 for a model with one sigmoid output channel, whose
            ``binary_sigmoid`` is then True).
        person_index: index of the ``person`` class (or ``foreground``/the only non-background
            class of a two-class model), else ``None``.
        input_size: the model's ``(H, W)``.
        card: the model card dict (may be empty).
        timings_ms: for a ``Segmenter.fastest`` choice, each candidate's median ms per invoke; else None.

    Example:
        seg = Segmenter("exports/people_int8.tflite", num_threads=2)
        mask = seg.segment(frame_rgb).category_mask
        seg = Segmenter("exports/parsing.tflite", flip=True)   # twice the time, better hair
        seg = Segmenter.fastest(["exports/portrait-selfie-fast.tflite",        # int8 or float16:
                                 "exports/portrait-selfie-fast-float16.tflite"])  # whichever is faster here
    """

    def __init__(self, path, num_threads: int | None = None, card: dict | None = None, flip: bool = False):
        if hasattr(path, "input_shape") and hasattr(path, "output_shape"):
            self.path = None
            self.card = dict(card or {})
            self._backend = _KerasBackend(path, self._card_size())
        else:
            p = Path(path)
            self.path = p
            if not p.is_file():
                raise KsegError(f"model file {p} not found; give the path of a .tflite or .keras file")
            self.card = dict(card) if card is not None else (read_card(p) or {})
            if p.suffix == ".keras":
                from kseg.models.saving import load_keras_file  # Keras only for .keras files

                self._backend = _KerasBackend(load_keras_file(p), self._card_size())
            else:
                self._backend = _TFLiteBackend(p, num_threads)
        self.input_size = self._backend.input_size
        # one output channel is a sigmoid map (U²-Net's saliency): foreground vs background
        self.binary_sigmoid = self._backend.num_classes == 1
        self.num_classes = 2 if self.binary_sigmoid else self._backend.num_classes
        self._check_card()
        default = ["background", "foreground"] if self.binary_sigmoid else [f"class_{i}" for i in range(self.num_classes)]
        names = self.card.get("class_names") or default
        self.class_names = tuple(names)
        self.colors = self.card.get("colors")
        self.output_kind = (self.card.get("output") or {}).get("meaning", "logits")
        self.person_index = self._person_index()
        self.flip = bool(flip)
        self.timings_ms = None  # set by Segmenter.fastest
        self._flip_perm = flip_permutation(self.num_classes, self.card.get("flip_pairs"),
                                           f"{card_path(self.path) if self.path is not None else 'the model card'}: flip_pairs")

    def _card_size(self):
        shape = (self.card.get("input") or {}).get("shape")
        return (int(shape[1]), int(shape[2])) if shape and len(shape) == 4 else None

    def _check_card(self):
        where = card_path(self.path) if self.path is not None else "the model card"
        names = self.card.get("class_names")
        if names is not None and len(names) != self.num_classes:
            raise KsegError(
                f"{where} lists {len(names)} classes but the model outputs {self.num_classes}; "
                "the card belongs to another model — re-export it"
            )
        size = self._card_size()
        if size is not None and tuple(size) != tuple(self.input_size):
            raise KsegError(
                f"{where} says input {size[0]}×{size[1]} but the model takes "
                f"{self.input_size[0]}×{self.input_size[1]}; the card belongs to another model — re-export it"
            )

    def _person_index(self):
        idx = self.card.get("person_index")
        if idx is not None:
            return int(idx)
        lowered = [n.lower() for n in self.class_names]
        for key in ("person", "foreground", "people", "human"):
            if key in lowered:
                return lowered.index(key)
        return 1 if self.num_classes == 2 else None

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """Raw model output for one frame, at the model's resolution ``(h, w, C)`` float32 (``C = 1`` for a sigmoid model).

        With ``flip``, the output whose probabilities are the flip average: log-probabilities of a
        softmax model, the logit of the mean foreground probability of a sigmoid one, the mean
        itself for a model whose output already is probabilities.
        """
        self._check_image(rgb)
        if not self.flip:
            return self._backend.logits(_resize(rgb, self.input_size))
        p = self._model_probs(rgb)
        if self.binary_sigmoid:
            p = p[..., 1:]
            if self.output_kind == "probabilities":
                return p
            p = np.clip(p, 1e-7, 1.0 - 1e-7)
            return np.log(p / (1.0 - p)).astype(np.float32)
        if self.output_kind == "probabilities":
            return p
        return np.log(np.maximum(p, 1e-12)).astype(np.float32)

    def _probs(self, y: np.ndarray) -> np.ndarray:
        """Model output → class probabilities ``(h, w, C)``, two channels for a sigmoid model."""
        if self.binary_sigmoid:
            p = y if self.output_kind == "probabilities" else (0.5 * (1.0 + np.tanh(0.5 * y))).astype(np.float32)  # sigmoid, no overflow
            return np.concatenate([1.0 - p, p], axis=-1)
        return y if self.output_kind == "probabilities" else _softmax(y)

    def _model_probs(self, rgb: np.ndarray) -> np.ndarray:
        """Class probabilities at the model's resolution, flip-averaged with ``flip``."""
        x = _resize(rgb, self.input_size)
        p = self._probs(self._backend.logits(x))
        if self.flip:
            mirrored = self._probs(self._backend.logits(np.ascontiguousarray(x[:, ::-1])))
            p = flip_average(p, mirrored, self._flip_perm)
        return p

    def segment(self, rgb: np.ndarray) -> SegmentationResult:
        """Segment one RGB frame.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB (not BGR: convert at the camera boundary).

        Returns:
            ``SegmentationResult`` with ``category_mask`` ``(H, W)`` uint8 and ``confidence``
            ``(H, W, C)`` float32 probabilities, both at the frame's resolution.

        Raises:
            KsegError: not a uint8 ``H×W×3`` array.
        """
        self._check_image(rgb)
        probs = _upsample(self._model_probs(rgb), rgb.shape[:2]).astype(np.float32, copy=False)
        mask = probs.argmax(axis=-1).astype(np.uint8)
        return SegmentationResult(category_mask=mask, confidence=probs)

    __call__ = segment

    @classmethod
    def fastest(cls, paths, num_threads: int | None = None, flip: bool = False, rounds: int = 5,
                invokes: int = 4, tolerance: float = 0.05) -> Segmenter:
        """The fastest of several exports of one model on this CPU, measured now.

        Which file is fastest depends on the CPU: int8 kernels win where the CPU has int8 dot
        products (AVX-512 VNNI, AVX-VNNI, ARM dotprod), float wins on x86 with AVX2 only
        (README, "Shipped models"). Each file is loaded, warmed up with two invokes, and its model
        step (invoke, dequantize) timed in ``rounds`` interleaved rounds of ``invokes`` on one
        synthetic 640×480 frame resized to its input; the file with the lowest median is kept, the
        first given among those within ``tolerance`` of it (list the one you prefer first).
        ``2 + rounds · invokes`` invokes per file: about a quarter of a second for two 5 ms models.

        Args:
            paths: ``.tflite`` files (or ``.keras``) of one model: the same classes in the same order.
            num_threads: interpreter threads, as for ``Segmenter``; time with the threads you will run.
            flip: as for ``Segmenter`` (the kept one flips; timing is of one invoke either way).
            rounds: interleaved timing rounds (default 5).
            invokes: timed invokes per file per round (default 4).
            tolerance: relative margin within which the earlier file is preferred (default 0.05).

        Returns:
            The kept ``Segmenter``; its ``timings_ms`` maps each path (as given) to its median ms.

        Raises:
            KsegError: no path, a file that cannot be loaded, or files whose classes differ.

        Example:
            seg = Segmenter.fastest(["exports/portrait-selfie-fast.tflite",
                                     "exports/portrait-selfie-fast-float16.tflite"], num_threads=2)
            print(seg.path, seg.timings_ms)
        """
        paths = list(paths)
        if not paths:
            raise KsegError("Segmenter.fastest: give at least one model file")
        if rounds < 1 or invokes < 1:
            raise KsegError(f"Segmenter.fastest: rounds {rounds} and invokes {invokes} must be at least 1")
        segs = [cls(p, num_threads=num_threads, flip=flip) for p in paths]
        first = segs[0]
        for p, s in zip(paths[1:], segs[1:]):
            if s.class_names != first.class_names:
                raise KsegError(f"{p} has classes {list(s.class_names)} but {paths[0]} has {list(first.class_names)}; "
                                "Segmenter.fastest chooses among exports of one model")
        frame = _timing_frame()
        inputs = [_resize(frame, s.input_size) for s in segs]
        for s, x in zip(segs, inputs):  # warm-up: first invokes set up XNNPACK's packed weights
            for _ in range(2):
                s._backend.logits(x)
        times = [[] for _ in segs]
        for _ in range(rounds):
            for i, (s, x) in enumerate(zip(segs, inputs)):
                for _ in range(invokes):
                    t0 = time.perf_counter()
                    s._backend.logits(x)
                    times[i].append(time.perf_counter() - t0)
        medians = [1000.0 * float(np.median(t)) for t in times]
        chosen = segs[pick_fastest(medians, tolerance)]
        chosen.timings_ms = dict(zip(paths, medians))
        return chosen

    @staticmethod
    def _check_image(rgb):
        if not isinstance(rgb, np.ndarray):
            raise KsegError(f"segment() takes a numpy H×W×3 uint8 RGB array, got {type(rgb).__name__}")
        if rgb.dtype != np.uint8:
            raise KsegError(
                f"image dtype is {rgb.dtype}; segment() takes uint8 RGB 0..255 "
                "(use np.clip(x, 0, 255).astype(np.uint8) for a float image)"
            )
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise KsegError(
                f"image shape is {rgb.shape}; segment() takes H×W×3 RGB "
                "(drop an alpha channel with rgb[..., :3]; convert grey with np.repeat(g[..., None], 3, -1))"
            )
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise KsegError(f"image shape is {rgb.shape}; it has no pixels")
