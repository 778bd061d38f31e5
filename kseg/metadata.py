"""TFLite Model Metadata: make an export self-describing for MediaPipe Tasks and the Task Library.

``embed_metadata(tflite_bytes, card)`` writes the metadata that MediaPipe Tasks' ImageSegmenter
and the TFLite Task Library read from a model file (name, description, version, author,
licence, input colour space and normalisation, the class-name file ``labels.txt``, the output
activation; for the instance model what each of its outputs means), taking everything from the
kseg model card. ``read_metadata(path_or_bytes)`` reads it back as a plain dict.

The file is packed the way the reference ``MetadataPopulator`` of tflite-support / MediaPipe
packs it: the ``ModelMetadata`` flatbuffer (identifier ``M001``) goes into a new model buffer
that a ``Model.metadata`` entry named ``TFLITE_METADATA`` points to, the model is re-serialised
with its ``TFL3`` identifier, and the associated files follow the flatbuffer as a zip archive
(uncompressed members). LiteRT's interpreter ignores both, so the file runs as before.

Neither mediapipe nor tflite-support is a dependency (they pin numpy < 2 and protobuf < 4/5):
the metadata schema is flatc-generated code vendored in ``kseg/_vendor/tflite_metadata`` and the
model schema is the one ai-edge-litert ships; both need only the ``flatbuffers`` package.

Example:
    import json
    from kseg.metadata import embed_metadata, read_metadata
    card = json.load(open("exports/portrait.json"))
    packed = embed_metadata(open("exports/portrait.tflite", "rb").read(), card)
    read_metadata(packed)["labels"]        # ['background', 'person']

Reference:
    TFLite Model Metadata schema 1.5.0 (``metadata_schema.fbs``, tensorflow/tflite-support and
    google-ai-edge/mediapipe ``mediapipe/tasks/metadata``); MediaPipe's
    ``metadata_writers/image_segmenter.py`` for what ImageSegmenter expects.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

METADATA_FIELD_NAME = "TFLITE_METADATA"
METADATA_FILE_IDENTIFIER = b"M001"
TFLITE_FILE_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"  # the name MediaPipe's ImageSegmenter looks up
_SEGMENTER_FILE_IDENTIFIER = b"V001"
_LABELS_DESCRIPTION = "Labels for categories that the model can recognize."
# The segmentation-mask tensor (1, H, W, C) is a stack of grey images: MediaPipe writes
# content dimension range [1, 2] for it (metadata_info.SegmentationMaskMd).
_MASK_DIM_RANGE = (1, 2)

__all__ = ["embed_metadata", "embed_metadata_file", "read_metadata", "LABELS_FILE", "METADATA_FIELD_NAME"]


def _schemas():
    from ai_edge_litert import schema_py_generated as model_fb

    from kseg._vendor.tflite_metadata import image_segmenter_metadata_schema_py_generated as seg_fb
    from kseg._vendor.tflite_metadata import metadata_schema_py_generated as meta_fb

    return model_fb, meta_fb, seg_fb


def _enum_name(enum_cls, value) -> str:
    for k, v in vars(enum_cls).items():
        if not k.startswith("_") and v == value:
            return k
    return str(value)


def _text(x):
    return x.decode("utf-8") if isinstance(x, bytes) else x


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _normalization(card_input: dict, is_float: bool) -> tuple[list[float], list[float]]:
    """Mean and std such that ``(rgb_0_255 - mean) / std`` is what the input tensor takes."""
    if card_input.get("mean") is not None and card_input.get("std") is not None:
        mean, std = card_input["mean"], card_input["std"]
        mean = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean])]
        std = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std])]
        return mean, std
    if not is_float:
        # quantized input: the clients feed raw 0..255 bytes; MediaPipe and the Task Library
        # still want a NormalizationOptions unit and read mean 0 / std 1 as "as is"
        return [0.0], [1.0]
    lo, hi = (card_input.get("range") or [0, 255])[:2]
    known = {(0, 255): ([0.0], [1.0]), (0, 1): ([0.0], [255.0]), (-1, 1): ([127.5], [127.5])}
    key = (round(float(lo), 6), round(float(hi), 6))
    if key not in known:
        raise KsegError(
            f"the card's input range is {[lo, hi]}; embed_metadata knows the normalisation for "
            "[0, 255], [0, 1] and [-1, 1] only: give the card input.mean and input.std "
            "(so that (rgb - mean) / std is the input)"
        )
    return known[key]


def _image_input_md(meta_fb, card: dict, tensor_type: int, model_fb) -> object:
    card_input = card.get("input") or {}
    is_float = tensor_type in (model_fb.TensorType.FLOAT32, model_fb.TensorType.FLOAT16)
    mean, std = _normalization(card_input, is_float)
    t = meta_fb.TensorMetadataT()
    t.name = "image"
    parts = ["RGB image"]
    shape = card_input.get("shape")
    if shape and len(shape) == 4:
        parts[0] = f"RGB image, {shape[1]}x{shape[2]}"
    if card_input.get("normalization"):
        parts.append(f"normalisation: {card_input['normalization']}")
    if card_input.get("letterbox"):
        parts.append(f"letterbox: {card_input['letterbox']}")
    t.description = "; ".join(parts)
    content = meta_fb.ContentT()
    props = meta_fb.ImagePropertiesT()
    props.colorSpace = meta_fb.ColorSpaceType.RGB
    content.contentProperties = props
    content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    t.content = content
    unit = meta_fb.ProcessUnitT()
    unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
    unit.options = meta_fb.NormalizationOptionsT()
    unit.options.mean = mean
    unit.options.std = std
    t.processUnits = [unit]
    # the value range the tensor holds, as MediaPipe's InputImageTensorMd writes it
    stats = meta_fb.StatsT()
    if tensor_type == model_fb.TensorType.UINT8:
        stats.min, stats.max = [0.0], [255.0]
    elif is_float:
        stats.min = [(0.0 - m) / s for m, s in zip(mean, std)]
        stats.max = [(255.0 - m) / s for m, s in zip(mean, std)]
    t.stats = stats
    return t


def _labels_file_md(meta_fb, file_type: int) -> object:
    f = meta_fb.AssociatedFileT()
    f.name = LABELS_FILE
    f.description = _LABELS_DESCRIPTION
    f.type = file_type
    return f


def _semantic_output_md(meta_fb, card: dict) -> object:
    out = card.get("output") or {}
    t = meta_fb.TensorMetadataT()
    t.name = "segmentation_masks"
    meaning = out.get("meaning", "logits")
    t.description = f"{meaning}, class order as in {LABELS_FILE}" + (f"; {out['layout']}" if out.get("layout") else "")
    content = meta_fb.ContentT()
    props = meta_fb.ImagePropertiesT()
    props.colorSpace = meta_fb.ColorSpaceType.GRAYSCALE
    content.contentProperties = props
    content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    rng = meta_fb.ValueRangeT()
    rng.min, rng.max = _MASK_DIM_RANGE
    content.range = rng
    t.content = content
    t.stats = meta_fb.StatsT()
    t.associatedFiles = [_labels_file_md(meta_fb, meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS)]
    return t


def _segmenter_options(meta_fb, seg_fb, meaning: str) -> object:
    """MediaPipe's SEGMENTER_METADATA custom metadata: the activation to apply to the output."""
    activation = {
        "logits": seg_fb.Activation.SOFTMAX,
        "probabilities": seg_fb.Activation.NONE,
        "sigmoid_logits": seg_fb.Activation.SIGMOID,
    }.get(meaning)
    if activation is None:
        raise KsegError(
            f"the card's output.meaning is {meaning!r}; embed_metadata knows 'logits' (SOFTMAX), "
            "'probabilities' (NONE) and 'sigmoid_logits' (SIGMOID)"
        )
    import flatbuffers

    options = seg_fb.ImageSegmenterOptionsT()
    options.activation = activation
    b = flatbuffers.Builder(0)
    b.Finish(options.Pack(b), _SEGMENTER_FILE_IDENTIFIER)
    custom = meta_fb.CustomMetadataT()
    custom.name = SEGMENTER_METADATA_NAME
    custom.data = np.frombuffer(bytes(b.Output()), dtype=np.uint8)
    return custom


def _instance_output_md(meta_fb, key: str, spec: dict) -> object:
    t = meta_fb.TensorMetadataT()
    t.name = key
    t.description = spec.get("meaning") or key
    content = meta_fb.ContentT()
    if key == "boxes":
        # x1, y1, x2, y2 = left, top, right, bottom in input (letterboxed) pixels
        props = meta_fb.BoundingBoxPropertiesT()
        props.index = [0, 1, 2, 3]
        props.type = meta_fb.BoundingBoxType.BOUNDARIES
        props.coordinateType = meta_fb.CoordinateType.PIXEL
        content.contentProperties = props
        content.contentPropertiesType = meta_fb.ContentProperties.BoundingBoxProperties
        rng = meta_fb.ValueRangeT()
        rng.min, rng.max = 2, 2
        content.range = rng
    else:
        content.contentProperties = meta_fb.FeaturePropertiesT()
        content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    t.content = content
    t.stats = meta_fb.StatsT()
    if key == "classes":
        t.associatedFiles = [_labels_file_md(meta_fb, meta_fb.AssociatedFileType.TENSOR_VALUE_LABELS)]
    return t


_NUMPY_DTYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6, "int16": 7, "int8": 9}


def _match_instance_outputs(model, card: dict) -> list[str]:
    """The card's output key for each subgraph output, by signature name, else by shape and dtype."""
    specs = card.get("outputs") or {}
    if not specs:
        raise KsegError("the card of an instance_segmentation model has no 'outputs'; re-export the model")
    sg = model.subgraphs[0]
    keys: list[str | None] = [None] * len(sg.outputs)
    if model.signatureDefs:
        by_tensor = {o.tensorIndex: _text(o.name) for o in model.signatureDefs[0].outputs or []}
        keys = [by_tensor.get(i) if by_tensor.get(i) in specs else None for i in sg.outputs]
    for j, ti in enumerate(sg.outputs):
        if keys[j] is not None:
            continue
        tensor = sg.tensors[ti]
        shape = [int(v) for v in (tensor.shape if tensor.shape is not None else [])]
        hits = [k for k, s in specs.items()
                if list(s.get("shape") or []) == shape and _NUMPY_DTYPES.get(s.get("dtype")) == tensor.type
                and k not in keys]
        if len(hits) != 1:
            raise KsegError(
                f"output {j} ({_text(tensor.name)}, shape {shape}) matches {len(hits)} of the card's outputs "
                f"{sorted(specs)}; the card belongs to another model — re-export it"
            )
        keys[j] = hits[0]
    return keys


def _general(meta_fb, card: dict) -> object:
    import kseg

    md = meta_fb.ModelMetadataT()
    md.name = str(card.get("name") or "kseg model")
    names = card.get("class_names") or []
    task = card.get("task", "semantic_segmentation")
    shape = (card.get("input") or {}).get("shape")
    size = f" at {shape[1]}x{shape[2]}" if shape and len(shape) == 4 else ""
    what = "instance segmentation (Mask R-CNN)" if task == "instance_segmentation" else "semantic segmentation"
    parts = [f"kseg {what} into {len(names)} classes ({', '.join(names)}){size}."]
    if card.get("quantization"):
        parts.append(f"Quantization: {card['quantization']}.")
    if card.get("training_data"):
        parts.append(f"Training data: {card['training_data']}.")
    for key in ("intended_use", "limitations"):
        if card.get(key):
            parts.append(str(card[key]))
    md.description = " ".join(parts)
    md.version = str(card.get("version") or f"kseg {card.get('kseg_version') or kseg.__version__}")
    md.author = str(card.get("author") or "kseg")
    licence = card.get("licence") or card.get("license")
    if not licence and card.get("data_licence"):
        licence = f"training data: {card['data_licence']}"
    md.license = licence
    return md


def _min_parser_version(meta_fb, md) -> str:
    """The oldest metadata parser that understands every field used (schema history, 1.0.0-1.5.0).

    tflite-support computes this in C++ (metadata_version.cc); the rules are the "Added in"
    notes of metadata_schema.fbs.
    """
    v = (1, 0, 0)
    for sg in md.subgraphMetadata or []:
        if sg.customMetadata:
            v = max(v, (1, 5, 0))
        if sg.inputTensorGroups or sg.outputTensorGroups:
            v = max(v, (1, 2, 0))
        if sg.inputProcessUnits or sg.outputProcessUnits:
            v = max(v, (1, 1, 0))
        for t in (sg.inputTensorMetadata or []) + (sg.outputTensorMetadata or []):
            files = list(t.associatedFiles or [])
            if t.content is not None and t.content.contentPropertiesType == meta_fb.ContentProperties.AudioProperties:
                v = max(v, (1, 3, 0))
            for u in t.processUnits or []:
                if u.optionsType == meta_fb.ProcessUnitOptions.RegexTokenizerOptions:
                    v = max(v, (1, 2, 1))
                elif u.optionsType in (meta_fb.ProcessUnitOptions.BertTokenizerOptions,
                                       meta_fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
                    v = max(v, (1, 1, 0))
            for f in files:
                if f.version:
                    v = max(v, (1, 4, 1))
                if f.type == meta_fb.AssociatedFileType.SCANN_INDEX_FILE:
                    v = max(v, (1, 4, 0))
                if f.type == meta_fb.AssociatedFileType.VOCABULARY:
                    v = max(v, (1, 0, 1))
    return ".".join(str(x) for x in v)


def _check_model_bytes(buf, what: str):
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise KsegError(f"{what} must be the bytes of a .tflite file, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < 8 or buf[4:8] != TFLITE_FILE_IDENTIFIER:
        raise KsegError(f"{what} is not a TFLite model (no 'TFL3' identifier in its header); give a .tflite file")
    return buf


def embed_metadata(tflite_bytes: bytes, card: dict) -> bytes:
    """The model with TFLite Model Metadata and ``labels.txt`` built from its kseg model card.

    Semantic models (card ``task`` ``semantic_segmentation``, one ``(1, H, W, C)`` output) get
    what MediaPipe Tasks' ImageSegmenter and the Task Library's ImageSegmenter need: RGB input
    with its normalisation (mean 0 / std 1 for uint8 input, i.e. feed 0..255 as is; for float
    input the mean/std that map 0..255 to the card's ``input.range``, or the card's
    ``input.mean``/``input.std``), the output's class file ``labels.txt``
    (``TENSOR_AXIS_LABELS``) and the ``SEGMENTER_METADATA`` custom metadata with the activation
    (``SOFTMAX`` for logits, ``NONE`` for probabilities). Instance models (``task``
    ``instance_segmentation``) get the input normalisation, a name and description for each
    output from the card's ``outputs`` and ``labels.txt`` (``TENSOR_VALUE_LABELS``) on
    ``classes``. Metadata already in the file is replaced, so embedding twice gives one copy.

    Args:
        tflite_bytes: the ``.tflite`` file's bytes.
        card: the kseg model card (``exports/NAME.json``); it needs ``class_names`` and, for
            an instance model, ``outputs``.

    Returns:
        The new file's bytes: the re-serialised model (``TFL3``) followed by a zip archive
        holding ``labels.txt``.

    Raises:
        KsegError: not a TFLite model, or the card does not fit the model.

    Example:
        data = embed_metadata(Path("exports/portrait.tflite").read_bytes(), card)
        Path("portrait_mp.tflite").write_bytes(data)
    """
    import flatbuffers

    model_fb, meta_fb, seg_fb = _schemas()
    buf = _check_model_bytes(tflite_bytes, "tflite_bytes")
    if not isinstance(card, dict):
        raise KsegError(f"card must be the model card dict (exports/NAME.json), got {type(card).__name__}")
    names = [str(n) for n in card.get("class_names") or []]
    if not names:
        raise KsegError("the model card has no class_names; embed_metadata writes them to labels.txt")
    if any("\n" in n for n in names):
        raise KsegError(f"class names {names} contain a newline; labels.txt holds one name per line")

    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(buf, 0))
    if not model.subgraphs:
        raise KsegError("the model has no subgraph")
    sg = model.subgraphs[0]
    inputs = list(sg.inputs if sg.inputs is not None else [])
    outputs = list(sg.outputs if sg.outputs is not None else [])
    task = card.get("task", "semantic_segmentation")
    if len(inputs) != 1:
        raise KsegError(f"the model has {len(inputs)} inputs; kseg models take one RGB image")
    in_tensor = sg.tensors[inputs[0]]

    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_image_input_md(meta_fb, card, in_tensor.type, model_fb)]
    if task == "instance_segmentation":
        keys = _match_instance_outputs(model, card)
        specs = card["outputs"]
        subgraph.outputTensorMetadata = [_instance_output_md(meta_fb, k, specs[k]) for k in keys]
    else:
        if len(outputs) != 1:
            raise KsegError(
                f"the model has {len(outputs)} outputs but its card says task {task!r}; a semantic kseg model "
                "has one (1, H, W, C) output — set task: instance_segmentation for a Mask R-CNN export"
            )
        out_shape = [int(v) for v in sg.tensors[outputs[0]].shape]
        if len(out_shape) == 4 and out_shape[-1] == 1 and len(names) == 2:
            names = names[1:]  # one sigmoid channel: its label is the foreground's (background = 1 - p)
        if len(out_shape) != 4 or out_shape[-1] != len(names):
            raise KsegError(
                f"the model's output has shape {out_shape} but the card lists {len(names)} classes; "
                "the card belongs to another model — re-export it"
            )
        subgraph.outputTensorMetadata = [_semantic_output_md(meta_fb, card)]
        meaning = (card.get("output") or {}).get("meaning", "logits")
        subgraph.customMetadata = [_segmenter_options(meta_fb, seg_fb, meaning)]

    md = _general(meta_fb, card)
    md.subgraphMetadata = [subgraph]
    md.minParserVersion = _min_parser_version(meta_fb, md)
    b = flatbuffers.Builder(0)
    b.Finish(md.Pack(b), METADATA_FILE_IDENTIFIER)
    metadata_buf = bytes(b.Output())

    # Same steps as MetadataPopulator._populate_metadata_buffer: a new buffer, pointed to by a
    # Model.metadata entry named TFLITE_METADATA (an existing one is reused), model re-packed.
    buffer = model_fb.BufferT()
    buffer.data = np.frombuffer(metadata_buf, dtype=np.uint8)
    model.metadata = list(model.metadata or [])
    model.buffers = list(model.buffers or [])
    existing = [m for m in model.metadata if _text(m.name) == METADATA_FIELD_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = model_fb.MetadataT()
        entry.name = METADATA_FIELD_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), TFLITE_FILE_IDENTIFIER)
    model_buf = bytes(b.Output())

    # MetadataPopulator._populate_associated_files: the files as a zip appended to the model
    # (zipfile mode "a" on a non-zip file starts an archive at its end; members stored).
    # A fixed member date (zip's earliest) keeps the bytes a function of the model and the card:
    # writestr with a bare name stamps the current time, so two embeddings could differ.
    out = io.BytesIO(model_buf)
    with zipfile.ZipFile(out, "a") as zf:
        info = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        zf.writestr(info, "\n".join(names))
    return out.getvalue()


def strip_metadata(tflite_bytes: bytes) -> bytes:
    """The model without its TFLite Model Metadata and associated files (the bare converter output).

    Args:
        tflite_bytes: a ``.tflite`` file's bytes, with or without metadata.

    Returns:
        The re-serialised model (``TFL3``) with no ``TFLITE_METADATA`` entry and nothing appended.

    Example:
        bare = strip_metadata(Path("exports/portrait.tflite").read_bytes())
    """
    import flatbuffers

    model_fb, _, _ = _schemas()
    buf = _check_model_bytes(tflite_bytes, "tflite_bytes")
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(buf, 0))
    keep, drop = [], set()
    for m in model.metadata or []:
        (drop.add(m.buffer) if _text(m.name) == METADATA_FIELD_NAME else keep.append(m))
    if drop:
        empty = model_fb.BufferT()  # emptied, not removed: other entries keep their buffer indices
        model.buffers = [empty if i in drop else b for i, b in enumerate(model.buffers)]
    model.metadata = keep or None
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), TFLITE_FILE_IDENTIFIER)
    return bytes(b.Output())


def embed_metadata_file(tflite_path) -> dict:
    """Embed metadata into ``NAME.tflite`` in place from its card ``NAME.json``; refresh the card's size.

    Both files are replaced atomically. The card's ``size_bytes`` is set to the new file size
    (the metadata and ``labels.txt`` add about 1.5 KB); nothing else in the card changes.

    Args:
        tflite_path: the ``.tflite`` file; its model card ``NAME.json`` must lie beside it.

    Returns:
        The card, as written.

    Raises:
        KsegError: no card beside the model, or ``embed_metadata``'s errors.

    Example:
        embed_metadata_file("exports/portrait.tflite")
    """
    import json

    from kseg.paths import atomic_path

    p = Path(tflite_path)
    card_file = p.with_suffix(".json")
    if not p.is_file():
        raise KsegError(f"model file {p} not found; give the path of a .tflite file")
    if not card_file.is_file():
        raise KsegError(f"{p} has no model card {card_file}; write it first (kseg.export.write_model_card)")
    try:
        card = json.loads(card_file.read_text())
    except ValueError as e:
        raise KsegError(f"model card {card_file} is not valid JSON ({e}); re-export the model") from None
    data = embed_metadata(p.read_bytes(), card)
    with atomic_path(p) as tmp:
        Path(tmp).write_bytes(data)
    card["size_bytes"] = len(data)
    with atomic_path(card_file) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return card


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _tensor_dict(meta_fb, t) -> dict:
    d = {"name": _text(t.name), "description": _text(t.description)}
    content = t.content
    if content is not None:
        kind = content.contentPropertiesType
        d["content"] = _enum_name(meta_fb.ContentProperties, kind)
        props = content.contentProperties
        if kind == meta_fb.ContentProperties.ImageProperties and props is not None:
            d["color_space"] = _enum_name(meta_fb.ColorSpaceType, props.colorSpace)
        if kind == meta_fb.ContentProperties.BoundingBoxProperties and props is not None:
            d["box_type"] = _enum_name(meta_fb.BoundingBoxType, props.type)
            d["box_coordinates"] = _enum_name(meta_fb.CoordinateType, props.coordinateType)
            d["box_index"] = [int(v) for v in (props.index if props.index is not None else [])]
        if content.range is not None:
            d["range"] = [int(content.range.min), int(content.range.max)]
    for u in t.processUnits or []:
        if u.optionsType == meta_fb.ProcessUnitOptions.NormalizationOptions:
            d["mean"] = [float(v) for v in u.options.mean]
            d["std"] = [float(v) for v in u.options.std]
    if t.stats is not None and t.stats.min is not None:
        d["min"] = [float(v) for v in t.stats.min]
        d["max"] = [float(v) for v in t.stats.max]
    d["associated_files"] = [
        {"name": _text(f.name), "description": _text(f.description),
         "type": _enum_name(meta_fb.AssociatedFileType, f.type)}
        for f in t.associatedFiles or []
    ]
    return d


def read_metadata(path_or_bytes) -> dict | None:
    """The TFLite Model Metadata of a model file as a dict, or ``None`` when it has none.

    Args:
        path_or_bytes: a ``.tflite`` path (``str`` or ``Path``) or the file's bytes.

    Returns:
        ``None`` without a ``TFLITE_METADATA`` entry, else a dict with ``name``,
        ``description``, ``version``, ``author``, ``license``, ``min_parser_version``,
        ``inputs`` and ``outputs`` (one dict per tensor: ``name``, ``description``,
        ``content``, ``color_space``, ``mean``/``std``, ``min``/``max``, ``range``,
        ``associated_files``), ``activation`` (from MediaPipe's ``SEGMENTER_METADATA``: ``'SOFTMAX'``,
        ``'SIGMOID'``, ``'NONE'``, or ``None`` when absent), ``custom_metadata`` (names),
        ``associated_files`` (file name → text of the files packed after the model) and
        ``labels`` (the lines of the first label file, or ``None``).

    Raises:
        KsegError: not a TFLite model, or its metadata buffer is not TFLite Model Metadata.

    Example:
        read_metadata("exports/portrait.tflite")   # None before embed_metadata
    """
    model_fb, meta_fb, seg_fb = _schemas()
    if isinstance(path_or_bytes, (str, Path)):
        p = Path(path_or_bytes)
        if not p.is_file():
            raise KsegError(f"model file {p} not found; give the path of a .tflite file")
        buf = _check_model_bytes(p.read_bytes(), str(p))
    else:
        buf = _check_model_bytes(path_or_bytes, "the model bytes")
    model = model_fb.Model.GetRootAsModel(buf, 0)
    raw = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_FIELD_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            break
    if raw is None:
        return None
    if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        raise KsegError(f"the {METADATA_FIELD_NAME} buffer has no 'M001' identifier; it is not TFLite Model Metadata")
    md = meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    sg = (md.subgraphMetadata or [None])[0]
    result = {
        "name": _text(md.name),
        "description": _text(md.description),
        "version": _text(md.version),
        "author": _text(md.author),
        "license": _text(md.license),
        "min_parser_version": _text(md.minParserVersion),
        "inputs": [_tensor_dict(meta_fb, t) for t in (sg.inputTensorMetadata or [])] if sg else [],
        "outputs": [_tensor_dict(meta_fb, t) for t in (sg.outputTensorMetadata or [])] if sg else [],
        "activation": None,
        "custom_metadata": [],
    }
    for c in (sg.customMetadata or []) if sg else []:
        result["custom_metadata"].append(_text(c.name))
        if _text(c.name) == SEGMENTER_METADATA_NAME and c.data is not None:
            data = bytes(bytearray(c.data))
            options = seg_fb.ImageSegmenterOptions.GetRootAs(data, 0)
            result["activation"] = _enum_name(seg_fb.Activation, options.Activation())
    files = {}
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as zf:
            for name in zf.namelist():
                files[name] = zf.read(name).decode("utf-8", errors="replace")
    except zipfile.BadZipFile:
        pass
    result["associated_files"] = files
    result["labels"] = None
    for t in result["outputs"]:
        for f in t["associated_files"]:
            if f["type"] in ("TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS") and f["name"] in files:
                result["labels"] = files[f["name"]].splitlines()
                break
        if result["labels"] is not None:
            break
    return result
