"""``kseg data check`` and ``kseg data preview``: look at a dataset before training on it."""

from __future__ import annotations

import json

from kseg.cli.common import add_dataset_args, dataset_options
from kseg.errors import KsegError


def add(sub) -> None:
    """Add ``kseg data {check,preview}``."""
    p = sub.add_parser("data", help="inspect datasets: check, preview")
    dsub = p.add_subparsers(dest="data_command", metavar="{check,preview}")
    dsub.required = True
    add_check(dsub)
    add_preview(dsub)


def add_check(subparsers) -> None:
    """Add ``check`` to a ``kseg data`` subparsers object (options: --format, --split,
    --groups, --border, --categories, --json)."""
    p = subparsers.add_parser(
        "check", help="counts, class histogram, sizes, and every bad sample (exit 1 if any)",
        description="Read every sample; report counts, class histogram, resolutions and every bad "
        "sample (unreadable file, size mismatch, label out of range, missing pair).",
    )
    p.add_argument("path", help="dataset folder")
    add_dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    """Run ``kseg data check``: print the report; return 1 when any sample is bad, else 0."""
    from kseg.config import resolve_data_path
    from kseg.data.check import check_dataset

    report = check_dataset(resolve_data_path(args.path), args.format, **dataset_options(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.ok else 1


def add_preview(subparsers):
    """Add ``preview`` to the ``kseg data`` sub-commands."""
    p = subparsers.add_parser("preview", help="PNG grid of augmented samples with their masks")
    p.add_argument("path", help="dataset folder")
    add_dataset_args(p)
    p.add_argument("--out", default="preview.png", help="output PNG (default preview.png)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--size", type=int, default=256, help="side of each sample in pixels (default 256)")
    p.add_argument("--portrait", action="store_true", help="head-and-shoulders crops of people")
    p.add_argument("--no-augment", action="store_true", help="show the validation resize instead")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_preview)
    return p


def run_preview(args) -> int:
    """Run ``kseg data preview``; returns the exit status."""
    from kseg.data.pipeline import Augment
    from kseg.data.preview import write_preview
    from kseg.data.readers import open_dataset

    if args.n < 1 or args.size < 8:
        raise KsegError(f"--n {args.n} --size {args.size}: need at least 1 sample of at least 8 pixels")
    ds = open_dataset(args.path, args.format, **dataset_options(args))
    augment = Augment(portrait=1.0 if args.portrait else 0.0)
    write_preview(ds, args.out, n=args.n, size=(args.size, args.size), seed=args.seed, augment=augment,
                  training=not args.no_augment)
    print(f"wrote {args.out} ({min(args.n, len(ds))} samples of {ds.name})")
    return 0
