"""Mask R-CNN export: the whole inference graph to ``.tflite`` with its model card and parity.

The instance counterpart of ``kseg.export``. ``export_tflite`` converts the graph as it runs in
Keras: encoder, FPN, RPN, top-k, box decoding, NMS (NON_MAX_SUPPRESSION_V5 with a padded
output), multi-level RoIAlign (GATHER and arithmetic), box and mask heads, per-class NMS
(float32, float16 weights or dynamic-range; the converter is first asked for builtin ops
only, and only if that fails for TF "select" ops too, which ``export_tflite`` then reports).
``export_instance_model`` adds the model card (task, classes, letterbox rule, outputs and
their meaning, what stays float, parity with Keras, latency, licence, command); ``parity``
compares the Keras model with its export through ``kseg.runtime.TFLiteMaskRCNN``.

Example:
    from kseg.runtime import load_instance_model
    from kseg.export_instances import export_instance_model
    m = load_instance_model("runs/x/last.weights.h5", config="configs/mask_rcnn_person_lite0.yaml")
    card = export_instance_model(m, "exports/person-instances.tflite", "float16")
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path
from kseg.runtime.cards import CARD_FORMAT, card_path, nonbuiltin_ops, tflite_ops
from kseg.runtime.instances import TASK, InstanceModel, TFLiteMaskRCNN, paste_masks

LETTERBOX_RULE = ("scale the RGB image so its longer side is S (scale = S / max(h, w), INTER_AREA when "
                  "shrinking), put it at the top-left of an S×S canvas and pad right/bottom with 0; "
                  "divide the output boxes by scale for image pixels "
                  "(kseg.data.instances.letterbox, kseg.runtime.detect_instances)")

WHAT_STAYS_FLOAT = {
    "float32": "everything",
    "float16": "all computation (float16 weights are expanded to float32 when the model is loaded); only the "
               "stored weights are float16",
    "dynamic": "activations, NMS, top-k, box decoding, RoIAlign sampling, softmax/sigmoid; convolution and "
               "fully connected weights are int8 (dynamic-range kernels quantize their inputs on the fly)",
    "int8": "int8 (post-training, uint8 input): the encoder, FPN and RPN head, the box head and the mask head. "
            "float32 between them: proposal top-k, box decoding and clipping, both NMS (NON_MAX_SUPPRESSION_V5 "
            "has no integer kernel), RoIAlign's sampling (gathers and bilinear weights), softmax and sigmoid "
            "(listed under float_ops): one int8 scale cannot hold box coordinates, the per-class NMS offsets and "
            "RoIAlign's weights at once; quantizing them too gave zero-width boxes and no detections",
}
# the sub-models of MaskRCNN that an int8 export quantizes; every op outside them stays float32
INT8_PARTS = ("backbone", "box_head", "mask_head")


# --------------------------------------------------------------------------------------
# conversion


def export_tflite(model, path, quantization="float32", allow_select_ops=False, representative_images=None):
    """Convert a ``MaskRCNN``'s inference (batch 1) to a ``.tflite`` file.

    Args:
        model: a ``MaskRCNN``.
        path: output ``.tflite`` (written atomically).
        quantization: ``"float32"``, ``"float16"`` (weights stored as float16), ``"dynamic"``
            (weights int8, activations float: convolutions and fully connected layers compute
            with int8 weights; NMS, RoIAlign and box arithmetic stay float32) or ``"int8"``
            (post-training integer quantization with a uint8 input of the encoder, FPN, RPN
            head, box head and mask head; the ops between them stay float32: ``WHAT_STAYS_FLOAT``).
        allow_select_ops: if the builtin-only conversion fails, retry with TF select (Flex) ops.
        representative_images: ``int8`` only: ``(H, W, 3)`` images at the input size (RGB
            0..255, e.g. letterboxed val images) that calibrate the activation ranges.

    Returns:
        dict ``path``, ``size_mb``, ``ops`` (sorted distinct operator names), ``non_builtin``.
    """
    import tensorflow as tf

    h, w = model.image_shape[:2]
    spec = tf.TensorSpec((1, h, w, 3), tf.float32, name="image")
    with tempfile.TemporaryDirectory() as tmp:
        saved = str(Path(tmp) / "saved_model")
        model.export(saved, format="tf_saved_model", input_signature=[spec], verbose=False)
        if quantization not in ("float32", "float16", "dynamic", "int8"):
            raise KsegError(f"MaskRCNN export quantization={quantization!r}: use float32, float16, dynamic or int8")
        calib = [np.asarray(im, np.float32)[None] for im in (representative_images or [])]
        if quantization == "int8" and not calib:
            raise KsegError("MaskRCNN int8 export needs representative_images (a few letterboxed RGB images "
                            f"of {h}x{w}) to calibrate the activation ranges")

        def converter():
            c = tf.lite.TFLiteConverter.from_saved_model(saved)
            if quantization != "float32":
                c.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                c.target_spec.supported_types = [tf.float16]
            return c

        conv = converter()
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flat = _int8_parts(conv, calib, model) if quantization == "int8" else conv.convert()
        except Exception as e:
            if not allow_select_ops:
                first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0])
                raise KsegError(f"MaskRCNN TFLite conversion with builtin ops failed: {first.strip()[:200]}; "
                                "pass allow_select_ops=True to accept TF select ops") from None
            conv = converter()
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            flat = conv.convert()
    with atomic_path(path) as tmp_path:
        Path(tmp_path).write_bytes(flat)
    ops = sorted(set(tflite_ops(path)))
    return {
        "path": str(path),
        "quantization": quantization,
        "size_mb": round(Path(path).stat().st_size / 2**20, 2),
        "ops": ops,
        "non_builtin": nonbuiltin_ops(ops),
    }


def float_ops(path) -> list:
    """Operator names of a ``.tflite`` file that compute in float32 (a float32 input or output),
    QUANTIZE/DEQUANTIZE left out: for an ``int8`` export, what stays float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    types = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    out = set()
    for op in it._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        tensors = [int(i) for i in list(op["inputs"]) + list(op["outputs"]) if int(i) >= 0]
        if any(types.get(i) == "float32" for i in tensors):
            out.add(op["op_name"])
    return sorted(out)


def calibration_images(config: dict | None, count=32, size=320, data=None) -> list:
    """Letterboxed *train* images to calibrate an ``int8`` export (evenly spread; val images are
    never used): the train split of ``data`` (a COCO folder) when it has one, else the COCO train
    images with persons of the config's ``data.coco_subsets``."""
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image
    from kseg.evaluate_instances import open_coco_images

    sources = [(data, None)] if data else []
    sources += [(f"coco/{sub}", ("person",)) for sub in ((config or {}).get("data") or {}).get("coco_subsets", [])]
    paths = []
    for src, cats in sources:
        try:
            coco = open_coco_images(src, "train", cats)
        except KsegError:
            continue
        if Path(coco.ann_file).name.startswith("instances_val"):
            continue  # a folder without a train split: its val images are for evaluation
        paths += [p for p in coco.image_paths if Path(p).name not in {Path(q).name for q in paths}]
        if data and src == data and paths:
            break
    if not paths or count <= 0:
        return []
    idx = sorted(set(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int).tolist()))
    return [letterbox(read_image(paths[i]), size)[0] for i in idx]


def _int8_parts(conv, calib, model):
    """Post-training int8 of the convolutional parts only (``INT8_PARTS``), uint8 input.

    The converter calibrates the float graph, then quantizes it with every op outside the
    sub-models on a deny list (the converter's own ``mlir_quantize`` step with
    ``denylisted_nodes``, which the public API offers only through the quantization debugger,
    without a uint8 input), so the box arithmetic, NMS and RoIAlign sampling stay float32.
    """
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.python import convert as tfl_convert

    from kseg.progress import progress

    conv.representative_dataset = lambda: ([x] for x in progress(calib, "calibration", "images"))
    conv.experimental_mlir_quantizer = True
    conv._experimental_calibrate_only = True  # calibration statistics only; quantized below
    calibrated = conv.convert()
    import flatbuffers

    flat = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    graph = flat.subgraphs[0]
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    parts = tuple(f"/{getattr(model, p).name}" for p in INT8_PARTS)
    name = lambda t: graph.tensors[t].name.decode()  # noqa: E731
    nodes, inside_types, outside_types = [], set(), set()
    inside_io = set()  # tensors an int8 part reads or writes
    for op in graph.operators:
        code = flat.operatorCodes[op.opcodeIndex]
        kind = builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        names = [name(t) for t in op.outputs]
        inside = any(p in n for n in names for p in parts)
        (inside_types if inside else outside_types).add(kind)
        nodes += [(n, inside) for n in names]
        if inside:
            inside_io.update(int(t) for t in list(op.inputs) + list(op.outputs) if t >= 0)
    if not inside_types:
        raise KsegError(f"MaskRCNN int8 export found none of the sub-models {INT8_PARTS} among the graph's op names; "
                        "export float16 instead")
    # Denied nodes alone do not keep the float path float: the quantizer still runs "same scale"
    # ops (slices, top-k) on int8 copies and rounds some float tensors through int8 wherever it has
    # their calibrated range. So the ranges of every tensor no int8 part touches are dropped (it
    # cannot quantize what it has no range for), and those op kinds are denied where unused inside.
    for t, tensor in enumerate(graph.tensors):
        if t not in inside_io and tensor.quantization is not None:
            tensor.quantization = None
    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(flat.Pack(builder), file_identifier=b"TFL3")
    return tfl_convert.mlir_quantize(bytes(builder.Output()), input_data_type=tf.uint8, output_data_type=tf.float32,
                                     denylisted_nodes=[n for n, inside in nodes if not inside],
                                     denylisted_ops=sorted(outside_types - inside_types))


# --------------------------------------------------------------------------------------
# parity with Keras


def parity(model, runner, images, threshold=0.5, min_score=0.0):
    """Keras vs TFLite detections on letterboxed images.

    Each Keras detection is matched to the unmatched TFLite detection of the same class with
    the highest box IoU (at least 0.5). A detection scoring near the threshold or an NMS tie
    can change which boxes survive, so the maxima can come from one such flip; the medians
    and ``within_1px`` say how the rest agree.

    Args:
        model: the ``MaskRCNN`` (or anything with a ``predict_on_batch`` like it).
        runner: a ``TFLiteMaskRCNN`` of its export (anything with ``detect``).
        images: iterable of ``(H, W, 3)`` images at the model's input size.
        threshold: mask probability threshold for the mask IoU.
        min_score: only Keras detections scoring at least this are compared (TFLite
            detections of any score can match them); ``same_count`` counts these too.

    Returns:
        dict ``images``, ``min_score``, ``same_count`` (share of images with as many
        detections), ``keras_detections``, ``matched`` (Keras detections with a TFLite match),
        ``within_1px`` (matched with every box side within 1 px), ``max_box_diff`` and
        ``median_box_diff`` (pixels, matched), ``max_score_diff``, ``mean_mask_iou`` and
        ``median_mask_iou`` (pasted masks of matched detections).
    """
    from kseg.models.mask_rcnn.boxes import box_iou
    from kseg.progress import progress

    same, matched, total, score_diff, ious, diffs, n = 0, 0, 0, 0.0, [], [], 0
    label = "parity" + (f" (score >= {min_score:g})" if min_score else "")
    for image in progress(images, label, "images"):
        n += 1
        ref = {k: np.asarray(v)[0] for k, v in model.predict_on_batch(np.asarray(image, np.float32)[None]).items()}
        lite = runner.detect(image)
        a = int(np.sum(ref["scores"][: int(ref["num_detections"])] >= min_score))  # scores are sorted
        b = int(lite["num_detections"])
        same += a == int(np.sum(lite["scores"][:b] >= min_score))
        total += a
        if not a or not b:
            continue
        size = np.asarray(image).shape[:2]
        iou = np.array(box_iou(ref["boxes"][:a], lite["boxes"][:b]))
        iou[ref["classes"][:a, None] != lite["classes"][None, :b]] = 0.0
        used = set()
        for j in range(a):
            order = [k for k in np.argsort(-iou[j]) if k not in used and iou[j, k] >= 0.5]
            if not order:
                continue
            k = int(order[0])
            used.add(k)
            matched += 1
            diffs.append(float(np.abs(ref["boxes"][j] - lite["boxes"][k]).max()))
            score_diff = max(score_diff, float(abs(ref["scores"][j] - lite["scores"][k])))
            ma = paste_masks(ref["masks"][j:j + 1], ref["boxes"][j:j + 1], size, threshold)[0].astype(bool)
            mb = paste_masks(lite["masks"][k:k + 1], lite["boxes"][k:k + 1], size, threshold)[0].astype(bool)
            union = (ma | mb).sum()
            ious.append(float((ma & mb).sum() / union) if union else 1.0)
    return {"images": n, "min_score": min_score, "same_count": same / max(n, 1), "keras_detections": total,
            "matched": matched, "within_1px": int(np.sum(np.asarray(diffs) < 1.0)),
            "max_box_diff": max(diffs, default=0.0), "median_box_diff": float(np.median(diffs)) if diffs else None,
            "max_score_diff": score_diff, "mean_mask_iou": float(np.mean(ious)) if ious else None,
            "median_mask_iou": float(np.median(ious)) if ious else None}


# --------------------------------------------------------------------------------------
# model card and export


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
                 "(kseg.runtime.paste_masks) and threshold at 0.5",
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
            "normalization": ("inside the model: feed RGB 0..255 as uint8 (scale 1, zero point 0), no mean/std"
                              if np.dtype(inp["dtype"]).kind in "iu" else
                              "inside the model: feed RGB 0..255 as float32, no mean/std"),
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
    path = card_path(tflite_path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return path


def parity_images(data=None, config: dict | None = None, split="val", count=20, size=320) -> tuple[list, str]:
    """Letterboxed images for Keras/TFLite parity: from ``data`` (COCO folder/JSON) or the
    config's ``data.coco_subsets`` val images; returns ``(images, description)``."""
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image
    from kseg.evaluate_instances import open_coco_images

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
        quantization: ``"float32"``, ``"float16"``, ``"dynamic"`` or ``"int8"`` (post-training,
            calibrated on 32 train images: ``calibration_images``).
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
    from kseg.evaluate_instances import open_coco_images

    if model.format != "keras":
        raise KsegError(f"{model.path} is already a .tflite; export the .keras model or the .weights.h5 with its --config")
    if quantization not in WHAT_STAYS_FLOAT:
        raise KsegError(f"Mask R-CNN export --quantization {quantization}: use float16 (the shipped variant), "
                        "float32, dynamic or int8 (post-training); QAT is not offered for Mask R-CNN")
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
    calib = None
    if quantization == "int8":
        calib = calibration_images(model.config, 32, model.input_size, data=data)
        if not calib:
            raise KsegError("Mask R-CNN int8 export calibrates on train images: give --data a COCO folder with a "
                            "train split, or --config a configs/mask_rcnn_*.yaml whose data.coco_subsets name them")
    info = export_tflite(model.model, out, quantization=quantization, representative_images=calib)
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
                         float_ops=float_ops(out) if quantization == "int8" else None,
                         calibration=(f"{len(calib)} COCO train images with persons ({', '.join(data_cfg.get('coco_subsets', []))})"
                                      if calib else None),
                         training_data=training, data_licence=licence or card_fields.pop("data_licence", None),
                         source=str(model.path),
                         command=command or " ".join(["kseg", *sys.argv[1:]]), **card_fields)
    write_instance_card(out, card)
    from kseg.metadata import embed_metadata_file

    return embed_metadata_file(out)  # TFLite Model Metadata from the card (outputs described)
