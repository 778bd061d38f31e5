"""Latency/accuracy chart of the portrait models against MediaPipe's selfie segmenter.

Reads the per-image person IoU that ``benchmarks/eval_people.py --json`` wrote and the latency
that ``kseg benchmark --json`` measured, and draws one panel per validation set with MediaPipe's
reference point (../shared/data/README.md: 3.7–3.9 ms, 0.921 people-parsing, 0.878 people-masks;
measured over all images of each set, ours over the held-out 10%):

    .venv/bin/python tools/people_chart.py --eval runs/eval/portrait.json runs/eval/portrait_fast.json \
        --latency runs/eval/latency.json --out docs/img/portrait_pareto.png
"""

from __future__ import annotations

import argparse
import json

MEDIAPIPE = {"latency_ms": 3.8, "people-parsing": 0.921, "people-masks": 0.878}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", nargs="+", required=True, help="eval_people.py --json files")
    ap.add_argument("--latency", required=True, help="kseg benchmark --json file")
    ap.add_argument("--out", default="docs/img/portrait_pareto.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kseg.paths import atomic_path

    scores = {}
    for f in args.eval:
        for key, sets in json.load(open(f)).items():
            scores[key.rsplit("@", 1)[0]] = sets
    bench = json.load(open(args.latency))
    rows = bench["models"] if isinstance(bench, dict) else bench
    latency = {r["path"]: r["median_ms"] for r in rows}
    points = [(path, latency[path], sets) for path, sets in scores.items() if path in latency]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True)
    for ax, name in zip(axes, ("people-parsing", "people-masks")):
        for path, ms, sets in points:
            stem = path.split("/")[-1].replace(".tflite", "")
            label = (f"{stem} (QAT int8, shipped)" if path.startswith("exports/")
                     else stem.replace("_int8", " PTQ int8").replace("_float32", " float32"))
            ax.scatter(ms, sets[name]["mean_image_iou"], color="tab:blue", zorder=3)
            ax.annotate(label, (ms, sets[name]["mean_image_iou"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.scatter(MEDIAPIPE["latency_ms"], MEDIAPIPE[name], marker="*", s=180, color="tab:orange",
                   edgecolor="black", linewidth=0.5, zorder=4)
        ax.annotate("MediaPipe selfie (all images)", (MEDIAPIPE["latency_ms"], MEDIAPIPE[name]),
                    textcoords="offset points", xytext=(5, -12), fontsize=8)
        ax.set_title(f"{name} validation")
        ax.set_xlabel("median latency per frame, ms (2 threads, XNNPACK)")
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.15, y=0.15)
    axes[0].set_ylabel("mean per-image person IoU")
    fig.suptitle("Up and to the left is better: a model dominates MediaPipe when it is above and left of the star",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
