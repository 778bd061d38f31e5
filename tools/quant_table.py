"""Markdown rows for docs/results.md: each TFLite variant's size, latency and parity mIoU.

Latency comes from ``kseg benchmark --json``; mIoU and pixel agreement from each model card's
export parity check (validation images through ``Segmenter``):

    .venv/bin/python tools/quant_table.py runs/eval/latency.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    bench = json.load(open(argv[0]))
    for row in bench["models"]:
        path = Path(row["path"])
        card = json.loads(path.with_suffix(".json").read_text())
        m = card.get("metrics", {})
        name = path.stem.split("_")[0]
        variant = {"qat": "**QAT int8 (shipped)**", "int8": "post-training int8", "dynamic": "dynamic range",
                   "float16": "float16", "float32": "float32"}[card["quantization"]]
        print(f"| {name} {card['input']['shape'][1]}×{card['input']['shape'][2]} | {variant} | "
              f"{card['size_bytes'] / 1e6:.2f} MB | {row['median_ms']:.2f} ms | {row['p90_ms']:.2f} ms | "
              f"{100 * m.get('parity_miou_tflite', float('nan')):.2f} (Keras {100 * m.get('parity_miou_keras', float('nan')):.2f}) | "
              f"{100 * m.get('parity_pixel_agreement', float('nan')):.2f}% |")


if __name__ == "__main__":
    main()
