"""TFLite export with a model card, op checks and Keras/TFLite parity.

``to_tflite`` converts a Keras 3 model (float32, float16, dynamic-range or full-int8
post-training quantization) or a quantization-aware tf_keras model (``"qat"``, from
``kseg.quantize.qat``) through a ``tf.function`` with a fixed ``(1, H, W, 3)`` input signature
and ``tf.lite.TFLiteConverter.from_concrete_functions``. Full-int8 models use builtin int8 ops
only and take/return uint8 by default, so an RGB frame goes in as is: the model normalises
internally (its ``Rescaling`` layer), and the runtime dequantizes the logits.

Every ``.tflite`` gets a model card ``NAME.json`` beside it (``write_model_card``): task,
classes and colours, input and output tensors with their quantization, training data, metrics,
latency, size, data licence and the command that made it. Mask R-CNN models export through
``kseg.export_instances``.

Example:
    from kseg.export import to_tflite, parity
    path = to_tflite(model, "exports/unet_int8.tflite", quantization="int8",
                     representative_data=val_images, card={"class_names": ["background", "person"]})
    print(parity(model, path, images, masks))
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kseg import _faults
from kseg.errors import KsegError, is_interrupt
from kseg.paths import atomic_path
from kseg.runtime import CARD_FORMAT, Segmenter, card_path, check_tflite_file, nonbuiltin_ops, read_card, tflite_ops

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "qat")
IO_DTYPES = ("uint8", "int8", "float32")

__all__ = [
    "QUANTIZATIONS", "to_tflite", "tflite_ops", "assert_builtin_ops", "write_model_card",
    "read_card", "parity", "measure_latency",
]


# --------------------------------------------------------------------------------------
# conversion


def _input_size(model, input_size):
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    h, w = model.input_shape[1:3]
    if h is None or w is None:
        raise KsegError(
            f"model {model.name} has a free input size; give input_size=(H, W) (--size H W on the CLI)"
        )
    return int(h), int(w)


def _representative(data, size, limit, show_progress=True):
    """A converter-ready generator of ``[float32 (1, H, W, 3)]`` from many kinds of input.

    The converter runs the float model on each image while it draws them, so the calibration's
    progress is shown as they are drawn (``kseg.progress``).
    """
    import tensorflow as tf

    from kseg.progress import Progress

    if data is None:
        return None
    if isinstance(data, np.ndarray):
        total = min(data.shape[0] if data.ndim == 4 else 1, limit)
    elif isinstance(data, (list, tuple)) and data and np.ndim(data[0]) == 3:  # a list of images
        total = min(len(data), limit)
    else:  # a dataset, a generator, a callable: at most ``limit``
        total = limit

    def batches():
        source = data() if callable(data) else data
        if isinstance(source, tf.data.Dataset):
            source = source.as_numpy_iterator()
        for item in source:
            if isinstance(item, (tuple, list)) and len(item) == 2 and np.ndim(item[0]) >= 3:
                item = item[0]  # (images, masks)
            if isinstance(item, (tuple, list)) and len(item) == 1:
                item = item[0]
            arr = np.asarray(item, dtype=np.float32)
            yield from (arr[None] if arr.ndim == 3 else arr)

    def gen():
        n = 0
        with Progress(total, "calibration", "images", mode=None if show_progress else "off") as bar:
            for image in batches():
                if image.shape[:2] != tuple(size):
                    image = tf.image.resize(image, size).numpy()
                yield [image[None].astype(np.float32)]
                n += 1
                bar.update()
                if n >= limit:
                    break
        if n == 0:
            raise KsegError("representative_data yielded no images; give a few images at the model's input size")

    return gen


def _is_tf_keras_model(model) -> bool:
    return type(model).__module__.startswith("tf_keras")


def to_tflite(model, path, quantization: str = "float32", representative_data=None, io_dtype: str = "uint8",
              input_size=None, card: dict | None = None, num_calibration: int = 100, float_ops=None) -> Path:
    """Convert a model to a ``.tflite`` file (written atomically) and write its model card.

    Args:
        model: a Keras 3 model, or for ``"qat"`` the quantization-aware tf_keras model from
            ``kseg.quantize.qat`` (or the folder/``.h5`` that ``kseg quantize`` wrote).
        path: the output ``.tflite`` path.
        quantization: ``"float32"``, ``"float16"`` (float16 weights), ``"dynamic"`` (int8
            weights, float activations), ``"int8"`` (full integer, needs ``representative_data``)
            or ``"qat"`` (full integer from the QAT model's learned ranges).
        representative_data: calibration images for ``"int8"``: an array ``(N, H, W, 3)``, a
            ``tf.data.Dataset`` of images or ``(images, masks)`` batches (e.g. from
            ``kseg.data.pipeline.make_dataset(..., training=False)``), an iterable of such, or a
            callable returning one. Float32 RGB 0..255, the model's input range.
        io_dtype: input/output type of ``"int8"``/``"qat"`` models: ``"uint8"`` (default),
            ``"int8"`` or ``"float32"``.
        input_size: ``(H, W)`` for models with a free input size.
        card: model card fields to record (``class_names``, ``colors``, ``training_data``,
            ``metrics``, ``data_licence``, ``command``, ...); see ``write_model_card``.
        num_calibration: at most this many calibration images.
        float_ops: ``"int8"`` only: TFLite op names (e.g. ``("BATCH_MATMUL", "SOFTMAX", "GELU")``)
            kept in float, every other op int8 (selective quantization through TFLite's
            quantization debugger; float I/O). For graphs whose full-int8 form is slow or
            inaccurate: SegFormer's attention and LayerNorm (docs/results.md).

    Returns:
        The path of the ``.tflite`` file. The calibration's progress is shown on stderr
        (``kseg.progress``: a bar on a terminal, plain lines in a log).

    Raises:
        KsegError: unknown quantization, int8 without calibration data, a Keras 3 model passed
            for ``"qat"``, or a conversion failure (one line with the converter's reason).

    Example:
        to_tflite(model, "exports/unet_int8.tflite", "int8", representative_data=images)
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise KsegError(f"quantization={quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    if io_dtype not in IO_DTYPES:
        raise KsegError(f"io_dtype={io_dtype!r}: use one of {', '.join(IO_DTYPES)}")
    if quantization == "qat":
        if isinstance(model, (str, os.PathLike)):
            from kseg.quantize.qat import load_qat_model

            model = load_qat_model(model)
        if not _is_tf_keras_model(model):
            raise KsegError(
                "quantization='qat' takes the quantization-aware model from kseg quantize "
                "(kseg.quantize.qat.qat_fine_tune); for a trained Keras model use quantization='int8'"
            )
    elif isinstance(model, (str, os.PathLike)):
        from kseg.models.saving import load_keras_file

        model = load_keras_file(Path(model))
    if quantization == "int8" and representative_data is None:
        raise KsegError("quantization='int8' needs representative_data (a few hundred training images; --data on the CLI)")
    float_ops = [str(o).strip().upper() for o in (float_ops or ()) if str(o).strip()]
    if float_ops and quantization != "int8":
        raise KsegError(f"float_ops (--float-ops) selects ops to keep in float in an int8 model; "
                        f"use it with quantization int8, not {quantization}")
    size = _input_size(model, input_size)
    with tempfile.TemporaryDirectory(prefix="kseg_export_") as tmp_dir:
        converter = _converter(model, size, tmp_dir)
        flatbuffer = _convert(converter, model, quantization, representative_data, size, io_dtype, num_calibration,
                              float_ops)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(flatbuffer)
    _faults.pause("export-card")
    fields = {"quantization": quantization, "model": getattr(model, "name", None)}
    if float_ops:
        fields["float_ops"] = float_ops
    if not _is_tf_keras_model(model):  # a QAT model's count would include its quantizer ranges
        fields["params"] = int(model.count_params())
    fields.update(card or {})
    if not fields.get("class_names") and getattr(model, "output_shape", None):
        # the metadata's labels.txt needs names; a caller without them gets class_0..class_{C-1}
        n = int(model.output_shape[-1])
        # one channel is a sigmoid map of two classes, named as kseg.runtime.Segmenter names them
        fields["class_names"] = ["background", "foreground"] if n == 1 else [f"class_{i}" for i in range(n)]
    write_model_card(path, **fields)
    # TFLite Model Metadata from the card, so MediaPipe Tasks and the Task Library run the file
    from kseg.metadata import embed_metadata_file

    embed_metadata_file(path)
    return path


def _converter(model, size, tmp_dir):
    """A converter for a fixed ``(1, H, W, 3)`` float32 input.

    Keras 3 models go through ``model.export(..., format="tf_saved_model")`` and
    ``from_saved_model``: ``from_concrete_functions(..., trackable_obj=model)`` produced a model
    that output NaN for a Keras 3 model with BatchNormalization (TF 2.21). tf_keras QAT models
    use a frozen concrete function.
    """
    import tensorflow as tf

    spec = tf.TensorSpec((1, *size, 3), tf.float32, name="image")
    if _is_tf_keras_model(model):
        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        import logging

        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # "provide trackable_obj" deprecation notice
        try:
            return tf.lite.TFLiteConverter.from_concrete_functions([fn])
        finally:
            absl.setLevel(level)
    saved = str(Path(tmp_dir) / "saved_model")
    model.export(saved, format="tf_saved_model", input_signature=[spec], verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(saved)


def _convert(converter, model, quantization, representative_data, size, io_dtype, num_calibration, float_ops=()):
    """Convert with ``converter``; with ``float_ops`` (int8 only) those op types stay float, the
    rest int8, through TFLite's quantization debugger (``denylisted_ops``; float I/O)."""
    import tensorflow as tf

    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization in ("int8", "qat"):
        rep = _representative(representative_data, size, num_calibration)
        if rep is None:
            # The converter insists on a representative dataset before it inspects the graph,
            # even for a QAT model whose FakeQuant ranges it then uses (the dataset is unused).
            rep = _representative(np.zeros((1, *size, 3), np.float32), size, 1, show_progress=False)
        converter.representative_dataset = rep
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_ops:  # the float ops need the float kernels; the file keeps float I/O
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        else:
            io = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
            converter.inference_input_type = io
            converter.inference_output_type = io
    _faults.pause("export-convert")
    try:
        if float_ops:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=_representative(representative_data, size, 2, show_progress=False),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops)))
            return debugger.get_nondebug_quantized_model()
        return converter.convert()
    except KsegError:
        raise
    except Exception as e:
        if is_interrupt(e):  # Ctrl-C inside the converter's C++, wrapped by pybind11
            raise KeyboardInterrupt from None
        lines = [ln for ln in str(e).splitlines() if "error" in ln.lower()] or str(e).splitlines() or [type(e).__name__]
        raise KsegError(f"TFLite conversion ({quantization}) of {model.name} failed: {lines[0].strip()[:200]}") from None


# --------------------------------------------------------------------------------------
# ops


def assert_builtin_ops(path) -> list[str]:
    """Raise ``KsegError`` if the model uses Flex (TF select) or custom ops; return its op names."""
    ops = tflite_ops(path)
    bad = nonbuiltin_ops(ops)
    if bad:
        raise KsegError(
            f"{path} uses non-builtin ops {bad}; the LiteRT runtime needs builtin ops only — "
            "replace the layers that produce them"
        )
    return ops


# --------------------------------------------------------------------------------------
# model card


def _tensor_info(detail) -> dict:
    scale, zero = detail["quantization"]
    info = {"shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    if np.dtype(detail["dtype"]) in (np.uint8, np.int8):
        info["quantization"] = {"scale": float(scale), "zero_point": int(zero),
                                "real_value": "scale * (q - zero_point)"}
    return info


def write_model_card(tflite_path, **fields) -> Path:
    """Write (or update) the model card ``NAME.json`` beside a ``.tflite`` file, atomically.

    Tensor shapes, dtypes and quantization are read from the model itself; the caller fills in
    what only it knows. An existing card's fields are kept unless given again.

    Args:
        tflite_path: the ``.tflite`` file.
        **fields: any of ``class_names``, ``colors`` (``C×3`` RGB), ``person_index``,
            ``quantization``, ``training_data``, ``metrics`` (dict), ``latency_ms`` (dict),
            ``data_licence``, ``command``, ``model``, ``output_meaning`` (``"logits"`` default
            or ``"probabilities"``) and anything else JSON-serialisable.

    Returns:
        The card's path.
    """
    from ai_edge_litert.interpreter import Interpreter

    p = check_tflite_file(tflite_path)
    card = {}
    existing = card_path(p)
    if existing.is_file():
        try:
            card = json.loads(existing.read_text())
        except ValueError:
            card = {}
    interp = Interpreter(model_path=str(p))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    meaning = fields.pop("output_meaning", None) or (card.get("output") or {}).get("meaning", "logits")
    channels = int(out["shape"][-1])
    if channels == 1 and meaning == "logits":
        meaning = "sigmoid_logits"  # one channel: the foreground's logit (U²-Net, MediaPipe's selfie head)
    colors = fields.pop("colors", None)
    if colors is not None:
        fields["colors"] = np.asarray(colors).astype(int).tolist()
    card.update({
        "format": CARD_FORMAT,
        "name": p.stem,
        "task": "semantic_segmentation",
        "file": p.name,
        "size_bytes": p.stat().st_size,
        "input": {
            **_tensor_info(inp),
            "color": "RGB",
            "range": [0, 255],
            "normalization": "inside the model (Rescaling layer): feed RGB 0..255 as is",
        },
        "output": {
            **_tensor_info(out),
            "meaning": meaning,
            "layout": ("NHWC: one score per class per pixel; softmax over the last axis gives "
                       "probabilities; upsample to the frame's size") if channels > 1 else
                      ("NHWC, one channel: the foreground's score; sigmoid gives its probability p "
                       "(background 1 - p); upsample to the frame's size"),
        },
    })
    card.update({k: v for k, v in fields.items() if v is not None})
    if "class_names" in card and len(card["class_names"]) != (2 if channels == 1 else channels):
        raise KsegError(
            f"class_names has {len(card['class_names'])} names but {p.name} outputs "
            f"{channels} classes; pass the model's own class names"
        )
    card.setdefault("command", " ".join(["kseg", *sys.argv[1:]]) if Path(sys.argv[0]).stem == "kseg" else None)
    from kseg import __version__

    card["kseg_version"] = __version__
    path = card_path(p)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------
# parity and latency


def _confusion(pred, truth, n):
    valid = truth != 255
    idx = truth[valid].astype(np.int64) * n + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def _miou(conf) -> float:
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


def parity(keras_model, tflite_path, images, masks=None, num_threads=None) -> dict:
    """How closely a ``.tflite`` model follows its Keras original on real images.

    Both run through ``Segmenter`` (same resize, softmax and upsampling), so only the model
    differs.

    Args:
        keras_model: the Keras model (object or ``.keras`` path).
        tflite_path: the exported model.
        images: RGB uint8 images (any sizes).
        masks: optional label masks (uint8, 255 = ignore) matching ``images``.
        num_threads: interpreter threads.

    Progress goes to stderr (``kseg.progress``).

    Returns:
        ``{"pixel_agreement", "n_images", "n_pixels"}`` and, with masks, ``"miou_keras"``,
        ``"miou_tflite"``, ``"pixel_accuracy_keras"``, ``"pixel_accuracy_tflite"``.
    """
    from kseg.progress import progress

    lite = Segmenter(tflite_path, num_threads=num_threads)
    ref = Segmenter(keras_model, card=lite.card)
    n = lite.num_classes
    agree = total = 0
    conf_k = np.zeros((n, n), np.int64)
    conf_t = np.zeros((n, n), np.int64)
    for i, image in enumerate(progress(images, "parity", "images")):
        a = ref.segment(image).category_mask
        b = lite.segment(image).category_mask
        agree += int((a == b).sum())
        total += a.size
        if masks is not None:
            conf_k += _confusion(a, np.asarray(masks[i]), n)
            conf_t += _confusion(b, np.asarray(masks[i]), n)
    out = {"pixel_agreement": agree / max(total, 1), "n_images": len(images), "n_pixels": total}
    if masks is not None:
        out.update({
            "miou_keras": _miou(conf_k),
            "miou_tflite": _miou(conf_t),
            "pixel_accuracy_keras": float(np.trace(conf_k) / max(conf_k.sum(), 1)),
            "pixel_accuracy_tflite": float(np.trace(conf_t) / max(conf_t.sum(), 1)),
        })
    return out


def measure_latency(tflite_path, num_threads: int = 2, runs: int = 30, warmup: int = 3) -> dict:
    """Median and 90th-percentile ``invoke`` time of a ``.tflite`` model, in milliseconds."""
    seg = Segmenter(tflite_path, num_threads=num_threads)
    interp = seg._backend.interpreter
    detail = seg._backend.inp
    x = np.zeros(detail["shape"], detail["dtype"])
    interp.set_tensor(detail["index"], x)
    times = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        interp.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "threads": num_threads, "runs": runs, "input": list(map(int, detail["shape"][1:3]))}
