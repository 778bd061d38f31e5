"""The ``kseg`` command line: parse, call, and turn user errors into one line.

One module per verb; each has ``add(subparsers)`` (its argparse parser) and ``run(args)``
(validate, call the library with plain typed arguments, print). This package is the only
place that knows argparse; nothing outside it imports it.

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

from kseg.cli import benchmark, data, demo, evaluate, export, predict, quantize, train
from kseg.cli.common import check_numbers
from kseg.errors import KsegError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``kseg`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="kseg",
        description="Image segmentation with Keras 3: data, training, evaluation, export, apps.",
    )
    parser.add_argument("--version", action="version", version=f"kseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for verb in (data, train, evaluate, predict, export, quantize, benchmark, demo):
        verb.add(sub)
    return parser


def _version() -> str:
    from kseg import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kseg`` and ``python -m kseg``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
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
