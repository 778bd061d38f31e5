"""Instance segmentation (Mask R-CNN) on LiteRT: load, detect, paste masks; no Keras for ``.tflite``.

One loader for every form an instance model comes in (``load_instance_model``: an exported
instance ``.tflite`` with its model card, run by ``TFLiteMaskRCNN`` on ai-edge-litert; or, with
Keras imported only then, a ``.keras`` ``MaskRCNN`` or a ``.weights.h5`` file with the YAML config
it was trained with). ``detect_instances`` letterboxes an RGB frame, runs the model and turns its
padded detections into boxes and full-resolution masks (``paste_masks``, numpy and OpenCV).
``model_kind`` tells a semantic model file from an instance one without loading it.

Example:
    from kseg.runtime import detect_instances, load_instance_model
    m = load_instance_model("exports/person-instances.tflite")
    people = detect_instances(m.model, frame_rgb)          # boxes, scores, classes, masks
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.runtime.cards import card_task, check_tflite_file, read_card

TASK = "instance_segmentation"
INSTANCE_HINT = ("an instance segmentation model (Mask R-CNN): a .keras MaskRCNN, its .weights.h5 with "
                 "--config configs/mask_rcnn_*.yaml, or an exported instance .tflite such as "
                 "exports/person-instances.tflite")
OUTPUTS = ("boxes", "scores", "classes", "masks", "num_detections")


# --------------------------------------------------------------------------------------
# which kind of model


def _keras_class_name(p: Path) -> str | None:
    try:
        with zipfile.ZipFile(p) as z:
            return json.loads(z.read("config.json")).get("class_name")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None


def _tflite_outputs(p: Path) -> int | None:
    try:
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAsModel(p.read_bytes(), 0)
        return int(model.Subgraphs(0).OutputsLength())
    except Exception:  # a damaged flatbuffer: the loader reports it
        return None


def model_kind(path) -> str | None:
    """``"instance"`` or ``"semantic"`` for a model file, ``None`` when it cannot be told.

    ``.weights.h5``/``.h5`` files are Mask R-CNN weights (semantic models are saved whole as
    ``.keras``); a ``.keras`` file is an instance model when its top class is ``MaskRCNN``; a
    ``.tflite`` by its model card's ``task``, else by its outputs (5 for Mask R-CNN, 1 for a
    segmenter).

    Example:
        model_kind("exports/portrait.tflite")   # "semantic"
    """
    p = Path(path)
    if p.name.endswith(".h5"):
        return "instance"
    if not p.is_file():
        return None
    if p.suffix == ".keras":
        name = _keras_class_name(p)
        return None if name is None else ("instance" if name == "MaskRCNN" else "semantic")
    if p.suffix == ".tflite":
        task = str(card_task(p) or "")
        if task:
            return "instance" if "instance" in task else "semantic"
        n = _tflite_outputs(p)
        return None if n is None else ("instance" if n == 5 else "semantic")
    return None


# --------------------------------------------------------------------------------------
# the LiteRT runner


class TFLiteMaskRCNN:
    """Run an exported Mask R-CNN with ai-edge-litert: ``detect(image)`` → the Keras output dict.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads.
    """

    def __init__(self, path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.image_shape = tuple(int(v) for v in self.input["shape"][1:])
        runner = self.interpreter.get_signature_runner()
        self._runner = runner
        self._key = next(iter(runner.get_input_details()))

    def detect(self, image):
        """``image``: ``(H, W, 3)`` letterboxed RGB (uint8 or float, 0..255) at the model's input size.

        A float32 input is fed as float32; an integer input (a full-int8 export takes uint8) is
        quantized with the input tensor's scale and zero point (1 and 0 for kseg's int8 exports,
        so RGB bytes go in unchanged).
        """
        dtype = np.dtype(self.input["dtype"])
        x = np.asarray(image)[None]
        if dtype.kind in "iu":
            scale, zero = self.input["quantization"]
            if scale and (scale != 1.0 or zero != 0):
                x = np.round(np.asarray(x, np.float32) / scale + zero)
            info = np.iinfo(dtype)
            x = np.clip(x, info.min, info.max).astype(dtype)
        else:
            x = np.asarray(x, dtype)
        out = self._runner(**{self._key: x})
        return {k: np.asarray(out[k])[0] for k in OUTPUTS}

    def latency(self, runs=10, warmup=2):
        """Median seconds per ``detect`` on a zero image."""
        x = np.zeros(self.input["shape"][1:], np.float32)
        times = []
        for i in range(warmup + runs):
            t = time.perf_counter()
            self.detect(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
        return float(np.median(times))


# --------------------------------------------------------------------------------------
# loading


@dataclass
class InstanceModel:
    """A loaded instance model: ``model`` is a ``MaskRCNN`` or a ``TFLiteMaskRCNN``.

    Attributes:
        model: what ``detect_instances`` takes.
        class_names: names of classes 0..K (0 = background); ``None`` when unknown.
        path: the file it came from.
        format: ``"keras"`` or ``"tflite"``.
        card: the model card (TFLite) or ``{}``.
        config: the YAML config (weights files) or ``{}``.
    """

    model: object
    class_names: tuple | None
    path: Path
    format: str
    card: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.model.image_shape[0])

    def raw(self, boxed) -> dict:
        """Padded detections of one letterboxed ``(S, S, 3)`` image (the model's output dict)."""
        if self.format == "tflite":
            return self.model.detect(boxed)
        out = self.model.predict_on_batch(np.asarray(boxed, np.float32)[None])
        return {k: np.asarray(v)[0] for k, v in out.items()}


def _semantic_error(p: Path, what: str) -> KsegError:
    return KsegError(f"{p} is a semantic segmentation model ({what}); this needs {INSTANCE_HINT}")


def _load_config(config) -> dict:
    from kseg.config import read_yaml

    c = Path(config)
    cfg = read_yaml(c, "pass the YAML the model was trained with, e.g. configs/mask_rcnn_person_lite0.yaml")
    if not isinstance(cfg.get("model"), dict):
        raise KsegError(f"config {c} has no model: section of MaskRCNN arguments; is it a configs/mask_rcnn_*.yaml?")
    return cfg


def build_from_config(cfg: dict):
    """A ``MaskRCNN`` from a ``configs/mask_rcnn_*.yaml`` dict (no encoder weights loaded)."""
    from kseg.models.mask_rcnn import MaskRCNN

    kw = dict(cfg["model"])
    kw["pretrained"] = False
    try:
        return MaskRCNN(**kw)
    except TypeError as e:
        raise KsegError(f"the config's model: section does not fit MaskRCNN ({e})") from None


def load_instance_model(path, config=None, num_threads: int = 2) -> InstanceModel:
    """Load a Mask R-CNN from any of its file forms, or fail in one line.

    Args:
        path: ``.keras`` (a saved ``MaskRCNN``), ``.weights.h5`` (with ``config``) or an exported
            ``.tflite`` (its card ``NAME.json`` gives the class names).
        config: the YAML config a weights file was trained with.
        num_threads: TFLite interpreter threads.

    Returns:
        An ``InstanceModel``.

    Raises:
        KsegError: a missing or truncated file, a semantic model, a weights file without its
            config or with another config's architecture.

    Example:
        m = load_instance_model("runs/mask_rcnn_person_lite0/last.weights.h5",
                                config="configs/mask_rcnn_person_lite0.yaml")
    """
    p = Path(path)
    if not p.is_file():
        raise KsegError(f"model file {p} not found; give {INSTANCE_HINT}")
    cfg = _load_config(config) if config else {}
    names = tuple(cfg["class_names"]) if cfg.get("class_names") else None
    if p.name.endswith(".h5"):
        if not config:
            raise KsegError(f"{p} holds weights only; pass --config with the YAML it was trained with, "
                            "e.g. --config configs/mask_rcnn_person_lite0.yaml")
        model = build_from_config(cfg)
        try:
            model.load_weights(p)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise KsegError(f"cannot load weights {p} into the model of {config}: {first}; is the file complete "
                            "and is this the config it was trained with?") from None
        return InstanceModel(model, names, p, "keras", {}, cfg)
    if p.suffix == ".keras":
        name = _keras_class_name(p)
        if name is None:
            raise KsegError(f"{p} is not a complete .keras file (no readable config.json); copy or save it again")
        if name != "MaskRCNN":
            raise _semantic_error(p, name)
        from kseg.models.saving import load_keras_file

        model = load_keras_file(p)
        classes = p.with_name("classes.json")
        if names is None and classes.is_file():
            names = tuple(json.loads(classes.read_text()).get("class_names") or ()) or None
        return InstanceModel(model, names, p, "keras", {}, cfg)
    if p.suffix == ".tflite":
        check_tflite_file(p)  # missing TFL3 identifier or truncated: one line
        card = read_card(p) or {}
        if model_kind(p) == "semantic":
            raise _semantic_error(p, f"task {card.get('task') or 'semantic_segmentation'}")
        try:
            runner = TFLiteMaskRCNN(p, num_threads=num_threads)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise KsegError(f"cannot load {p}: {first}; the file is damaged — export it again") from None
        names = tuple(card["class_names"]) if card.get("class_names") else names
        return InstanceModel(runner, names, p, "tflite", card, cfg)
    raise KsegError(f"{p} is not a model file kseg knows; give {INSTANCE_HINT}")


# --------------------------------------------------------------------------------------
# post-processing (numpy)


def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Paste box-relative mask probabilities into full images.

    Each ``m × m`` mask covers its box exactly: image pixel centre ``(x + 0.5, y + 0.5)``
    samples the mask bilinearly at ``((x + 0.5 - x1) / (x2 - x1)) · m - 0.5`` (and likewise in
    y); outside the box the mask is 0.

    Args:
        masks: ``(D, m, m)`` probabilities.
        boxes: ``(D, 4)`` ``(x1, y1, x2, y2)`` in the output image's pixels.
        image_size: ``(H, W)`` of the output.
        threshold: probability at or above which a pixel belongs to the instance (``None``
            keeps probabilities).

    Returns:
        ``(D, H, W)`` uint8 0/1 (float32 with ``threshold=None``).

    Example:
        full = paste_masks(det["masks"][0, :n], det["boxes"][0, :n] / scale, image.shape[:2])
    """
    import cv2

    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = int(image_size[0]), int(image_size[1])
    out = np.zeros((len(masks), h, w), np.float32)
    for k, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), w)
        r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), h)
        if c1 <= c0 or r1 <= r0:
            continue
        mh, mw = m.shape
        u = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - x1) / bw) * mw - 0.5
        v = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - y1) / bh) * mh - 0.5
        map_x = np.broadcast_to(u[None, :], (r1 - r0, c1 - c0)).astype(np.float32)
        map_y = np.broadcast_to(v[:, None], (r1 - r0, c1 - c0)).astype(np.float32)
        out[k, r0:r1, c0:c1] = cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if threshold is None:
        return out
    return (out >= threshold).astype(np.uint8)


def detect_instances(model, image, min_score=0.5, threshold=0.5):
    """Instances in one RGB image, at the image's own resolution.

    Args:
        model: a ``MaskRCNN`` or a ``TFLiteMaskRCNN`` (square input).
        image: ``(H, W, 3)`` RGB uint8.
        min_score: detections scoring below this are dropped.
        threshold: mask probability threshold.

    Returns:
        dict ``boxes`` ``(D, 4)`` (x1, y1, x2, y2 in image pixels), ``scores`` ``(D,)``,
        ``classes`` ``(D,)`` and ``masks`` ``(D, H, W)`` uint8 0/1, best score first.

    Example:
        people = detect_instances(TFLiteMaskRCNN("person.tflite"), frame_rgb)
        largest = people["masks"][np.argmax(people["masks"].sum((1, 2)))]   # keep only them sharp
    """
    from kseg.data.instances import letterbox

    size = model.image_shape[0]
    boxed, scale = letterbox(np.asarray(image), size)
    if hasattr(model, "detect"):
        det = model.detect(boxed)
    else:
        det = {k: np.asarray(v)[0] for k, v in model.predict_on_batch(boxed[None].astype(np.float32)).items()}
    n = int(det["num_detections"])
    keep = np.nonzero(det["scores"][:n] >= min_score)[0]
    h, w = image.shape[:2]
    boxes = np.clip(det["boxes"][keep] / scale, 0, [w, h, w, h]).astype(np.float32)  # padding is off the image
    return {
        "boxes": boxes,
        "scores": det["scores"][keep],
        "classes": det["classes"][keep],
        "masks": paste_masks(det["masks"][keep], boxes, image.shape[:2], threshold),
    }
