"""Teachers for distillation, scored on held-out images with masks: MediaPipe's selfie segmenter,
BlazePose GHUM's segmentation output (whole image letterboxed to its 256×256 input, without the
pose detector's person crop) and the mean of the two.

For each held-out set of ``benchmarks/vs_mediapipe.py`` (10%, seed 0): person IoU at 0.5 (mean
per image) and, for ``kseg data distill``'s rule (person where p ≥ 0.7, background where
p ≤ 0.3, the rest ignored), the share of the confident pixels that are right.

GHUM's model is in the mediapipe 0.10.21 wheel (Apache-2.0), which need not be installed:

    pip download mediapipe==0.10.21 --no-deps -d /tmp/mp
    unzip -j /tmp/mp/mediapipe-*.whl mediapipe/modules/pose_landmark/pose_landmark_full.tflite -d ~/kseg-runs/peers
    .venv/bin/python benchmarks/teachers.py ~/kseg-runs/peers/pose_landmark_full.tflite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Tflite:
    def __init__(self, path, out_shape):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=2)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = next(d["index"] for d in self.it.get_output_details() if tuple(d["shape"]) == out_shape)

    def run(self, x):
        self.it.set_tensor(self.inp, x[None].astype(np.float32) / 255.0)
        self.it.invoke()
        return self.it.get_tensor(self.out)[0, ..., 0]


class Selfie(_Tflite):
    """The image squashed to 256×256 (MediaPipe's protocol); sigmoid output."""

    def __init__(self, path):
        super().__init__(path, (1, 256, 256, 1))

    def prob(self, rgb):
        import cv2

        p = self.run(cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA))
        return cv2.resize(p, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)


class Ghum(_Tflite):
    """pose_landmark_full's segmentation logits on the whole image, letterboxed (aspect kept)."""

    def __init__(self, path):
        super().__init__(path, (1, 256, 256, 1))

    def prob(self, rgb):
        import cv2

        h, w = rgb.shape[:2]
        side = max(h, w)
        y0, x0 = (side - h) // 2, (side - w) // 2
        pad = np.zeros((side, side, 3), np.uint8)
        pad[y0:y0 + h, x0:x0 + w] = rgb
        logit = np.clip(self.run(cv2.resize(pad, (256, 256), interpolation=cv2.INTER_AREA)), -50, 50)
        p = cv2.resize(1 / (1 + np.exp(-logit)), (side, side), interpolation=cv2.INTER_LINEAR)
        return p[y0:y0 + h, x0:x0 + w]


def score(teachers, sets):
    from kseg.evaluate import iter_loaded

    rows = {}
    for name, ds in sets.items():
        iou = {k: [] for k in teachers}
        acc = {k: [] for k in teachers}
        for _, image, label in iter_loaded(ds, range(len(ds)), {}):
            gt, valid = label == 1, label != 255
            probs = {k: f(image) for k, f in teachers.items() if k != "mean"}
            if "mean" in teachers:
                probs["mean"] = sum(probs.values()) / len(probs)
            for k, p in probs.items():
                pred = p > 0.5
                union = np.logical_or(pred, gt)[valid].sum()
                iou[k].append(1.0 if union == 0 else np.logical_and(pred, gt)[valid].sum() / union)
                conf = ((p >= 0.7) | (p <= 0.3)) & valid
                if conf.any():
                    acc[k].append(((p >= 0.7) == gt)[conf].mean())
        rows[name] = {k: {"iou": float(np.mean(iou[k])), "confident_accuracy": float(np.mean(acc[k])) if acc[k] else None,
                          "n": len(iou[k])} for k in teachers}
    return rows


def run(argv=None):
    from vs_mediapipe import SETS, FREE, val_sets

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ghum", help="pose_landmark_full.tflite (see the module docstring)")
    ap.add_argument("--selfie", default=str(ROOT.parent / "shared" / "peers" / "selfie_segmentation.tflite"))
    ap.add_argument("--sets", nargs="+", default=[s for s in SETS if s != FREE], choices=[s for s in SETS if s != FREE])
    args = ap.parse_args(argv)
    selfie, ghum = Selfie(args.selfie), Ghum(args.ghum)
    teachers = {"selfie": selfie.prob, "ghum": ghum.prob, "mean": None}
    rows = score(teachers, val_sets(args.sets))
    print("| set | images | " + " | ".join(f"{k} IoU / confident acc." for k in teachers) + " |")
    print("|---|---|" + "---|" * len(teachers))
    for name, r in rows.items():
        print(f"| {name} | {r['selfie']['n']} | " + " | ".join(
            f"{r[k]['iou']:.3f} / {r[k]['confident_accuracy']:.3f}" for k in teachers) + " |")


if __name__ == "__main__":
    run()
