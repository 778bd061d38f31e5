"""``kseg export``: a model to ``.tflite`` with its model card (``kseg.export``; Mask R-CNN too)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kseg.cli.common import at_size, command_line, config_data, instance_branch, open_data, quiet_tf
from kseg.errors import KsegError
from kseg.paths import check_writable, staged_output


def add(sub) -> None:
    """Add ``kseg export``."""
    from kseg.export import IO_DTYPES, QUANTIZATIONS

    p = sub.add_parser(
        "export", help="convert a model to .tflite (float32, float16, dynamic, int8, qat) with a model card",
        description="Write exports/NAME.tflite and its model card exports/NAME.json.",
    )
    p.add_argument("model", help=".keras model, or for --quantization qat the folder kseg quantize wrote")
    p.add_argument("--quantization", default="int8", choices=QUANTIZATIONS)
    p.add_argument("--data", help="dataset folder: calibration images (int8) and parity/metrics")
    p.add_argument("--config", help="a training config (configs/NAME.yaml): its training data calibrates and "
                   "its held-out validation split measures parity, as in kseg train")
    p.add_argument("--format", default="auto", help="dataset format: masks, ccp, camvid, pets, coco, auto")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size for models with a free size")
    p.add_argument("--io-dtype", default="uint8", choices=IO_DTYPES)
    p.add_argument("--float-ops", metavar="OP,OP", help="int8 only: TFLite ops kept in float, the rest int8 "
                   "(float I/O), e.g. SegFormer: BATCH_MATMUL,SOFTMAX,MEAN,SQUARED_DIFFERENCE,RSQRT,GELU,NEG,MUL,ADD,SUB; "
                   "default: the --config's export.float_ops; '' for every op in int8")
    p.add_argument("--calibration", type=int, default=100, help="calibration images (default 100)")
    p.add_argument("--parity", type=int, default=20, help="images for Keras/TFLite parity with --data (0: skip)")
    p.add_argument("--keras-model", help="with qat: the float .keras model to compare against")
    p.add_argument("--licence", help="data licence recorded in the card")
    p.add_argument("--threads", type=int, default=2, help="threads for the latency measurement")
    p.add_argument("--out", required=True, help="output .tflite path, e.g. exports/NAME.tflite")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg export``: a Mask R-CNN goes to the instance exporter, the rest to ``kseg.export``.

    The ``.tflite`` and its card are written in a staging folder beside ``--out`` and moved into
    place together at the end: a failure or Ctrl-C leaves the earlier files, never a model
    without its card.
    """
    quiet_tf()
    out = Path(args.out)
    if out.suffix != ".tflite":
        raise KsegError(f"--out {args.out}: give a .tflite path, e.g. exports/NAME.tflite")
    check_writable(out.parent, "--out")  # before any slow work
    if args.keras_model and not Path(args.keras_model).is_file():
        raise KsegError(f"--keras-model {args.keras_model} not found; give the float .keras model")
    with staged_output(out, "--out") as staged:
        if instance_branch(args):
            line = _run_instances(args, staged)
        else:
            line = _run_semantic(args, staged)
    print(line)
    return 0


def _spread(n: int, k: int) -> list[int]:
    """``min(k, n)`` indices spread evenly over ``range(n)``."""
    k = min(int(k), n)
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist())) if k > 0 else []


def _check_classes(n_model: int, names, source: str, model: str) -> None:
    """Refuse, before any work, class names or data that do not match the model's outputs.

    One output channel is a sigmoid map of two classes (as ``kseg.runtime.Segmenter`` reads it).
    """
    if names is not None and len(names) != (2 if n_model == 1 else n_model):
        raise KsegError(
            f"{source} has {len(names)} classes ({', '.join(map(str, names[:6]))}{', ...' if len(names) > 6 else ''}) "
            f"but {model} predicts {n_model}; calibrate and compare on the data the model was trained on"
        )


def _run_semantic(args, out: Path) -> str:
    from kseg.export import assert_builtin_ops, measure_latency, parity, tflite_ops, to_tflite, write_model_card
    from kseg.metadata import embed_metadata_file
    from kseg.models.saving import load_keras_file
    from kseg.runtime import card_path

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    card = {"command": command_line(), "data_licence": args.licence}
    ds = val = None
    float_ops = [o for o in (args.float_ops or "").split(",") if o.strip()]
    if args.config:
        from kseg.config import load_config

        cfg = load_config(args.config)
        if args.float_ops is None and args.quantization == "int8" and cfg.export.float_ops:
            float_ops = list(cfg.export.float_ops)
            print(f"int8 with {','.join(float_ops)} in float ({args.config}: export.float_ops; "
                  "--float-ops '' quantizes every op)")
        size = tuple(args.size) if args.size else tuple(cfg.data.size)
        ds, val, data_name = config_data(args.config, size, training=False)
        card["training_data"] = data_name
    elif args.data:
        ds = open_data(args.data, args.format)
    keras_model = None
    source = args.model
    if args.quantization == "qat":
        meta = Path(args.model) / "qat.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            card.update({"class_names": info.get("class_names"), "colors": info.get("colors"),
                         "training_data": info.get("data")})
            keras_model = args.keras_model or info.get("source_model")
        else:
            keras_model = args.keras_model
    else:
        keras_model = source = load_keras_file(Path(args.model))
        if args.size:
            keras_model = source = at_size(keras_model, args.size)
        classes = Path(args.model).with_name("classes.json")
        if classes.is_file():
            meta = json.loads(classes.read_text())
            card.update({"class_names": meta.get("class_names"), "colors": meta.get("colors")})
        n_model = int(keras_model.output_shape[-1])
        _check_classes(n_model, card.get("class_names"), str(classes), args.model)
        if ds is not None:
            _check_classes(n_model, list(ds.class_names), f"--{'config' if args.config else 'data'} "
                           f"{args.config or args.data}", args.model)
    if args.quantization == "qat" and ds is not None and card.get("class_names") is not None:
        _check_classes(len(card["class_names"]), list(ds.class_names), f"--data {args.config or args.data}",
                       f"the QAT model {args.model}")
    rep = None
    cal_idx = []
    images = masks = None
    if ds is not None:
        card.setdefault("training_data", args.data)
        if card.get("class_names") is None:
            card.update({"class_names": list(ds.class_names), "colors": ds.colors.tolist()})
        if val is None:
            _, val = ds.split(0.1)
            val = val if len(val) else ds
        # spread over the whole set: a concatenation of sources is ordered by source
        cal_idx = _spread(len(ds), args.calibration)
        rep = lambda: (ds.load(int(i))[0].astype(np.float32) for i in cal_idx)  # noqa: E731
        if args.parity:
            pairs = [val.load(int(i)) for i in _spread(len(val), args.parity)]
            images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    out = to_tflite(source, out, quantization=args.quantization, representative_data=rep,
                    io_dtype=args.io_dtype, input_size=tuple(args.size) if args.size else None,
                    card=card, num_calibration=len(cal_idx) if rep is not None else args.calibration,
                    float_ops=float_ops or None)
    ops = assert_builtin_ops(out) if args.quantization in ("int8", "qat") else tflite_ops(out)
    extra = {"latency_ms": measure_latency(out, num_threads=args.threads)}
    if images is not None and keras_model is not None:
        if isinstance(keras_model, (str, os.PathLike)):
            keras_model = load_keras_file(Path(keras_model))
            if args.size:
                keras_model = at_size(keras_model, args.size)
            extra["params"] = int(keras_model.count_params())
        extra["metrics"] = {"parity_" + k: v for k, v in parity(keras_model, out, images, masks).items()}
    write_model_card(out, **extra)
    embed_metadata_file(out)  # again: the metadata carries the card's final licence and description
    final = Path(args.out)
    return f"wrote {final} ({out.stat().st_size / 1e6:.2f} MB, {len(set(ops))} op types) and {card_path(final)}"


def _run_instances(args, out: Path) -> str:
    from kseg.export_instances import export_instance_model
    from kseg.runtime import load_instance_model

    model = load_instance_model(args.model, config=args.config)
    card = export_instance_model(model, out, args.quantization, data=args.data, parity_count=args.parity,
                                 threads=args.threads, licence=args.licence, command=command_line())
    par = card.get("parity")
    line = f"wrote {args.out} ({card['size_bytes'] / 2**20:.1f} MB, {args.quantization}, builtin ops only) and its card"
    if par:
        line += (f"; parity vs Keras on {par['images']} images: {par['matched']}/{par['keras_detections']} detections "
                 f"matched, median box Δ {par['median_box_diff']:.2f} px, mean mask IoU {par['mean_mask_iou']:.3f}")
    return line
