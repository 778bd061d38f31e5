"""``kseg benchmark``: latency, size, op check and accuracy of models side by side (``kseg.benchmark``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kseg.cli.common import add_dataset_args
from kseg.errors import KsegError
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg benchmark``."""
    p = sub.add_parser(
        "benchmark", help="latency, size, op check and mIoU of .tflite/.keras models; Pareto chart",
        description="Median/p90 latency per frame after warm-up (.tflite: Interpreter.invoke only), "
                    "file size, parameters, builtin-op check and, with --data, mIoU (and person IoU) "
                    "at label resolution. Prints a markdown table.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite or .keras files")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--data", help="dataset folder to score the models on")
    add_dataset_args(p)
    p.add_argument("--limit", type=int, help="only the first N samples of --data")
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="write every figure as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="Pareto chart: score against median latency")
    p.add_argument("--metric", default="auto", choices=("auto", "miou", "person_iou"), help="y axis of --plot")
    p.add_argument("--reference", action="append", default=[], metavar="NAME:LAT_MS:SCORE",
                   help='a reference point for --plot, e.g. "MediaPipe selfie:3.8:0.878" (repeatable)')
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg benchmark``: print the table, write ``--json`` and ``--plot``; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kseg.benchmark import benchmark, format_table, parse_reference, plot_pareto, write_json

    refs = [parse_reference(r) for r in args.reference]  # bad input fails before the slow part
    if args.plot and not args.data and not refs:
        raise KsegError("--plot needs --data (a score per model) or --reference points")
    for path, flag in ((args.json_out, "--json"), (args.plot, "--plot")):
        if path:
            check_writable(Path(path).parent, flag)
    options = {k: getattr(args, k, None) for k in ("groups", "border")}
    if getattr(args, "categories", None):
        options["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    rows = benchmark(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup, data=args.data,
                     format=args.format, split=args.split, limit=args.limit, **options)
    print(format_table(rows))
    for line in (rows[0].get("skipped") or []) if rows else []:  # the same samples for every model
        print(f"skipped: {line}", file=sys.stderr)
    if args.json_out:
        settings = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "data": args.data,
                    "format": args.format, "split": args.split, "limit": args.limit,
                    "command": " ".join(["kseg", *sys.argv[1:]])}
        print(f"wrote {write_json(rows, args.json_out, refs, settings)}")
    if args.plot:
        print(f"wrote {plot_pareto(rows, args.plot, refs, metric=args.metric)}")
    return 0
