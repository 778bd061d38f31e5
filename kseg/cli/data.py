"""``kseg data check``, ``preview`` and ``distill``: look at a dataset before training on it, or
make one from a teacher model's labels of unlabeled frames."""

from __future__ import annotations

import json
from pathlib import Path

from kseg.cli.common import add_dataset_args, dataset_options
from kseg.errors import KsegError
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg data {check,preview,distill}``."""
    p = sub.add_parser("data", help="inspect datasets: check, preview; make one: distill")
    dsub = p.add_subparsers(dest="data_command", metavar="{check,preview,distill}")
    dsub.required = True
    add_check(dsub)
    add_preview(dsub)
    add_distill(dsub)


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
    check_writable(Path(args.out).parent, "--out")
    ds = open_dataset(args.path, args.format, **dataset_options(args))
    augment = Augment(portrait=1.0 if args.portrait else 0.0)
    write_preview(ds, args.out, n=args.n, size=(args.size, args.size), seed=args.seed, augment=augment,
                  training=not args.no_augment)
    print(f"wrote {args.out} ({min(args.n, len(ds))} samples of {ds.name})")
    return 0


def add_distill(subparsers):
    """Add ``distill`` to the ``kseg data`` sub-commands."""
    p = subparsers.add_parser(
        "distill", help="label unlabeled video frames with a teacher model (a masks dataset)",
        description="Run a teacher (MediaPipe's selfie segmenter, or a kseg person .tflite) on every "
        "N-th frame of the videos and write a masks dataset: person where the teacher is sure "
        "(p >= --high), background where it is sure (p <= --low), ignore (255) between.",
    )
    p.add_argument("videos", nargs="+", help="video files (mp4, mkv, avi)")
    p.add_argument("--teacher", required=True,
                   help="selfie-style .tflite (e.g. ../shared/peers/selfie_segmentation.tflite) or a kseg export")
    p.add_argument("--out", required=True, help="dataset folder to write (replaced only when complete)")
    p.add_argument("--every", type=int, default=6, help="keep one frame in N (default 6)")
    p.add_argument("--low", type=float, default=0.3, help="background at or below this probability")
    p.add_argument("--high", type=float, default=0.7, help="person at or above this probability")
    p.add_argument("--min-person", type=float, default=0.0,
                   help="leave out frames with less confident person area than this fraction (default 0: keep all)")
    p.set_defaults(func=run_distill)
    return p


def run_distill(args) -> int:
    """Run ``kseg data distill``; returns the exit status."""
    from pathlib import Path

    from kseg.distill import SegmenterTeacher, SelfieTeacher, label_frames, video_frames

    if args.every < 1:
        raise KsegError(f"--every {args.every}: keep one frame in N needs N >= 1")
    missing = [v for v in args.videos if not Path(v).is_file()]
    if missing:
        raise KsegError(f"video {missing[0]} not found; give existing video files")
    teacher_path = Path(args.teacher)
    if not teacher_path.is_file():
        raise KsegError(f"teacher {teacher_path} not found; MediaPipe's selfie segmenter is in ../shared/peers/")
    kseg_model = teacher_path.with_suffix(".json").is_file()
    teacher = SegmenterTeacher(teacher_path) if kseg_model else SelfieTeacher(teacher_path)
    ds = label_frames(teacher, video_frames(args.videos, every=args.every), args.out, low=args.low,
                      high=args.high, min_person=args.min_person)
    print(f"wrote {args.out}: {len(ds)} frames labelled by {teacher_path.name} "
          f"(use it as a masks dataset with class_names [background, person], binary: false)")
    return 0
