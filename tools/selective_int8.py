"""Int8 TFLite with chosen op types left in float (selective quantization), for models whose
full-int8 graph is slow or inaccurate (SegFormer: attention and LayerNorm).

TFLite's quantization debugger converts the model with ``denylisted_ops`` kept in float: weights
of the other ops are int8 and their activations calibrated on real images; the file keeps float
I/O. An experiment beside ``kseg export`` (docs/results.md, "Quantization on CamVid"), not yet an
export option:

    .venv/bin/python tools/selective_int8.py runs/camvid_segformer_b0/best.keras \\
        --data ../shared/data/camvid --format camvid --size 288 384 \\
        --float-ops BATCH_MATMUL,SOFTMAX,MEAN,SQUARED_DIFFERENCE,RSQRT,GELU,NEG,MUL,ADD,SUB \\
        --out /tmp/segformer_mixed.tflite
    kseg benchmark /tmp/segformer_mixed.tflite --threads 2 --data ../shared/data/camvid --format camvid --split test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a .keras model saved by kseg")
    p.add_argument("--data", required=True, help="calibration images: a dataset folder")
    p.add_argument("--format", required=True, help="its reader (camvid, masks, ccp, pets, ...)")
    p.add_argument("--split", default="train", help="camvid: the split to calibrate on")
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"))
    p.add_argument("--float-ops", required=True, help="comma-separated TFLite op names to keep in float")
    p.add_argument("--images", type=int, default=64, help="calibration images (spread over the set)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from kseg.data.readers import open_dataset
    from kseg.errors import KsegError
    from kseg.export import _converter
    from kseg.models.saving import load_model
    from kseg.paths import atomic_path

    try:
        model = load_model(a.model)
        ds = open_dataset(a.data, a.format, **({"split": a.split} if a.format == "camvid" else {}))
    except KsegError as e:
        print(f"kseg: {e}", file=sys.stderr)
        return 2
    h, w = a.size
    step = max(1, len(ds) // a.images)
    images = [np.asarray(Image.fromarray(np.asarray(ds.load(i)[0], np.uint8)).resize((w, h), Image.BILINEAR),
                         np.float32)[None] for i in range(0, len(ds), step)[: a.images]]
    with tempfile.TemporaryDirectory() as tmp:
        conv = _converter(model, (h, w), tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x] for x in images)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=lambda: ([x] for x in images[:2]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=a.float_ops.split(",")))
        data = debugger.get_nondebug_quantized_model()
    with atomic_path(Path(a.out)) as tmp:
        Path(tmp).write_bytes(data)
    print(f"wrote {a.out} ({len(data) / 1e6:.2f} MB; float ops: {a.float_ops})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
