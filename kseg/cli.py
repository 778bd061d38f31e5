"""The ``kseg`` command line: parse, call, and turn user errors into one line.

Commands:
    kseg data check PATH --format F     counts, histogram, sizes, every bad sample
    kseg data preview PATH --format F   PNG grid of augmented samples with their masks
    kseg train --config configs/X.yaml  train with model.fit (resumes after a kill)
    kseg evaluate MODEL DATA            per-class IoU, mIoU, accuracy, Dice, confusion matrix;
                                        Mask R-CNN on COCO: box and mask AP/AR (pycocotools)
    kseg predict MODEL IMAGE...         masks and overlays
    kseg quantize MODEL --data D        quantization-aware fine-tuning (tfmot, tf_keras twin)
    kseg export MODEL --quantization Q  .tflite + model card, parity against the Keras model
    kseg benchmark MODEL... --threads 2 latency, size, op check, mIoU; --plot Pareto chart
    kseg demo                           portrait mode on the bundled clip (apps.demo)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kseg.errors import KsegError


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# --------------------------------------------------------------------------------------
# train / evaluate / predict


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a model (config file and/or flags); resumes a killed run of the same name",
        description="Train with model.fit. Writes runs/NAME/{best.keras, last.keras, history.csv, "
        "curves.png, config.yaml}. Run the same command again to resume after a kill.",
    )
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--name", help="run name (folder under --out-dir)")
    p.add_argument("--out-dir", help="where runs go (default runs/)")
    p.add_argument("--model", help="model name, e.g. unet, deeplab_v3_plus")
    p.add_argument("--encoder", help="encoder, e.g. efficientnet_lite0")
    p.add_argument("--data", help="dataset folder (with --format)")
    p.add_argument("--format", help="dataset format: masks, ccp, camvid, pets, coco, auto")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--lr", type=float)
    p.add_argument("--strategy", choices=["mirrored"], help="tf.distribute strategy")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="split the CPU into N logical devices (to try --strategy mirrored on a CPU)")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    _quiet_tf()
    from kseg.config import load_config

    flags = {
        "name": args.name,
        "out_dir": args.out_dir,
        "model.name": args.model,
        "train.epochs": args.epochs,
        "data.batch_size": args.batch_size,
        "train.learning_rate": args.lr,
        "train.strategy": args.strategy,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.size:
        overrides.append(f"data.size=[{args.size[0]}, {args.size[1]}]")
    if args.encoder:
        overrides.append(f"model.kwargs.encoder={args.encoder}")
    if args.data:
        overrides.append(f"data.train=[{{path: '{args.data}', format: {args.format or 'auto'}}}]")
    if not args.config and not args.data:
        raise KsegError("kseg train needs --config FILE or --data PATH --format F")
    cfg = load_config(args.config, overrides + args.overrides)
    if args.cpu_devices:
        from kseg.train import configure_cpu_devices

        configure_cpu_devices(args.cpu_devices)
    from kseg.train import fit

    fit(cfg)
    print(f"run written to {cfg.run_dir} (best.keras, history.csv, curves.png)")
    return 0


def _add_dataset_args(p):
    p.add_argument("--format", default="auto", help="masks, ccp, camvid, pets, coco, auto")
    p.add_argument("--split", help="camvid: train|val|test; coco: train|val")
    p.add_argument("--groups", help="ccp: suggested|person|raw|PATH.json")
    p.add_argument("--border", choices=["ignore", "pet", "class"], help="pets trimap border (class: 3 classes)")
    p.add_argument("--categories", help="coco: comma-separated category names (default person)")


def _dataset_options(args) -> dict:
    opts = {}
    for key in ("split", "groups", "border"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    if getattr(args, "categories", None):
        opts["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    return opts


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a model on a dataset (per-class IoU, mIoU, Dice, ...; "
                       "Mask R-CNN: COCO box/mask AP)")
    p.add_argument("model", help=".keras model; instance models also .weights.h5 (with --config) or an exported .tflite")
    p.add_argument("data", help="dataset folder; instance models: a COCO folder (--split, default val) or an instances JSON")
    _add_dataset_args(p)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size for models with a free input size")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--held-out", type=float, metavar="FRACTION",
                   help="score only the validation split kseg train held out with this data.val_fraction "
                        "(and --seed), e.g. 0.15")
    p.add_argument("--seed", type=int, default=0, help="split seed for --held-out (train.seed of the run)")
    p.add_argument("--out", help="folder for confusion.png, overlays/ and metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    inst = p.add_argument_group("instance models (Mask R-CNN)")
    inst.add_argument("--config", help="the configs/mask_rcnn_*.yaml a .weights.h5 file was trained with")
    inst.add_argument("--results", metavar="FILE.json", help="write the detections in COCO result format")
    inst.add_argument("--images", help="image folder of an annotation JSON (default: guessed beside it)")
    p.set_defaults(func=_run_evaluate)


def _instance_branch(args) -> bool:
    """Whether a command's MODEL is a Mask R-CNN (and its DATA COCO), failing in one line on a mix."""
    from kseg.models.mask_rcnn.commands import INSTANCE_HINT, model_kind

    kind = model_kind(args.model)
    data = getattr(args, "data", None)
    if kind != "instance" and data and str(data).endswith(".json"):
        if kind == "semantic":
            raise KsegError(f"{args.model} is a semantic segmentation model; a COCO annotation JSON scores "
                            f"instances (box/mask AP) and needs {INSTANCE_HINT}")
        return True  # let the instance loader say what is wrong with the file
    return kind == "instance"


def _run_instance_evaluate(args) -> int:
    import json

    from kseg.models.mask_rcnn.commands import evaluate_instances, format_instance_report, load_instance_model

    model = load_instance_model(args.model, config=args.config)
    cats = _dataset_options(args).get("categories")
    report = evaluate_instances(model, args.data, split=args.split, categories=cats, images=args.images,
                                limit=args.limit, results_path=args.results)
    if args.results:
        report["results_file"] = args.results
    if args.out:
        from kseg.paths import atomic_path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(args.out) / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_instance_report(report))
        if args.results:
            print(f"detections (COCO result format) written to {args.results}")
    return 0


def _run_evaluate(args) -> int:
    _quiet_tf()
    import json

    if _instance_branch(args):
        return _run_instance_evaluate(args)
    if args.results or args.config or args.images:
        raise KsegError(f"--results/--config/--images are for instance models; {args.model} is a semantic model")
    from kseg.config import resolve_data_path
    from kseg.data.readers import open_dataset
    from kseg.evaluate import evaluate, load_model

    ds = open_dataset(resolve_data_path(args.data), args.format, **_dataset_options(args))
    if args.held_out is not None:
        ds = ds.split(args.held_out, seed=args.seed)[1]
    model = load_model(args.model)
    report = evaluate(model, ds, size=tuple(args.size) if args.size else None,
                      batch_size=args.batch_size, out_dir=args.out, limit=args.limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
        for line in report.skipped:
            print(f"skipped: {line}", file=sys.stderr)
    return 0


def _add_predict(sub):
    p = sub.add_parser("predict", help="write masks and overlays for images")
    p.add_argument("model", help=".keras model")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    _quiet_tf()
    import json

    from kseg.evaluate import load_model, predict

    model = load_model(args.model)
    classes = Path(args.model).with_name("classes.json")
    names = colors = None
    if classes.is_file():
        meta = json.loads(classes.read_text())
        names, colors = meta.get("class_names"), meta.get("colors")
    paths = predict(model, args.images, args.out, class_names=names, colors=colors,
                    size=tuple(args.size) if args.size else None)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def _run_export(args) -> int:
    """``kseg export``: a Mask R-CNN goes to ``kseg.models.mask_rcnn.commands``, the rest to ``kseg.export``."""
    _quiet_tf()
    from kseg import export

    if not _instance_branch(args):
        return export.run_cli(args)
    import shlex

    from kseg.models.mask_rcnn.commands import export_instance_model, load_instance_model

    model = load_instance_model(args.model, config=args.config)
    card = export_instance_model(model, args.out, args.quantization, data=args.data, parity_count=args.parity,
                                 threads=args.threads, licence=args.licence,
                                 command=shlex.join(["kseg", *sys.argv[1:]]))
    par = card.get("parity")
    line = f"wrote {args.out} ({card['size_bytes'] / 2**20:.1f} MB, {args.quantization}, builtin ops only) and its card"
    if par:
        line += (f"; parity vs Keras on {par['images']} images: {par['matched']}/{par['keras_detections']} detections "
                 f"matched, median box Δ {par['median_box_diff']:.2f} px, mean mask IoU {par['mean_mask_iou']:.3f}")
    print(line)
    return 0


# --------------------------------------------------------------------------------------
# data


def _add_data(sub):
    p = sub.add_parser("data", help="inspect datasets: check, preview")
    dsub = p.add_subparsers(dest="data_command", metavar="{check,preview}")
    dsub.required = True
    from kseg.data import check, preview

    check.add_cli(dsub)
    preview.add_cli(dsub)


# --------------------------------------------------------------------------------------
# demo


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="portrait mode on the bundled clip, headless: demo_out/portrait.mp4 + before_after.png",
        description="Run an effect (portrait blur by default) over the bundled 640×480 clip "
        "assets/book.mkv with the shipped model, write OUT/EFFECT.mp4 and OUT/before_after.png, "
        "print frames/s. For a webcam: python -m apps.webcam.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    p.add_argument("--model", default="exports/portrait.tflite", help="person model (default exports/portrait.tflite)")
    p.add_argument("--source", default="assets/book.mkv", help="video to process (default the bundled clip)")
    p.add_argument("--effect", choices=["portrait", "swap", "mask"], default="portrait")
    p.add_argument("--strength", type=float, default=0.6, help="effect strength 0..1 (default 0.6)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--keep", choices=["all", "largest", "nearest", "center"], default="all",
                   help="portrait: which people stay sharp (needs the instance model; default all)")
    p.add_argument("--instance-model", default=None,
                   help="person instance model for --keep (default exports/person-instances.tflite)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    _quiet_tf()
    from apps.demo import main as demo_main

    return demo_main(args.out, args.model, args.source, args.effect, args.strength, args.threads,
                     keep=args.keep, instance_model=args.instance_model)


# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kseg",
        description="Image segmentation with Keras 3: data, training, evaluation, export, apps.",
    )
    parser.add_argument("--version", action="version", version=f"kseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_data(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    from kseg import export

    export.add_cli(sub)  # kseg export, kseg quantize
    sub.choices["export"].set_defaults(func=_run_export)  # Mask R-CNN files go to their own exporter
    from kseg import benchmark

    benchmark.add_cli(sub)  # kseg benchmark
    _add_demo(sub)
    return parser


def _version() -> str:
    from kseg import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kseg`` and ``python -m kseg``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KsegError as e:
        print(f"kseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kseg: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not the user's fault: still no traceback unless asked
        if os.environ.get("KSEG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        print(
            f"kseg: internal error: {type(e).__name__}: {msg} (run with KSEG_DEBUG=1 for the "
            "traceback and report it)",
            file=sys.stderr,
        )
        return 3
