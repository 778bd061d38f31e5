"""Mask R-CNN behind ``kseg evaluate``, ``kseg export`` and ``kseg benchmark``.

One loader for every form an instance model comes in (``load_instance_model``: a ``.keras``
``MaskRCNN``, a ``.weights.h5`` file with the YAML config it was trained with, or an exported
instance ``.tflite`` with its model card), COCO evaluation with pycocotools
(``evaluate_instances``), export with a model card (``export_instance_model``) and a benchmark
row (``benchmark_instance``). ``model_kind`` tells the CLI which branch a file belongs to.

Example:
    from kseg.models.mask_rcnn.commands import load_instance_model, evaluate_instances
    m = load_instance_model("exports/person-instances.tflite")
    report = evaluate_instances(m, "coco/coco-mini", categories=("person",))
    print(format_instance_report(report))
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path

TASK = "instance_segmentation"
CARD_FORMAT = "kseg-model-card/1"
STAT_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100")
INSTANCE_HINT = ("an instance segmentation model (Mask R-CNN): a .keras MaskRCNN, its .weights.h5 with "
                 "--config configs/mask_rcnn_*.yaml, or an exported instance .tflite such as "
                 "exports/person-instances.tflite")
LETTERBOX_RULE = ("scale the RGB image so its longer side is S (scale = S / max(h, w), INTER_AREA when "
                  "shrinking), put it at the top-left of an S×S canvas and pad right/bottom with 0; "
                  "divide the output boxes by scale for image pixels "
                  "(kseg.data.instances.letterbox, kseg.models.mask_rcnn.postprocess.detect_instances)")


# --------------------------------------------------------------------------------------
# which kind of model, and loading it


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
        card_file = p.with_suffix(".json")
        if card_file.is_file():
            try:
                task = str(json.loads(card_file.read_text()).get("task") or "")
            except ValueError:
                task = ""
            if task:
                return "instance" if "instance" in task else "semantic"
        n = _tflite_outputs(p)
        return None if n is None else ("instance" if n == 5 else "semantic")
    return None


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
        from kseg.runtime import _load_keras

        model = _load_keras(p)
        classes = p.with_name("classes.json")
        if names is None and classes.is_file():
            names = tuple(json.loads(classes.read_text()).get("class_names") or ()) or None
        return InstanceModel(model, names, p, "keras", {}, cfg)
    if p.suffix == ".tflite":
        from kseg.runtime import check_tflite_file, read_card

        check_tflite_file(p)  # missing TFL3 identifier or truncated: one line
        card = read_card(p) or {}
        if model_kind(p) == "semantic":
            raise _semantic_error(p, f"task {card.get('task') or 'semantic_segmentation'}")
        from kseg.models.mask_rcnn.export import TFLiteMaskRCNN

        try:
            runner = TFLiteMaskRCNN(p, num_threads=num_threads)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise KsegError(f"cannot load {p}: {first}; the file is damaged — export it again") from None
        names = tuple(card["class_names"]) if card.get("class_names") else names
        return InstanceModel(runner, names, p, "tflite", card, cfg)
    raise KsegError(f"{p} is not a model file kseg knows; give {INSTANCE_HINT}")


# --------------------------------------------------------------------------------------
# COCO data


@dataclass
class CocoImages:
    """The images of a COCO annotation file to evaluate on.

    Attributes:
        ann_file: the instances JSON.
        image_dir: where its ``file_name``s are.
        image_ids, image_paths: images holding at least one annotation of ``category_ids``.
        category_ids, category_names: the chosen COCO categories.
    """

    ann_file: Path
    image_dir: Path
    image_ids: list
    image_paths: list
    category_ids: list
    category_names: list

    def __len__(self):
        return len(self.image_ids)


def _guess_image_dir(ann: Path, split: str | None) -> Path | None:
    stem = ann.stem  # instances_val2017
    guess = stem.split("_", 1)[1] if "_" in stem else None
    names = [n for n in (guess, f"{split}2017" if split else None) if n]
    roots = [ann.parent.parent, ann.parent]
    for root in roots:
        for n in names:
            for cand in (root / n, root / "images" / n):
                if cand.is_dir():
                    return cand
    for root in roots:  # images beside the JSON
        if (root / "images").is_dir():
            return root / "images"
    return None


def open_coco_images(data, split: str | None = None, categories=None, images=None, limit=None) -> CocoImages:
    """The COCO images to evaluate on, from a COCO folder (and split) or an annotation JSON.

    Only images with at least one (crowd or not) annotation of the chosen categories are kept, as
    ``kseg.data.readers.open_instances`` does (the protocol of docs/mask_rcnn.md's figures).

    Args:
        data: a COCO folder (``annotations/instances_{split}2017.json`` + ``{split}2017/``),
            a name under the shared data folder (``coco/coco-mini``), or an instances JSON.
        split: ``"val"`` (default) or ``"train"`` for a folder.
        categories: category names (``None``: every category of the file).
        images: the image folder of an annotation JSON (default: guessed from its place).
        limit: only the first ``limit`` images (by image id).

    Example:
        imgs = open_coco_images("coco/coco-mini", "val", categories=("person",))
    """
    from kseg.config import resolve_data_path

    root = resolve_data_path(data)
    if root.is_dir():
        split = split or "val"
        ann = root / "annotations" / f"instances_{split}2017.json"
        if not ann.is_file():
            raise KsegError(f"COCO annotation file {ann} not found; give a COCO folder with "
                            f"annotations/instances_{split}2017.json or the annotation JSON itself")
    elif root.suffix == ".json":
        ann = root
        if not ann.is_file():
            raise KsegError(f"COCO annotation file {ann} not found; check the path")
    elif not root.exists():
        raise KsegError(f"data {data} not found; give a COCO folder (e.g. coco/coco-mini) or an instances JSON")
    else:
        raise KsegError(f"data {data} is neither a COCO folder nor a .json annotation file")
    try:
        doc = json.loads(ann.read_text())
    except ValueError as e:
        raise KsegError(f"COCO file {ann} is not valid JSON ({e}); re-copy it") from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
        raise KsegError(f"{ann} is not a COCO instances file (needs images, annotations and categories)")
    image_dir = Path(images) if images else _guess_image_dir(ann, split)
    if image_dir is None or not image_dir.is_dir():
        raise KsegError(f"image folder for {ann} not found (looked beside it for {ann.stem.split('_')[-1]}/ and images/); "
                        "pass --images DIR")
    by_name = {c["name"]: int(c["id"]) for c in doc["categories"]}
    if categories is None:
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        names, ids = [c["name"] for c in cats], [int(c["id"]) for c in cats]
    else:
        missing = [n for n in categories if n not in by_name]
        if missing:
            raise KsegError(f"COCO category {missing[0]!r} is not in {ann.name}; its categories include "
                            f"{', '.join(sorted(by_name)[:10])}")
        names, ids = list(categories), [by_name[n] for n in categories]
    wanted = set(ids)
    with_anns = {a["image_id"] for a in doc["annotations"] if a["category_id"] in wanted}
    infos = sorted((i for i in doc["images"] if i["id"] in with_anns), key=lambda i: i["id"])
    if limit:
        infos = infos[: int(limit)]
    if not infos:
        raise KsegError(f"no image of {ann.name} has an annotation of {', '.join(names)}")
    return CocoImages(ann, image_dir, [int(i["id"]) for i in infos], [str(image_dir / i["file_name"]) for i in infos],
                      ids, names)


# --------------------------------------------------------------------------------------
# evaluation


def _class_map(model: InstanceModel, coco: CocoImages, categories) -> dict:
    """Model class index → COCO category id, for the categories scored."""
    names = model.class_names
    if names is None:
        if categories is None:
            raise KsegError(f"the class names of {model.path} are unknown; pass --categories (e.g. person) "
                            "or a config with class_names")
        num = getattr(model.model, "num_classes", None)
        names = ("background", *categories) if num in (None, len(categories) + 1) else None
        if names is None:
            raise KsegError(f"{model.path} has {num - 1} object classes but --categories names {len(categories)}; "
                            "give the model's classes in a config (class_names)")
    by_name = dict(zip(coco.category_names, coco.category_ids))
    chosen = categories if categories is not None else [n for n in names[1:] if n in by_name]
    for n in chosen:
        if n not in names[1:]:
            raise KsegError(f"the model has no class {n!r} (its classes: {', '.join(names[1:])}); "
                            "choose --categories among them")
    if not chosen:
        raise KsegError(f"none of the model's classes ({', '.join(names[1:])}) is a category of {coco.ann_file.name}")
    return {names.index(n): by_name[n] for n in chosen}


def detect_coco(model: InstanceModel, coco: CocoImages, class_map: dict, threshold: float = 0.5, progress=None) -> list:
    """COCO-format results (RLE masks at each image's resolution) of a model on the images.

    Args:
        model: an ``InstanceModel``.
        coco: ``CocoImages``.
        class_map: model class index → COCO category id (other classes are dropped).
        threshold: mask probability threshold.
        progress: optional callable ``(done, total)``.

    Returns:
        list of ``{"image_id", "category_id", "bbox", "score", "segmentation"}``.
    """
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image
    from kseg.models.mask_rcnn.postprocess import coco_results, paste_masks

    size = model.input_size
    results = []
    for i, (image_id, path) in enumerate(zip(coco.image_ids, coco.image_paths)):
        if not Path(path).is_file():
            raise KsegError(f"image {path} of {coco.ann_file.name} not found; check --images")
        raw = read_image(path)
        boxed, scale = letterbox(raw, size)
        det = model.raw(boxed)
        n = int(det["num_detections"])
        cls = np.asarray(det["classes"][:n]).astype(int)
        keep = np.nonzero(np.isin(cls, list(class_map)))[0]
        h, w = raw.shape[:2]
        boxes = np.clip(np.asarray(det["boxes"])[keep] / scale, 0, [w, h, w, h]).astype(np.float32)
        masks = paste_masks(np.asarray(det["masks"])[keep], boxes, (h, w), threshold)
        cats = [class_map[int(c)] for c in cls[keep]]
        res = coco_results(image_id, boxes, np.asarray(det["scores"])[keep], np.arange(1, len(keep) + 1), masks, cats)
        results += res
        if progress:
            progress(i + 1, len(coco))
    return results


def evaluate_instances(model: InstanceModel, data, split=None, categories=None, images=None, limit=None,
                       results_path=None, threshold: float = 0.5, progress=None) -> dict:
    """Box and mask AP/AR of an instance model on COCO annotations, via pycocotools.

    The ground truth is the annotation file restricted to the evaluated images and categories
    (crowd regions kept: COCO ignores detections on them); AP is averaged over ``categories``.

    Args:
        model: an ``InstanceModel`` (``load_instance_model``).
        data: a COCO folder, a name under the shared data folder or an instances JSON.
        split: the split of a folder (default ``val``).
        categories: COCO category names to score (default: the model's classes found in the file).
        images: image folder of an annotation JSON.
        limit: only the first ``limit`` images.
        results_path: also write the detections in COCO result format here (atomically).
        threshold: mask probability threshold.
        progress: optional callable ``(done, total)``.

    Returns:
        dict ``model``, ``data``, ``images``, ``detections``, ``categories``, ``segm`` and
        ``bbox`` (``kseg.metrics.COCO_STATS`` keys), ``seconds_per_image``.

    Example:
        r = evaluate_instances(load_instance_model("exports/person-instances.tflite"), "coco/coco-tiny")
        r["segm"]["AP"]
    """
    from kseg.data.instances import subset_coco_json
    from kseg.models.mask_rcnn.postprocess import coco_eval

    coco = open_coco_images(data, split, categories, images, limit)
    class_map = _class_map(model, coco, categories)
    t0 = time.perf_counter()
    results = detect_coco(model, coco, class_map, threshold, progress)
    dt = time.perf_counter() - t0
    if results_path:
        with atomic_path(results_path) as tmp:
            Path(tmp).write_text(json.dumps(results))
    cat_ids = sorted(set(class_map.values()))
    with tempfile.TemporaryDirectory() as tmp:
        gt = subset_coco_json(coco.ann_file, Path(tmp) / "gt.json", cat_ids, coco.image_ids)
        segm = coco_eval(gt, results, "segm", cat_ids=cat_ids)
        bbox = coco_eval(gt, results, "bbox", cat_ids=cat_ids)
    names = {v: k for k, v in zip(coco.category_names, coco.category_ids)}
    return {
        "model": str(model.path),
        "format": model.format,
        "data": str(coco.ann_file),
        "images": len(coco),
        "detections": len(results),
        "categories": [names[c] for c in cat_ids],
        "segm": segm,
        "bbox": bbox,
        "seconds_per_image": dt / max(len(coco), 1),
    }


def format_instance_report(report: dict) -> str:
    """A markdown table of ``evaluate_instances``' report, for people."""
    cols = ("", *STAT_KEYS)
    lines = [f"{report['model']} on {report['data']}: {report['images']} images, {report['detections']} detections, "
             f"categories {', '.join(report['categories'])}",
             "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for kind, label in (("segm", "mask"), ("bbox", "box")):
        s = report[kind]
        lines.append("| " + " | ".join([label, *("n/a" if s[k] < 0 else f"{s[k]:.3f}" for k in STAT_KEYS)]) + " |")
    lines += ["", "pycocotools COCOeval (AP = AP@[.50:.95], AR = AR@100 unless named; -1/n/a: nothing of that size); "
                  f"{report['seconds_per_image']:.2f} s per image"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# export


WHAT_STAYS_FLOAT = {
    "float32": "everything",
    "float16": "all computation (float16 weights are expanded to float32 when the model is loaded); only the "
               "stored weights are float16",
    "dynamic": "activations, NMS, top-k, box decoding, RoIAlign sampling, softmax/sigmoid; convolution and "
               "fully connected weights are int8 (dynamic-range kernels quantize their inputs on the fly)",
}


def instance_card(tflite_path, model, quantization, class_names, **fields) -> dict:
    """The model card dict of an exported Mask R-CNN (see ``export_instance_model``)."""
    from ai_edge_litert.interpreter import Interpreter

    p = Path(tflite_path)
    interp = Interpreter(model_path=str(p))
    outs = {}
    runner = interp.get_signature_runner()
    details = runner.get_output_details()
    s = int(model.image_shape[0])
    meaning = {
        "boxes": "(1, D, 4) float32 x1, y1, x2, y2 in letterboxed input pixels (divide by the letterbox scale)",
        "scores": "(1, D) float32 class probability of each detection; 0 in padded slots",
        "classes": "(1, D) int32 class index into class_names (1..K); 0 in padded slots",
        "masks": "(1, D, 28, 28) float32 mask probability inside each box; paste into the box "
                 "(kseg.models.mask_rcnn.postprocess.paste_masks) and threshold at 0.5",
        "num_detections": "(1,) int32 number of valid detections, best score first",
    }
    for k, d in details.items():
        outs[k] = {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "meaning": meaning.get(k, "")}
    inp = next(iter(runner.get_input_details().values()))
    from kseg import __version__

    card = {
        "format": CARD_FORMAT,
        "name": p.stem,
        "task": TASK,
        "file": p.name,
        "size_bytes": p.stat().st_size,
        "model": {"architecture": "MaskRCNN", "encoder": getattr(model, "encoder", None),
                  "config": {k: v for k, v in model.get_config().items() if k != "name"}},
        "params": int(model.count_params()),
        "class_names": list(class_names),
        "quantization": quantization,
        "what_stays_float": WHAT_STAYS_FLOAT[quantization],
        "input": {
            "shape": [int(v) for v in inp["shape"]],
            "dtype": np.dtype(inp["dtype"]).name,
            "color": "RGB",
            "range": [0, 255],
            "normalization": "inside the model: feed RGB 0..255 as float32, no mean/std",
            "letterbox": LETTERBOX_RULE,
            "size": s,
        },
        "outputs": outs,
        "score_threshold": float(getattr(model, "score_threshold", 0.05)),
        "max_detections": int(getattr(model, "max_detections", 0)),
        "kseg_version": __version__,
    }
    card.update({k: v for k, v in fields.items() if v is not None})
    return card


def write_instance_card(tflite_path, card: dict) -> Path:
    """Write ``card`` as ``NAME.json`` beside the ``.tflite``, atomically."""
    path = Path(tflite_path).with_suffix(".json")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return path


def parity_images(data=None, config: dict | None = None, split="val", count=20, size=320) -> tuple[list, str]:
    """Letterboxed images for Keras/TFLite parity: from ``data`` (COCO folder/JSON) or the
    config's ``data.coco_subsets`` val images; returns ``(images, description)``."""
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image

    paths, where = [], None
    if data:
        coco = open_coco_images(data, split, None)
        paths, where = coco.image_paths, str(coco.ann_file)
    elif config and (config.get("data") or {}).get("coco_subsets"):
        for sub in config["data"]["coco_subsets"]:
            try:
                coco = open_coco_images(f"coco/{sub}", "val", ("person",))
            except KsegError:
                continue
            paths += [p for p in coco.image_paths if Path(p).name not in {Path(q).name for q in paths}]
        where = f"COCO val images of {', '.join(config['data']['coco_subsets'])}"
    if not paths or count <= 0:
        return [], ""
    idx = sorted(set(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int).tolist()))
    return [letterbox(read_image(paths[i]), size)[0] for i in idx], f"{len(idx)} images spread over {where}"


def export_instance_model(model: InstanceModel, out, quantization="float32", data=None, parity_count=20,
                          threads=2, licence=None, command=None, **card_fields) -> dict:
    """Export a Keras Mask R-CNN to ``out`` (``.tflite``) and write its model card beside it.

    The card records the task, class names, input size and letterbox rule, normalisation,
    every output and its meaning, quantization and what stays float, parity with the Keras
    model on ``parity_count`` images (matched detections, box/score differences, mask IoU),
    size, invoke latency, data licence and the command.

    Args:
        model: an ``InstanceModel`` holding a Keras ``MaskRCNN`` (a ``.tflite`` cannot be
            re-exported).
        out: output ``.tflite`` path (written atomically, like its card).
        quantization: ``"float32"``, ``"float16"`` or ``"dynamic"``.
        data: COCO folder/JSON whose images measure parity (default: the config's COCO val images).
        parity_count: images for parity (0: skip).
        threads: interpreter threads for the latency figure.
        licence: the training data's licence (default: the config's ``card: data_licence``).
        command: the command line to record.
        **card_fields: more card fields (``metrics``, ``limitations``, ``intended_use``...); the
            config's ``card:`` section supplies defaults.

    Returns:
        The card dict.

    Example:
        m = load_instance_model("runs/x/last.weights.h5", config="configs/mask_rcnn_person_lite0.yaml")
        export_instance_model(m, "exports/person-instances.tflite", "float16")
    """
    from kseg.models.mask_rcnn.export import TFLiteMaskRCNN, export_tflite, parity

    if model.format != "keras":
        raise KsegError(f"{model.path} is already a .tflite; export the .keras model or the .weights.h5 with its --config")
    if quantization not in WHAT_STAYS_FLOAT:
        default = " (kseg export's default, for semantic models)" if quantization == "int8" else ""
        raise KsegError(f"Mask R-CNN export --quantization {quantization}{default}: use float16 (the shipped "
                        "variant), float32 or dynamic; full-int8 and QAT are not offered for Mask R-CNN")
    out = Path(out)
    if out.suffix != ".tflite":
        raise KsegError(f"--out {out}: give a .tflite path, e.g. exports/person-instances.tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = model.class_names
    k = model.model.num_classes - 1
    if names is None and data:  # as kseg export does for semantic models: the data's classes
        cats = open_coco_images(data, "val", None).category_names
        names = ("background", *cats) if len(cats) == k else None
    names = names or ("background", *(f"class_{i}" for i in range(1, k + 1)))
    info = export_tflite(model.model, out, quantization=quantization)
    if info["non_builtin"]:
        raise KsegError(f"{out} uses non-builtin ops {info['non_builtin']}; the LiteRT runtime needs builtin ops only")
    runner = TFLiteMaskRCNN(out, num_threads=threads)
    images, where = parity_images(data, model.config, "val", parity_count, model.input_size)
    par = None
    if images:
        par = parity(model.model, runner, images)
        par["images_from"] = where
        # the detections an app keeps (score >= 0.5): NMS/threshold flips among weak ones excluded
        par["score_at_least_0.5"] = parity(model.model, runner, images, min_score=0.5)
    lat = runner.latency(runs=10, warmup=2)
    card_fields = {**(model.config.get("card") or {}), **card_fields}  # the config's notes for the card
    data_cfg = model.config.get("data") or {}
    training = card_fields.pop("training_data", None) or (
        ", ".join(f"coco/{s} train" for s in data_cfg.get("coco_subsets", [])) or None)
    card = instance_card(out, model.model, quantization, names,
                         ops=info["ops"], builtin_only=not info["non_builtin"], parity=par,
                         latency_ms={"invoke_median_ms": round(lat * 1000, 1), "threads": threads,
                                     "timed": "one detect() on a zero image (median of 10 after 2 warm-up)"},
                         training_data=training, data_licence=licence or card_fields.pop("data_licence", None),
                         source=str(model.path),
                         command=command or " ".join(["kseg", *sys.argv[1:]]), **card_fields)
    write_instance_card(out, card)
    return card


# --------------------------------------------------------------------------------------
# benchmark


def benchmark_instance(path, threads=2, runs=50, warmup=10, data=None, split=None, categories=None, limit=None,
                       config=None, clock=None) -> dict:
    """A ``kseg benchmark`` row for an instance model (``.tflite`` or ``.keras``).

    Latency is one forward pass on a zero image (``.tflite``: one signature-runner call,
    i.e. invoke plus copying the small outputs; ``.keras``: ``predict_on_batch``), median and p90 after warm-up; with ``data`` (COCO) also
    pycocotools mask and box AP (``mask_ap``, ``box_ap``, ``mask_ap50``).

    Returns:
        dict with the keys of ``kseg.benchmark.benchmark_model``'s rows (``miou`` etc. ``None``)
        plus ``task``, ``mask_ap``, ``box_ap``, ``mask_ap50``, ``num_images``.
    """
    from kseg.benchmark import _nonbuiltin, latency_stats, time_calls

    m = load_instance_model(path, config=config, num_threads=threads)
    p = Path(path)
    clock = clock or time.perf_counter
    s = m.input_size
    row = {
        "model": p.stem if not p.name.endswith(".weights.h5") else p.name[: -len(".weights.h5")],
        "path": str(p), "format": m.format, "task": TASK,
        "quantization": m.card.get("quantization") or ("float32" if m.format == "keras" else None),
        "size_mb": p.stat().st_size / 1e6,
        "params": m.card.get("params") or (int(m.model.count_params()) if m.format == "keras" else None),
        "input_size": [s, s], "num_classes": len(m.class_names) if m.class_names else None,
        "class_names": list(m.class_names) if m.class_names else None, "person_index": None,
        "input_dtype": "float32", "output_dtype": "float32",
    }
    if m.format == "tflite":
        from kseg.runtime import tflite_ops

        ops = sorted(set(tflite_ops(p)))
        bad = _nonbuiltin(ops)
        row.update({"ops": ops, "builtin_only": not bad, "nonbuiltin_ops": bad})
        x = np.zeros((s, s, 3), np.float32)
        fn, timed = (lambda: m.model.detect(x)), "one signature-runner call: set input, invoke, read the 5 outputs (XNNPACK)"
    else:
        row.update({"ops": None, "builtin_only": None, "nonbuiltin_ops": None})
        x = np.zeros((1, s, s, 3), np.float32)
        fn, timed = (lambda: m.model.predict_on_batch(x)), "Keras predict_on_batch (batch 1)"
    lat = latency_stats(time_calls(fn, runs, warmup, clock))
    lat.update({"threads": threads, "timed": timed, "warmup": warmup})
    row["latency"] = lat
    row["median_ms"], row["p90_ms"] = lat["median_ms"], lat["p90_ms"]
    row.update({"miou": None, "person_iou": None, "pixel_accuracy": None, "per_class_iou": None,
                "num_images": None, "skipped": None, "mask_ap": None, "box_ap": None, "mask_ap50": None})
    if data is not None:
        r = evaluate_instances(m, data, split=split, categories=categories, limit=limit)
        row.update({"mask_ap": r["segm"]["AP"], "mask_ap50": r["segm"]["AP50"], "box_ap": r["bbox"]["AP"],
                    "num_images": r["images"], "data": r["data"], "coco": {"segm": r["segm"], "bbox": r["bbox"]}})
    return row
