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
    kseg calibrate MODEL --config C     per-class logit biases fitted for mIoU (class-weighted models)
    kseg quantize MODEL --data D        quantization-aware fine-tuning (tfmot, tf_keras twin)
    kseg export MODEL --quantization Q  .tflite + model card, parity against the Keras model
    kseg recover MODEL.tflite --config C  a trainable .keras model back from an exported file
    kseg benchmark MODEL... --threads 2 latency, size, op check, mIoU; --plot Pareto chart
    kseg demo                           portrait mode on the bundled clip (apps.demo)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from kseg.cli import benchmark, calibrate, data, demo, evaluate, export, predict, quantize, recover, train
from kseg.cli.common import check_numbers, is_interrupt
from kseg.errors import (KsegError, forget_escaped_interrupt, forget_swallowed_interrupts, note_swallowed_interrupt,
                         raise_if_interrupted)
from kseg.paths import write_errno, write_failure

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
    for verb in (data, train, evaluate, predict, calibrate, export, quantize, recover, benchmark, demo):
        verb.add(sub)
    return parser


def _version() -> str:
    from kseg import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kseg`` and ``python -m kseg``; returns the exit status.

    User errors are one line and exit 2; Ctrl-C (SIGINT) or SIGTERM is "interrupted" and exit 130;
    a bug is one line and exit 3 (``KSEG_DEBUG=1`` shows the traceback).
    """
    own_process = argv is None  # the command line of this process, not a call from Python
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return _done(own_process, "kseg: interrupted", 130)
    previous = _sigterm_interrupts()
    unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable
    forget_swallowed_interrupts()
    try:
        check_numbers(args)
        status = int(args.func(args) or 0)
        raise_if_interrupted()  # a Ctrl-C that Python dropped on the way is still an interrupt
        return _done(own_process, None, status)
    except KsegError as e:
        return _done(own_process, f"kseg: error: {e}", 2)
    except KeyboardInterrupt as e:
        hint = str(e).strip()
        return _done(own_process, f"kseg: interrupted{'; ' + hint if hint else ''}", 130)
    except Exception as e:  # a bug, not the user's fault: still no traceback unless asked
        if is_interrupt(e):  # Ctrl-C inside TensorFlow's C++ arrives wrapped in a RuntimeError
            return _done(own_process, "kseg: interrupted", 130)
        if write_errno(e) is not None:  # a full disk or read-only folder met by a writer not ours
            where = getattr(e, "filename", None) or "a file"
            return _done(own_process, f"kseg: error: {write_failure(where, e, 'output folder')}", 2)
        if os.environ.get("KSEG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return _done(own_process, f"kseg: internal error: {type(e).__name__}: {msg} (run with KSEG_DEBUG=1 for "
                     "the traceback and report it)", 3)
    finally:
        sys.unraisablehook = unraisable
        if previous is not None and not own_process:
            signal.signal(signal.SIGTERM, previous)


def _unraisable(info) -> None:
    """A Ctrl-C that Python could not raise ("Exception ignored in AtomicFunction.__del__") is kept,
    not printed: the next output about to be renamed into place raises it instead."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        note_swallowed_interrupt()
        return
    sys.__unraisablehook__(info)


def _done(own_process: bool, line: str | None, status: int) -> int:
    """Print the final line and return ``status``; a finished command ignores later Ctrl-C.

    Once the outcome is decided, a SIGINT during the interpreter's shutdown (TensorFlow takes a
    moment) would only turn a finished command into a traceback or a signal death.
    """
    if own_process:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        forget_escaped_interrupt()
    if line:
        print(line, file=sys.stderr)
    return status


def _sigterm_interrupts():
    """SIGTERM ends a command as Ctrl-C does (outputs complete or absent, exit 130); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
