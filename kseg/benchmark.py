"""``kseg benchmark``: latency, size, op check and accuracy of exported models, side by side.

For each model (``.tflite``, or ``.keras`` through the same ``Segmenter``):

- **latency**: median and 90th percentile of one forward pass, after warm-up, on ``threads``
  threads. For ``.tflite`` it is ``Interpreter.invoke()`` only (``kseg.export.measure_latency``:
  no resize, quantization, softmax or upsampling); for ``.keras`` it is one eager model call on
  a frame already at the input size.
- **size** of the file (MB), **parameters** when the model card records them (``.keras``: counted),
  **op check** (builtin ops only, else which ops are not), input size and I/O dtypes.
- instance models (Mask R-CNN ``.tflite`` with its card, ``.keras``): the same latency, size and
  op check, and with a COCO ``--data`` pycocotools **mask and box AP** (``benchmark_instance``).
- with a dataset: **mIoU** (and per-class IoU) at label resolution, streamed through
  ``Segmenter.segment`` and ``kseg.metrics``; for person models also the **mean per-image person
  IoU** (IoU of the person class in each image, averaged; an image where neither prediction nor
  truth has a person pixel counts 1), the figure MediaPipe's selfie-segmenter reference uses.

``plot_pareto`` draws accuracy against median latency, one labelled point per model, with
reference points (other people's models) as a different marker.

Example:
    from kseg.benchmark import benchmark, format_table, plot_pareto
    rows = benchmark(["exports/people_int8.tflite", "exports/people_f32.tflite"], threads=2,
                     data="people-masks", format="masks")
    print(format_table(rows))
    plot_pareto(rows, "pareto.png", references=["MediaPipe selfie:3.8:0.878"])
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path

PARAM_KEYS = ("params", "num_params", "parameters", "param_count")

__all__ = [
    "benchmark", "benchmark_model", "benchmark_instance", "evaluate_segmenter", "latency_stats", "time_calls", "person_iou",
    "parse_reference", "machine",
    "format_table", "write_json", "plot_pareto",
]


# --------------------------------------------------------------------------------------
# pieces


def latency_stats(times_ms) -> dict:
    """Median and 90th percentile (linear interpolation, as ``np.percentile``) of timings in ms.

    Example:
        latency_stats([4.0, 1.0, 3.0, 2.0])  # {"median_ms": 2.5, "p90_ms": 3.7, "runs": 4}
    """
    t = np.asarray(list(times_ms), dtype=np.float64)
    if t.size == 0:
        raise KsegError("no latency measurement: use runs >= 1")
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": int(t.size)}


def time_calls(fn, runs: int = 50, warmup: int = 10, clock=time.perf_counter) -> list[float]:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times; return each call's ms.

    Args:
        fn: the call to time.
        runs: timed calls.
        warmup: untimed calls first (first-call allocation, XNNPACK packing, tracing).
        clock: seconds as a float (``time.perf_counter``); injectable for tests.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = clock()
        fn()
        times.append((clock() - t) * 1000.0)
    return times


def person_iou(pred_person: np.ndarray, true_person: np.ndarray, valid: np.ndarray | None = None) -> float:
    """IoU of one image's person masks; 1.0 when both are empty (nothing to find, nothing found).

    Args:
        pred_person: ``(H, W)`` bool, predicted person pixels.
        true_person: ``(H, W)`` bool, labelled person pixels.
        valid: ``(H, W)`` bool, pixels that count (labels other than 255 ignore); default all.

    Example:
        person_iou(np.array([[1, 1, 0]], bool), np.array([[0, 1, 1]], bool))  # 1/3
    """
    p, t = np.asarray(pred_person, bool), np.asarray(true_person, bool)
    if valid is not None:
        p, t = p & valid, t & valid
    union = int(np.count_nonzero(p | t))
    return 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union


def parse_reference(text) -> dict:
    """``"NAME:LATENCY_MS:SCORE"`` → ``{"name", "median_ms", "score"}`` (score a fraction 0..1).

    Example:
        parse_reference("MediaPipe selfie:3.8:0.878")
    """
    if isinstance(text, dict):
        return {"name": str(text["name"]), "median_ms": float(text["median_ms"]), "score": float(text["score"])}
    parts = str(text).rsplit(":", 2)
    try:
        name, lat, score = parts[0].strip(), float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise KsegError(
            f"reference {text!r} is not NAME:LATENCY_MS:SCORE; write e.g. \"MediaPipe selfie:3.8:0.878\""
        ) from None
    if not name or not lat > 0 or not 0.0 <= score <= 1.0:
        raise KsegError(
            f"reference {text!r}: needs a name, a latency > 0 ms and a score between 0 and 1 "
            "(a fraction: 0.878, not 87.8)"
        )
    return {"name": name, "median_ms": lat, "score": score}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """The machine the figures were measured on."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _params_from_card(card: dict):
    for key in PARAM_KEYS:
        v = card.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
    return None


def _check_path(path) -> Path:
    from kseg.runtime import check_tflite_file

    p = Path(path)
    if p.suffix == ".keras":
        if not p.is_file():
            raise KsegError(f"model file {p} not found; give the path of a .tflite or .keras file")
        return p
    return check_tflite_file(p)


def _person_class(names) -> int | None:
    lowered = [str(n).lower() for n in names]
    for key in ("person", "foreground", "people", "human"):
        if key in lowered:
            return lowered.index(key)
    return 1 if len(names) == 2 else None


def evaluate_segmenter(seg, ds, limit=None) -> dict:
    """mIoU, per-class IoU, pixel accuracy and (person models) mean per-image person IoU.

    Streams ``ds`` through ``seg.segment`` (predictions at each label's resolution) into one
    confusion matrix (``kseg.metrics``); a few images are in memory at a time.

    Args:
        seg: a ``kseg.runtime.Segmenter``.
        ds: a ``kseg.data.readers.SegDataset`` with the model's classes.
        limit: only the first ``limit`` samples.

    Returns:
        ``{"miou", "pixel_accuracy", "per_class_iou" {name: IoU or None}, "num_images",
        "skipped", "person_iou" (or None)}``.
    """
    from kseg.metrics import confusion_matrix, scores_from_confusion

    n = ds.num_classes
    if seg.num_classes != n:
        raise KsegError(
            f"the model predicts {seg.num_classes} classes but the dataset has {n} "
            f"({', '.join(ds.class_names)}); benchmark on data with the classes it was trained on"
        )
    person = seg.person_index if seg.person_index is not None and _person_class(ds.class_names) == seg.person_index else None
    cm = np.zeros((n, n), np.int64)
    person_ious = []
    skipped: list[str] = []
    from kseg.evaluate import iter_loaded
    from kseg.progress import progress

    indices = range(min(len(ds), limit) if limit else len(ds))
    name = Path(str(getattr(seg, "path", None) or "model")).name
    loaded = iter_loaded(ds, indices, skipped, workers=2, ahead=4)  # bounded read-ahead
    for _, image, mask in progress(loaded, f"{name} on {ds.name}", "images", total=len(indices)):
        pred = seg.segment(image).category_mask
        cm += confusion_matrix(mask, pred, n)
        if person is not None:
            person_ious.append(person_iou(pred == person, mask == person, mask != 255))
    num = len(indices) - len(skipped)
    if num == 0:
        raise KsegError(f"no readable sample in dataset {ds.name}; run `kseg data check` on it")
    s = scores_from_confusion(cm)
    return {
        "miou": float(s["miou"]),
        "pixel_accuracy": float(s["pixel_accuracy"]),
        "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(ds.class_names, s["per_class_iou"])},
        "person_iou": float(np.mean(person_ious)) if person_ious else None,
        "num_images": int(num),
        "skipped": skipped,
    }


# --------------------------------------------------------------------------------------
# one model, many models


def _keras_latency(seg, threads, runs, warmup, clock):
    import tensorflow as tf

    try:  # only possible before TensorFlow starts its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    x = np.zeros((*seg.input_size, 3), np.uint8)
    stats = latency_stats(time_calls(lambda: seg._backend.logits(x), runs, warmup, clock))
    used = tf.config.threading.get_intra_op_parallelism_threads()
    stats["threads"] = used or f"TF default ({os.cpu_count()} cores)"
    stats["timed"] = "Keras model call (eager, batch 1)"
    return stats


def benchmark_model(path, threads: int = 2, runs: int = 50, warmup: int = 10, dataset=None, limit=None,
                    clock=None) -> dict:
    """Benchmark one ``.tflite`` or ``.keras`` model; see ``benchmark`` for the row's keys."""
    from kseg.export import measure_latency
    from kseg.runtime import Segmenter, nonbuiltin_ops, tflite_ops

    p = _check_path(path)
    is_tflite = p.suffix != ".keras"
    seg = Segmenter(p, num_threads=threads)  # a damaged flatbuffer fails here, in one line
    card = seg.card
    row = {
        "model": p.stem,
        "path": str(p),
        "format": "tflite" if is_tflite else "keras",
        "quantization": card.get("quantization") or ("float32" if not is_tflite else None),
        "size_mb": p.stat().st_size / 1e6,
        "params": _params_from_card(card),
        "input_size": [int(v) for v in seg.input_size],
        "num_classes": int(seg.num_classes),
        "class_names": list(seg.class_names),
        "person_index": seg.person_index,
    }
    if is_tflite:
        be = seg._backend
        row["input_dtype"], row["output_dtype"] = be.input_dtype.name, be.output_dtype.name
        try:
            ops = tflite_ops(p)
        except KsegError:
            raise
        except Exception as e:  # the flatbuffer parser on a damaged file
            raise KsegError(f"cannot read the op list of {p} ({type(e).__name__}); the file is damaged — export it again") from None
        bad = nonbuiltin_ops(ops)
        row.update({"ops": sorted(set(ops)), "builtin_only": not bad, "nonbuiltin_ops": bad})
        if clock is None:
            lat = measure_latency(p, num_threads=threads, runs=runs, warmup=warmup)
            lat = {"median_ms": lat["median_ms"], "p90_ms": lat["p90_ms"], "runs": lat["runs"]}
        else:  # tests: the same loop as measure_latency, with an injected clock
            be.interpreter.set_tensor(be.inp["index"], np.zeros(be.inp["shape"], be.inp["dtype"]))
            lat = latency_stats(time_calls(be.interpreter.invoke, runs, warmup, clock))
        lat.update({"threads": threads, "timed": "Interpreter.invoke only (XNNPACK)"})
    else:
        model = seg._backend.model
        row["params"] = row["params"] or int(model.count_params())
        row["input_dtype"] = row["output_dtype"] = "float32"
        row.update({"ops": None, "builtin_only": None, "nonbuiltin_ops": None})
        lat = _keras_latency(seg, threads, runs, warmup, clock or time.perf_counter)
    lat["warmup"] = warmup
    row["latency"] = lat
    row["median_ms"], row["p90_ms"] = lat["median_ms"], lat["p90_ms"]
    row.update({"miou": None, "person_iou": None, "pixel_accuracy": None, "per_class_iou": None,
                "num_images": None, "skipped": None})
    if dataset is not None:
        row.update(evaluate_segmenter(seg, dataset, limit=limit))
        row["data"] = dataset.name
    return row


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
    from kseg.runtime import load_instance_model

    m = load_instance_model(path, config=config, num_threads=threads)
    p = Path(path)
    clock = clock or time.perf_counter
    s = m.input_size
    row = {
        "model": p.stem if not p.name.endswith(".weights.h5") else p.name[: -len(".weights.h5")],
        "path": str(p), "format": m.format, "task": "instance_segmentation",
        "quantization": m.card.get("quantization") or ("float32" if m.format == "keras" else None),
        "size_mb": p.stat().st_size / 1e6,
        "params": m.card.get("params") or (int(m.model.count_params()) if m.format == "keras" else None),
        "input_size": [s, s], "num_classes": len(m.class_names) if m.class_names else None,
        "class_names": list(m.class_names) if m.class_names else None, "person_index": None,
        "input_dtype": "float32", "output_dtype": "float32",
    }
    if m.format == "tflite":
        from kseg.runtime import nonbuiltin_ops, tflite_ops

        ops = sorted(set(tflite_ops(p)))
        bad = nonbuiltin_ops(ops)
        row.update({"ops": ops, "builtin_only": not bad, "nonbuiltin_ops": bad})
        row["input_dtype"] = np.dtype(m.model.input["dtype"]).name  # uint8 for an int8 file (boxes, scores, masks stay float32)
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
        from kseg.evaluate_instances import evaluate_instances

        r = evaluate_instances(m, data, split=split, categories=categories, limit=limit)
        row.update({"mask_ap": r["segm"]["AP"], "mask_ap50": r["segm"]["AP50"], "box_ap": r["bbox"]["AP"],
                    "num_images": r["images"], "data": r["data"], "coco": {"segm": r["segm"], "bbox": r["bbox"]}})
    return row


def _open(data, format="auto", **options):
    from kseg.config import resolve_data_path
    from kseg.data.readers import SegDataset, open_dataset

    if data is None or isinstance(data, SegDataset):
        return data
    return open_dataset(resolve_data_path(data), format, **{k: v for k, v in options.items() if v is not None})


def benchmark(paths, threads: int = 2, runs: int = 50, warmup: int = 10, data=None, format: str = "auto",
              split: str | None = None, limit: int | None = None, clock=None, **data_options) -> list[dict]:
    """Benchmark models one after the other (never concurrently, so timings do not interfere).

    Args:
        paths: ``.tflite`` / ``.keras`` files.
        threads: interpreter (and, if still possible, TensorFlow) threads.
        runs: timed forward passes per model.
        warmup: untimed forward passes first.
        data: optional dataset: a folder (opened with ``format``, ``split`` and ``data_options``
            such as ``groups="person"``) or a ``SegDataset``; its classes must be the models'.
        format: dataset format for a folder (``masks, ccp, camvid, pets, coco, auto``).
        split: dataset split (camvid ``test``, coco ``val``...).
        limit: score only the first ``limit`` samples.
        clock: a ``time.perf_counter``-like function (tests); default the real clock through
            ``kseg.export.measure_latency``.
        **data_options: more reader options (``groups``, ``border``, ``categories``).

    Returns:
        One dict per model: ``model``, ``path``, ``format``, ``quantization``, ``size_mb``,
        ``params`` (None when unknown), ``input_size``, ``input_dtype``, ``output_dtype``,
        ``ops``, ``builtin_only``, ``nonbuiltin_ops``, ``median_ms``, ``p90_ms``, ``latency``
        (with threads, runs, warm-up and what was timed), and with data ``miou``,
        ``pixel_accuracy``, ``per_class_iou``, ``person_iou`` (person models), ``num_images``.

    Raises:
        KsegError: a missing, truncated or non-model file, or data with other classes.

    Example:
        rows = benchmark(["exports/a.tflite", "exports/b.tflite"], threads=2, data="camvid",
                         format="camvid", split="test")
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise KsegError("no model given; pass one or more .tflite/.keras files")
    if runs < 1 or warmup < 0:
        raise KsegError(f"runs={runs}, warmup={warmup}: use runs >= 1 and warmup >= 0")
    for p in paths:  # fail before spending minutes on the first models
        _check_path(p)
    from kseg.runtime import model_kind

    instance = {p for p in paths if model_kind(p) == "instance"}  # Mask R-CNN: COCO mask AP instead of mIoU
    ds = _open(data, format, split=split, **data_options) if len(instance) < len(paths) else None
    return [benchmark_instance(p, threads, runs, warmup, data, split, data_options.get("categories"), limit,
                               clock=clock) if p in instance
            else benchmark_model(p, threads, runs, warmup, ds, limit, clock) for p in paths]


# --------------------------------------------------------------------------------------
# output


def _fmt(v, spec, scale=1.0):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v * scale, spec)


def _num(v):
    """2 decimals, or 2 significant digits below 0.1 (a 4 kB model is not "0.00 MB")."""
    return "n/a" if v is None else (f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.2g}")


def _count(n):
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


COLUMNS = ("model", "quant", "size MB", "params", "input", "I/O", "builtin ops", "median ms", "p90 ms",
           "mIoU %", "person IoU %")


def format_table(rows) -> str:
    """A markdown table, one row per model, with a note on how latency was measured."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        if r["builtin_only"] is None:
            ops = "n/a"
        else:
            ops = "yes" if r["builtin_only"] else "no: " + ", ".join(r["nonbuiltin_ops"])
        cells = [
            r["model"], r["quantization"] or "?", _num(r["size_mb"]), _count(r["params"]),
            "×".join(map(str, r["input_size"])), f"{r['input_dtype']}/{r['output_dtype']}", ops,
            _num(r["median_ms"]), _num(r["p90_ms"]),
            _fmt(r["miou"], ".2f", 100), _fmt(r["person_iou"], ".2f", 100),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lat = rows[0]["latency"]
        notes = [f"latency per frame: median and p90 of {lat['runs']} runs after {lat['warmup']} warm-up, "
                 f"{lat['threads']} threads, {machine()['cpu']}; "
                 ".tflite: Interpreter.invoke only (XNNPACK), .keras: one eager model call"]
        scored = [r for r in rows if r["miou"] is not None]
        if scored:
            r = scored[0]
            note = f"mIoU on {r['data']} ({r['num_images']} images, at label resolution)"
            if any(x["person_iou"] is not None for x in scored):
                note += "; person IoU: IoU of the person class per image, averaged (both empty = 1)"
            notes.append(note)
        for r in rows:
            if r.get("task") == "instance_segmentation":
                ap = (f"mask AP {r['mask_ap']:.3f}, AP50 {r['mask_ap50']:.3f}, box AP {r['box_ap']:.3f} on {r['data']} "
                      f"({r['num_images']} images, pycocotools)" if r.get("mask_ap") is not None else "no --data: not scored")
                notes.append(f"{r['model']}: instance segmentation (Mask R-CNN, {r['format']}; latency: "
                             f"{r['latency']['timed']}): {ap}")
        lines += [""] + notes
    return "\n".join(lines)


def write_json(rows, out, references=(), settings=None) -> Path:
    """Write the rows (and the machine, settings, references) as JSON, atomically."""
    def clean(v):  # strict JSON: NaN (a score with nothing to score) becomes null
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    doc = clean({"machine": machine(), "settings": settings or {}, "models": rows,
                 "references": [parse_reference(r) for r in references]})
    out = Path(out)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return out


def _pareto_front(points):
    """Points not beaten by another that is at least as fast and at least as accurate."""
    best, front = -math.inf, []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_pareto(rows, out, references=(), metric: str = "auto", title: str | None = None) -> Path:
    """Accuracy against median latency, one labelled point per model: the Pareto chart.

    Args:
        rows: rows from ``benchmark`` (with data, so they carry a score).
        out: output ``.png`` path (written atomically).
        references: other models as ``"NAME:LATENCY_MS:SCORE"`` strings or dicts, drawn as
            stars (e.g. ``"MediaPipe selfie:3.8:0.878"``, a person IoU).
        metric: ``"miou"``, ``"person_iou"`` or ``"auto"`` (person IoU when every scored row
            has one, else mIoU).
        title: figure title.

    Returns:
        The path written.

    Example:
        plot_pareto(rows, "docs/pareto_people.png", references=["MediaPipe selfie:3.8:0.878"])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = [parse_reference(r) for r in references]
    if metric == "auto":
        scored = [r for r in rows if r.get("miou") is not None]
        metric = "person_iou" if scored and all(r.get("person_iou") is not None for r in scored) else "miou"
    if metric not in ("miou", "person_iou"):
        raise KsegError(f"metric={metric!r}: use miou, person_iou or auto")
    pts = [(r["median_ms"], r[metric], r["model"]) for r in rows if r.get(metric) is not None]
    if not pts and not refs:
        raise KsegError("nothing to plot: benchmark with --data so that each model has a score, or give --reference points")
    label = {"miou": "mIoU", "person_iou": "mean per-image person IoU"}[metric]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="o", s=45, color="tab:blue", label="kseg models", zorder=3)
        for k, (x, y, name) in enumerate(sorted(pts)):  # alternate sides: close points stay legible
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5 if k % 2 == 0 else -12), fontsize=8)
    if refs:
        ax.scatter([r["median_ms"] for r in refs], [r["score"] for r in refs], marker="*", s=160,
                   color="tab:orange", edgecolor="black", linewidth=0.5, label="reference", zorder=4)
        for r in refs:
            ax.annotate(r["name"], (r["median_ms"], r["score"]), textcoords="offset points", xytext=(5, -11), fontsize=8)
    allpts = [(p[0], p[1]) for p in pts] + [(r["median_ms"], r["score"]) for r in refs]
    front = _pareto_front(allpts)
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", linestyle="--", color="grey",
                linewidth=1, label="Pareto front", zorder=2)
    xs = [p[0] for p in allpts]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    threads = next((r["latency"]["threads"] for r in rows), None)
    ax.set_xlabel("median latency per frame (ms" + (f", {threads} threads)" if threads else ")"))
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.08)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return out
