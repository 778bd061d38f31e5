"""Markdown tables for docs/results.md from the CamVid zoo runs (tools/camvid_zoo.sh).

Per run: the Keras model's test-split scores (``runs/eval/NAME_test.json``), parameters,
forward GFLOPs at the training size, epochs and training time (``runs/NAME/history.csv``), and
each TFLite variant's size, latency and test mIoU (``runs/eval/NAME_bench.json``) with its
Keras/TFLite parity on validation images (the model card). Latency comes from
``runs/eval/camvid_latency.json`` when it exists (one ``kseg benchmark --json`` of every
variant, taken with nothing else running), else from each model's benchmark:

    .venv/bin/python tools/camvid_table.py camvid_unet_lite0 camvid_deeplab_v3_plus_lite0 ...
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"float32": "float32", "float16": "float16", "dynamic": "dynamic range", "int8": "post-training int8",
            "qat": "QAT int8"}


def _gflops(model, size):
    spec = importlib.util.spec_from_file_location("tt", ROOT / "benchmarks" / "train_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.gflops(model, size)


def main(argv=None):
    names = sys.argv[1:] if argv is None else argv
    import keras

    import kseg.models  # noqa: F401  (registers the model classes)

    zoo, per_class, quant = [], [], []
    idle = ROOT / "runs" / "eval" / "camvid_latency.json"
    latency = {Path(r["path"]).name: r for r in json.loads(idle.read_text())["models"]} if idle.exists() else {}
    for name in names:
        run, ev = ROOT / "runs" / name, ROOT / "runs" / "eval"
        test = json.loads((ev / f"{name}_test.json").read_text())
        # a resumed run may log an epoch twice: the last row of each epoch is the one its weights followed
        hist = list({h["epoch"]: h for h in csv.DictReader(open(run / "history.csv"))}.values())
        minutes = sum(float(h["epoch_seconds"]) for h in hist) / 60
        best_val = max(float(h["val_mean_iou"]) for h in hist)
        model = keras.saving.load_model(run / "best.keras", compile=False)
        size = tuple(model.input_shape[1:3]) if None not in model.input_shape[1:3] else (288, 384)
        zoo.append(f"| {name.removeprefix('camvid_')} | {model.count_params() / 1e6:.2f}M | "
                   f"{_gflops(model, size):.1f} | {len(hist)} | {minutes:.0f} min | {100 * best_val:.1f} | "
                   f"**{100 * test['miou']:.1f}** | {100 * test['class_accuracy']:.1f} | "
                   f"{100 * test['pixel_accuracy']:.1f} |")
        per_class.append((name.removeprefix("camvid_"), test["per_class_iou"]))
        bench = ev / f"{name}_bench.json"
        if bench.exists():
            for row in json.loads(bench.read_text())["models"]:
                path = Path(row["path"])
                lat = latency.get(path.name, row)
                card = json.loads((ROOT / path).with_suffix(".json").read_text())
                m = card.get("metrics", {})
                quant.append(f"| {name.removeprefix('camvid_')} | {VARIANTS[card['quantization']]} | "
                             f"{card['size_bytes'] / 1e6:.2f} MB | {lat['median_ms']:.1f} ms | {lat['p90_ms']:.1f} ms | "
                             f"{100 * row['miou']:.2f} | {100 * m.get('parity_pixel_agreement', float('nan')):.2f}% |")
    print("| model | parameters | GFLOPs | epochs | training time | best val mIoU | test mIoU | class avg. acc. | global acc. |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(zoo))
    classes = list(per_class[0][1])
    print("\n| model | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for n, ious in per_class:
        print(f"| {n} | " + " | ".join("–" if ious[c] is None else f"{100 * ious[c]:.1f}" for c in classes) + " |")
    if quant:
        print("\n| model | variant | size | median latency | p90 | test mIoU | pixel agreement with Keras (20 val images) |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(quant))


if __name__ == "__main__":
    main()
