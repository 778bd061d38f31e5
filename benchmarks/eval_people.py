"""People models on their validation images (never seen in training), as ``kseg.Segmenter`` runs them.

``--task portrait`` (default): person/background models on each people validation set
(people-parsing, people-masks, COCO val persons; the splits of ``kseg.data.readers.people_dataset``,
which ``configs/portrait.yaml`` holds out). Reports dataset-level person IoU and the mean of
per-image person IoU — the figure ../shared/data/README.md gives for MediaPipe's selfie
segmenter (0.878 people-masks, 0.921 people-parsing): the image squashed to the model's input,
the output upsampled to the image and thresholded at 0.5 (argmax of two classes).

``--task parsing``: the 8-group human-parsing models on the people-parsing validation split of
``configs/parsing.yaml``: per-class IoU and mIoU at label resolution.

Models are ``.tflite`` files (through ai-edge-litert, as the apps run them) or ``.keras`` files;
``--size H W`` runs a ``.keras`` model rebuilt at another input size.

    .venv/bin/python benchmarks/eval_people.py runs/portrait/best.keras exports/portrait.tflite
    .venv/bin/python benchmarks/eval_people.py --task parsing exports/parsing.tflite --json out.json
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_segmenter(path, size=None, threads=2):
    from kseg.runtime import Segmenter

    if str(path).endswith(".keras"):
        from kseg.evaluate import load_model
        from kseg.models.base import with_input_size

        model = load_model(path)
        if size:
            model = with_input_size(model, size)
        return Segmenter(model)
    return Segmenter(path, num_threads=threads)


def val_sets(task, val_fraction=0.1, seed=0):
    from kseg.data.readers import open_ccp, people_dataset
    from kseg.paths import shared_data_dir

    if task == "portrait":
        return people_dataset(val_fraction=val_fraction, seed=seed)[1]
    _, val = open_ccp(shared_data_dir() / "people-parsing", groups="suggested").split(val_fraction, seed)
    return {"people-parsing": val}


def score(seg, ds, num_classes, person=None):
    """Confusion matrix over the set and, for ``person``, the per-image IoU list."""
    import numpy as np

    from kseg.evaluate import iter_loaded
    from kseg.metrics import confusion_matrix

    cm = np.zeros((num_classes, num_classes), np.int64)
    per_image, skipped = [], []
    for _, image, mask in iter_loaded(ds, range(len(ds)), skipped):
        pred = seg.segment(image).category_mask
        c = confusion_matrix(mask, pred, num_classes)
        cm += c
        if person is not None:
            union = c[person, :].sum() + c[:, person].sum() - c[person, person]
            if union:
                per_image.append(c[person, person] / union)
    return cm, per_image


def write_cards(args, results, argv):
    """Put each .tflite model's validation figures (and the float model's) into its model card."""
    from kseg.export import write_model_card
    from kseg.runtime import read_card

    keys = list(results)
    float_key = next((k for k, p in zip(keys, args.models) if p.endswith(".keras")), None)
    import shlex

    command = shlex.join([".venv/bin/python", "benchmarks/eval_people.py", *argv])
    for key, path in zip(keys, args.models):
        if not path.endswith(".tflite"):
            continue
        fields = {"validation": {"task": args.task, "split": f"val_fraction {args.val_fraction}, seed {args.seed}",
                                 "command": command, "sets": results[key]}}
        if float_key:
            fields["validation_float"] = {"model": float_key, "sets": results[float_key]}
        if read_card(path) is not None:
            write_model_card(path, **fields)
            print(f"recorded validation figures in the card of {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--task", choices=("portrait", "parsing"), default="portrait")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run .keras models at this input size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--write-card", action="store_true",
                    help="record the figures in each .tflite model's card (validation; with a .keras model "
                         "in the same run, its figures as validation_float)")
    args = ap.parse_args(argv)
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)

    import numpy as np

    from kseg.metrics import scores_from_confusion

    sets = val_sets(args.task, args.val_fraction, args.seed)
    results = {}
    for path in args.models:
        seg = load_segmenter(path, args.size, args.threads)
        key = f"{path}@{seg.input_size[0]}x{seg.input_size[1]}"
        for name, ds in sets.items():
            n = len(ds.class_names)
            person = 1 if args.task == "portrait" else None
            cm, per_image = score(seg, ds, n, person)
            s = scores_from_confusion(cm)
            row = {"n": len(ds), "miou": float(s["miou"]),
                   "per_class_iou": {c: float(v) for c, v in zip(ds.class_names, s["per_class_iou"])}}
            if person is not None:
                row.update(person_iou=float(s["per_class_iou"][1]), mean_image_iou=float(np.mean(per_image)),
                           n_images_with_person=len(per_image))
                print(f"{key:<52} {name:<16} n={row['n']:<4} person IoU {row['person_iou']:.3f}  "
                      f"mean per-image IoU {row['mean_image_iou']:.3f}", flush=True)
            else:
                per = "  ".join(f"{c} {v:.3f}" for c, v in row["per_class_iou"].items())
                print(f"{key:<52} {name:<16} n={row['n']:<4} mIoU {row['miou']:.3f}  {per}", flush=True)
            results.setdefault(key, {})[name] = row
    if args.write_card:
        write_cards(args, results, argv)
    if args.json:
        from kseg.paths import atomic_path

        with atomic_path(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
