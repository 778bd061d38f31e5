"""Person/background models on each people validation set (never seen in training).

Reports, per source: dataset-level mIoU and person IoU (one confusion matrix over all pixels),
and the mean of per-image person IoU — the figure ../shared/data/README.md gives for
MediaPipe's selfie segmenter (0.878 people-masks, 0.921 people-parsing). Labels are scored at
their own resolution (logits upsampled bilinearly).

    .venv/bin/python benchmarks/eval_people.py runs/people_unet_lite0_pretrained/best.keras [MORE.keras ...]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import numpy as np

    from kseg.data.readers import people_dataset
    from kseg.evaluate import iter_loaded, load_model, model_input_size, predict_logits
    from kseg.metrics import confusion_matrix, scores_from_confusion

    _, vals = people_dataset(val_fraction=args.val_fraction, seed=args.seed)
    results = {}
    print(f"{'model':<44} {'val set':<16} {'n':>4} {'mIoU':>6} {'person IoU':>10} {'mean per-image IoU':>18}")
    for path in args.models:
        model = load_model(path)
        size = model_input_size(model)
        for name, ds in vals.items():
            cm = np.zeros((2, 2), np.int64)
            per_image = []
            skipped = []
            for _, image, mask in iter_loaded(ds, range(len(ds)), skipped):
                pred = predict_logits(model, [image], size)[0].argmax(-1)
                c = confusion_matrix(mask, pred, 2)
                cm += c
                union = c[1, :].sum() + c[:, 1].sum() - c[1, 1]
                if union:
                    per_image.append(c[1, 1] / union)
            s = scores_from_confusion(cm)
            row = {"n": len(per_image), "miou": s["miou"], "person_iou": float(s["per_class_iou"][1]),
                   "mean_image_iou": float(np.mean(per_image))}
            results.setdefault(path, {})[name] = row
            print(f"{path:<44} {name:<16} {row['n']:>4} {100 * row['miou']:6.2f} {row['person_iou']:10.3f} "
                  f"{row['mean_image_iou']:18.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
