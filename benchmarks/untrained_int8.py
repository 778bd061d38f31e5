"""Int8 TFLite files of architectures not trained yet, to time them before spending CPU-hours on them.

An int8 graph's invoke time depends on its shapes and ops, not on its weights' values, so a config's
network, built with its ImageNet encoder and an untrained decoder and calibrated on real photos,
times like the trained model will. Time the files with ``benchmarks/vs_mediapipe.py --skip-iou``
(or ``kseg benchmark``) beside the shipped models and MediaPipe's, on each kind of CPU that matters.
The files are for timing only: their cards say ``untrained``.

    .venv/bin/python benchmarks/untrained_int8.py configs/portrait_narrow.yaml configs/portrait_tiny.yaml \\
        --sizes 192x192 160x160 112x192 --out /tmp/arch
    .venv/bin/python benchmarks/vs_mediapipe.py exports/portrait.tflite /tmp/arch/*.tflite --skip-iou \\
        --rounds 5 --invokes 100

Each config gives ``NAME-HxW.tflite`` (NAME: the config's ``name``) for each size; the model section's
``init_from`` is ignored. Calibration: ``--images`` (default ``portraits/images`` of the shared data),
the first 32, squashed to the input size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: give HxW, e.g. 192x192") from None
    return h, w


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--sizes", nargs="+", type=parse_size, required=True, help="input sizes, HxW")
    p.add_argument("--out", type=Path, required=True, help="folder for the .tflite files and their cards")
    p.add_argument("--images", type=Path, default=None, help="calibration photos (default: shared portraits)")
    args = p.parse_args(argv)

    import cv2
    import numpy as np

    from kseg.config import load_config, resolve_data_path
    from kseg.errors import KsegError
    from kseg.export import to_tflite
    from kseg.models import build_model

    try:
        folder = args.images or resolve_data_path("portraits") / "images"
        files = sorted(f for f in Path(folder).glob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[:32]
        if not files:
            raise KsegError(f"no .jpg or .png photos in {folder}; give --images FOLDER")
        photos = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        args.out.mkdir(parents=True, exist_ok=True)
        for path in args.configs:
            cfg = load_config(path)
            for h, w in args.sizes:
                model = build_model(cfg.model.name, num_classes=2, input_shape=(h, w, 3), **cfg.model.kwargs)
                x = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in photos]).astype(np.float32)
                out = to_tflite(model, args.out / f"{cfg.name}-{h}x{w}.tflite", quantization="int8",
                                representative_data=x,
                                card={"class_names": ["background", "person"],
                                      "training_data": "untrained: ImageNet encoder, random decoder; for timing only",
                                      "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])})
                print(f"wrote {out} ({model.count_params():,} parameters)", flush=True)
    except KsegError as e:
        print(f"untrained_int8: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
