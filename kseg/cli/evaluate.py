"""``kseg evaluate``: score a semantic model on a dataset, or a Mask R-CNN on COCO annotations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kseg.cli.common import add_dataset_args, dataset_options, instance_branch, quiet_tf
from kseg.errors import KsegError
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg evaluate``."""
    p = sub.add_parser("evaluate", help="score a model on a dataset (per-class IoU, mIoU, Dice, ...; two-class "
                       "models also MAE, S-measure, E-measure, F-beta; Mask R-CNN: COCO box/mask AP)")
    p.add_argument("model", help=".keras model or exported .tflite; instance models also .weights.h5 (with --config)")
    p.add_argument("data", help="dataset folder; instance models: a COCO folder (--split, default val) or an instances JSON")
    add_dataset_args(p)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size for models with a free input size")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="interpreter threads for a .tflite model (default 2)")
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--flip", action="store_true",
                   help="semantic models: average each image's class probabilities with its mirror image's "
                        "(test-time flip; twice the model time)")
    p.add_argument("--held-out", type=float, metavar="FRACTION",
                   help="score only the validation split kseg train held out with this data.val_fraction "
                        "(and --seed), e.g. 0.15")
    p.add_argument("--seed", type=int, default=0, help="split seed for --held-out (train.seed of the run)")
    p.add_argument("--out", help="folder for confusion.png, overlays/ and metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--compare", metavar="MODEL",
                   help="also score this model on the same images (e.g. the shipped file), side by side; "
                        "--flip applies to MODEL only, so `--flip --compare MODEL` measures the flip")
    p.add_argument("--bootstrap", type=int, default=None, metavar="N",
                   help="95%% intervals from N bootstrap draws over the images (default 2000 with --compare, "
                        "else none); with --compare the difference's interval is paired")
    inst = p.add_argument_group("instance models (Mask R-CNN)")
    inst.add_argument("--config", help="the configs/mask_rcnn_*.yaml a .weights.h5 file was trained with")
    inst.add_argument("--results", metavar="FILE.json", help="write the detections in COCO result format")
    inst.add_argument("--images", help="image folder of an annotation JSON (default: guessed beside it)")
    inst.add_argument("--panoptic", metavar="SEMANTIC_MODEL",
                      help="panoptic quality (PQ, SQ, RQ) on a COCO folder: things from MODEL (an instance model), "
                           "stuff from this semantic model's 'background' class (e.g. exports/portrait.tflite)")
    inst.add_argument("--stuff-area", type=int, default=4096,
                      help="--panoptic: stuff segments under this many pixels are dropped (default 4096)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg evaluate``: a Mask R-CNN goes to the COCO evaluation, the rest to ``kseg.evaluate``."""
    quiet_tf()
    if args.out:
        check_writable(args.out, "--out")
    if args.results:
        check_writable(Path(args.results).parent, "--results")
    if args.flip and (args.panoptic or instance_branch(args)):
        raise KsegError(f"--flip is for semantic models; {args.model} is scored as an instance model: leave --flip out")
    if args.panoptic:
        return _run_panoptic(args)
    if instance_branch(args):
        return _run_instances(args)
    if args.results or args.config or args.images:
        raise KsegError(f"--results/--config/--images are for instance models; {args.model} is a semantic model")
    _check_bootstrap(args)
    from kseg.config import resolve_data_path
    from kseg.data.readers import open_dataset
    from kseg.evaluate import check_classes, evaluate, open_model

    ds = open_dataset(resolve_data_path(args.data), args.format, **dataset_options(args))
    if args.held_out is not None:
        ds = ds.split(args.held_out, seed=args.seed)[1]
    model = open_model(args.model, num_threads=args.threads, flip=args.flip)
    flip_pairs = None
    if args.flip and not hasattr(model, "segment"):  # a .keras model: left/right classes from its run's card
        from kseg.runtime import read_card

        flip_pairs = (read_card(args.model) or {}).get("flip_pairs")
    other = None
    if args.compare:
        from kseg.runtime import model_kind

        if model_kind(args.compare) == "instance":
            raise KsegError(f"--compare {args.compare} is an instance model; {args.model} is a semantic model: "
                            f"compare it with a semantic model")
        other = open_model(args.compare, num_threads=args.threads)  # --flip is MODEL's alone
        check_classes(other, ds, args.compare)
    boot = args.bootstrap if args.bootstrap is not None else (2000 if other else 0)
    keep = bool(other is not None or boot)
    report = evaluate(model, ds, size=tuple(args.size) if args.size else None,
                      batch_size=args.batch_size, out_dir=args.out, limit=args.limit,
                      flip=args.flip, flip_pairs=flip_pairs, per_image=keep)
    out = report.to_dict()
    text = [report.format_text()]
    if other is not None:
        base = evaluate(other, ds, size=tuple(args.size) if args.size else None, batch_size=args.batch_size,
                        limit=args.limit, per_image=True)
        if base.per_image_index != report.per_image_index:
            raise KsegError(f"{args.model} and {args.compare} were scored on different images (a sample failed to "
                            f"read in one run); run `kseg data check` on {args.data}")
        out["compare"] = {"model": str(args.compare), **base.to_dict()}
        text += ["", f"--compare {args.compare}:", base.format_text()]
    if boot:
        from kseg.metrics import iou_bootstrap

        b = iou_bootstrap(report.per_image, base.per_image if other is not None else None, ds.class_names,
                          resamples=boot)
        out["bootstrap"] = b
        text += ["", _format_iou_bootstrap(b, args.compare)]
    if _write_report(args, out):
        return 0
    print("\n".join(text))
    for line in report.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    return 0


def _check_bootstrap(args) -> None:
    if args.bootstrap is not None and args.bootstrap < 0:
        raise KsegError(f"--bootstrap {args.bootstrap}: give a number of draws (e.g. 2000), or 0 for none")


def _format_iou_bootstrap(b: dict, other) -> str:
    """``iou_bootstrap``'s figures as lines of text (percent)."""
    def pc(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    def sd(v):
        return "n/a" if v is None else f"{100 * v:+.1f}"

    paired = "per_class_diff" in b
    head = (f"bootstrap over the {b['images']} images ({b['resamples']} draws, {100 * b['level']:.0f}% percentile "
            f"intervals{'; differences paired, ' + str(other) + ' subtracted' if paired else ''}):")
    lines = [head, f"mIoU {pc(b['miou'])} [{pc(b['miou_ci'][0])}, {pc(b['miou_ci'][1])}]"
             + (f"; difference {sd(b['diff_miou'])} [{sd(b['diff_miou_ci'][0])}, {sd(b['diff_miou_ci'][1])}], "
                f"not better in {100 * b['p_not_better']:.1f}% of draws" if paired else "")]
    for name, (v, lo, hi) in b["per_class_iou"].items():
        line = f"  {name}: {pc(v)} [{pc(lo)}, {pc(hi)}]"
        if paired:
            d, dlo, dhi = b["per_class_diff"][name]
            line += f"  difference {sd(d)} [{sd(dlo)}, {sd(dhi)}]"
        lines.append(line)
    return "\n".join(lines)


def _run_instances(args) -> int:
    from kseg.evaluate_instances import evaluate_instances, format_instance_report
    from kseg.runtime import load_instance_model

    _check_bootstrap(args)
    model = load_instance_model(args.model, config=args.config)
    other = load_instance_model(args.compare) if args.compare else None
    boot = args.bootstrap if args.bootstrap is not None else (2000 if other else 0)
    cats = dataset_options(args).get("categories")
    report = evaluate_instances(model, args.data, split=args.split, categories=cats, images=args.images,
                                limit=args.limit, results_path=args.results, compare=other, bootstrap=boot)
    if args.results:
        report["results_file"] = args.results
    if _write_report(args, report):
        return 0
    print(format_instance_report(report))
    if args.results:
        print(f"detections (COCO result format) written to {args.results}")
    return 0


def _write_report(args, report) -> bool:
    """``--out DIR``: DIR/metrics.json (atomically); ``--json``: the report on stdout (returns True)."""
    if args.out:
        from kseg.paths import atomic_path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(args.out) / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    return bool(args.json)


def _run_panoptic(args) -> int:
    from kseg.evaluate_panoptic import evaluate_panoptic, format_panoptic_report
    from kseg.runtime import INSTANCE_HINT, Segmenter, load_instance_model, model_kind

    if args.results or args.config or args.images or args.held_out is not None or args.compare or args.bootstrap is not None:
        raise KsegError("--panoptic takes a COCO folder; --results/--config/--images/--held-out/--compare/--bootstrap "
                        "do not apply")
    if model_kind(args.model) == "semantic":
        raise KsegError(f"--panoptic: MODEL gives the things and must be {INSTANCE_HINT}; {args.model} is a "
                        "semantic model (give that one as --panoptic)")
    if model_kind(args.panoptic) == "instance":
        raise KsegError(f"--panoptic {args.panoptic}: give a semantic segmentation model with a 'background' "
                        "class (the stuff), e.g. exports/portrait.tflite")
    things = dataset_options(args).get("categories") or ("person",)
    model = load_instance_model(args.model, num_threads=args.threads)
    seg = Segmenter(args.panoptic, num_threads=args.threads)
    report = evaluate_panoptic(model, seg, args.data, split=args.split or "val", things=things, limit=args.limit,
                               stuff_area_limit=args.stuff_area)
    if not _write_report(args, report):
        print(format_panoptic_report(report))
    return 0
