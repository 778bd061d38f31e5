"""``kseg demo`` (``make demo``): an app effect over the bundled clip, headless.

The one place under ``kseg/`` that imports ``apps``: lazily, through its entry point
``apps.demo.main``.
"""

from __future__ import annotations

from kseg.cli.common import quiet_tf
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg demo``."""
    p = sub.add_parser(
        "demo",
        help="portrait mode on the bundled clip, headless: demo_out/portrait.mp4 + before_after.png",
        description="Run an effect (portrait blur by default) over the bundled 640×480 clip "
        "assets/book.mkv with the shipped model, write OUT/EFFECT.mp4 and OUT/before_after.png, "
        "print frames/s. For a webcam: python -m apps.webcam.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    p.add_argument("--model", default="exports/portrait.tflite", help="person model (default exports/portrait.tflite); "
                   "several exports of one model separated by commas: the fastest on this CPU")
    p.add_argument("--source", default="assets/book.mkv", help="video to process (default the bundled clip)")
    p.add_argument("--effect", choices=["portrait", "swap", "mask"],
                   help="the effect (default portrait; mask with --instances)")
    p.add_argument("--strength", type=float, default=0.6, help="effect strength 0..1 (default 0.6)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--keep", choices=["all", "largest", "nearest", "center"], default="all",
                   help="portrait: which people stay sharp (needs the instance model; default all)")
    p.add_argument("--instances", action="store_true",
                   help="mask effect: each person the instance model finds in a colour of their own")
    p.add_argument("--instance-model", default=None,
                   help="person instance model for --keep and --instances (default exports/person-instances.tflite)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg demo`` through ``apps.demo.main``; returns the exit status."""
    quiet_tf()
    check_writable(args.out, "--out")
    from apps.demo import main as demo_main

    effect = args.effect or ("mask" if args.instances else "portrait")
    return demo_main(args.out, args.model, args.source, effect, args.strength, args.threads,
                     keep=args.keep, instance_model=args.instance_model, instances=args.instances)
