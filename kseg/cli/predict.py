"""``kseg predict``: masks and overlays of images with a trained ``.keras`` model or an exported ``.tflite``."""

from __future__ import annotations

import json
from pathlib import Path

from kseg.cli.common import quiet_tf
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg predict``."""
    p = sub.add_parser("predict", help="write masks and overlays for images")
    p.add_argument("model", help=".keras model or exported .tflite (its model card names and colours the classes)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2, help="interpreter threads for a .tflite model (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg predict``; the run's ``classes.json`` beside the model (or a ``.tflite``'s model
    card) names and colours the classes."""
    quiet_tf()
    check_writable(args.out, "--out")
    from kseg.evaluate import open_model, predict

    model = open_model(args.model, num_threads=args.threads)
    classes = Path(args.model).with_name("classes.json")
    names = colors = None
    if classes.is_file() and Path(args.model).suffix == ".keras":  # a .tflite has its card
        meta = json.loads(classes.read_text())
        names, colors = meta.get("class_names"), meta.get("colors")
    paths = predict(model, args.images, args.out, class_names=names, colors=colors,
                    size=tuple(args.size) if args.size else None)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
