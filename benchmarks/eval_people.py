"""People models on their validation images (never seen in training), as ``kseg.Segmenter`` runs them.

``--task portrait`` (default): person/background models on each people validation set
(people-parsing, people-masks, COCO val persons: the splits of ``kseg.data.readers.people_dataset``,
which ``configs/portrait.yaml`` holds out; the webcam-like portraits and the faces, 10%, seed 0, as
``benchmarks/vs_mediapipe.py`` holds them out). Reports dataset-level person IoU and the mean of
per-image person IoU — the figure ../shared/data/README.md gives for MediaPipe's selfie
segmenter (0.878 people-masks, 0.921 people-parsing): the image squashed to the model's input,
the output upsampled to the image and thresholded at 0.5 (argmax of two classes).

``--task parsing``: the 8-group human-parsing models on the people-parsing validation split of
``configs/parsing.yaml``: per-class IoU and mIoU at label resolution; also on the CelebAMask-HQ
faces held out by ``configs/parsing_v2.yaml`` (mapped with ``configs/faces_parsing_groups.json``:
hair, skin, cloth, accessories; close-ups at webcam distance).

``--task portrait --as-person`` scores a parsing model as person/background (any group counts as
person): how much of the people in scenes unlike people-parsing's it labels at all.

``--task person-free``: images with nobody in them (the held-out parts of the composite format's
person-free backgrounds: COCO val images without a person annotation, CamVid val/test frames
without pedestrian or bicyclist pixels, the pets validation split; plus the empty-room video frames,
which composites train on): the share of pixels a model labels anything but background, per class,
and the share of images where that exceeds 1% of the frame. Works for portrait and parsing models.

Diagnostics: ``--trained-on`` also scores the training split (people-parsing's for parsing, the people
sets' for portrait; never written into a card), to tell a model that does not fit its own data from
one that does not generalise; ``--label-ceiling H W`` first scores the labels themselves squashed to
H×W and upsampled back, the share of the error that the input size alone explains.

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


class _Selfie:
    """MediaPipe's selfie segmenter (``../shared/peers/selfie_segmentation.tflite``) behind
    ``Segmenter``'s interface: category 1 where its person probability exceeds 0.5."""

    class_names = ("background", "person")

    def __init__(self, path, threads):
        import sys
        from types import SimpleNamespace

        sys.path.insert(0, os.path.dirname(__file__))
        from vs_mediapipe import MediaPipeSelfie

        self._mp, self._ns = MediaPipeSelfie(path, threads), SimpleNamespace
        self.input_size = self._mp.size

    def segment(self, image):
        return self._ns(category_mask=self._mp.person(image).astype("uint8"))


class _AsPerson:
    """A multi-class (parsing) model as a person/background one: any class but background is person."""

    class_names = ("background", "person")

    def __init__(self, seg):
        self._seg, self.input_size = seg, seg.input_size

    def segment(self, image):
        from types import SimpleNamespace

        return SimpleNamespace(category_mask=(self._seg.segment(image).category_mask > 0).astype("uint8"))


def load_segmenter(path, size=None, threads=2, flip=False):
    from kseg.runtime import Segmenter

    if os.path.basename(str(path)).startswith("selfie_segmentation"):
        if flip:
            raise SystemExit("--flip: MediaPipe's model is run as MediaPipe runs it, without a flip")
        return _Selfie(path, threads)
    if str(path).endswith(".keras"):
        from kseg.evaluate import load_model
        from kseg.models.base import with_input_size

        model = load_model(path)
        if size:
            model = with_input_size(model, size)
        from kseg.runtime import read_card

        return Segmenter(model, card=read_card(path), flip=flip)  # class names from the run's classes.json
    return Segmenter(path, num_threads=threads, flip=flip)


def val_sets(task, val_fraction=0.1, seed=0, trained_on=False):
    """``{name: dataset}`` of the held-out images; ``trained_on``: also the training split of
    people-parsing (parsing) or the people sets together (portrait), named "… (trained on)", to tell
    a model that does not fit its data (under-trained) from one that does not generalise."""
    from kseg.data.readers import open_ccp, people_dataset
    from kseg.paths import shared_data_dir

    if task == "portrait":
        from kseg.data.readers import open_masks

        train, val = people_dataset(val_fraction=val_fraction, seed=seed)
        root = shared_data_dir()
        if (root / "portraits").is_dir():  # webcam-like head and shoulders (vs_mediapipe.py's split)
            val["portraits"] = open_masks(root / "portraits", class_names=("background", "person"),
                                          binary=True).split(val_fraction, seed)[1]
        if (root / "faces").is_dir():
            val["faces"] = open_ccp(root / "faces", groups="person").split(val_fraction, seed)[1]
        return {**val, **({"people (trained on)": train} if trained_on else {})}
    if task == "person-free":
        return person_free_sets(val_fraction, seed)
    root = shared_data_dir()
    train, val = open_ccp(root / "people-parsing", groups="suggested").split(val_fraction, seed)
    sets = {"people-parsing": val, **({"people-parsing (trained on)": train} if trained_on else {})}
    groups = os.path.join(os.path.dirname(__file__), "..", "configs", "faces_parsing_groups.json")
    if (root / "faces").is_dir() and os.path.isfile(groups):
        sets["faces"] = open_ccp(root / "faces", groups=groups).split(val_fraction, seed)[1]
    return sets


def person_free_sets(val_fraction=0.1, seed=0):
    """``{name: [load() -> RGB image, ...]}``: held-out person-free images, and the empty-room frames."""
    from kseg.data.readers.composite import CompositeOptions, _open_backgrounds
    from kseg.paths import shared_data_dir

    root = shared_data_dir()
    sets = {}
    for split, names in (("val", ("coco", "camvid", "pets")), ("train", ("videos",))):
        o = CompositeOptions(split=split, val_fraction=val_fraction, split_seed=seed)
        for name in names:
            if not (root / name).exists():
                continue
            for bg in _open_backgrounds({"path": name}, root, o):
                if len(bg):
                    label = bg.name if split == "val" else f"{bg.name} (trained on)"
                    sets[label] = [lambda j=j, bg=bg: bg.load(j) for j in range(len(bg))]
    return sets


def score_person_free(seg, images, class_names):
    """Share of pixels per class (background excluded) and of images with more than 1% labelled."""
    import numpy as np

    n = len(class_names)
    counts, total, flagged = np.zeros(n, np.int64), 0, 0
    for load in images:
        pred = seg.segment(load()).category_mask
        c = np.bincount(pred.ravel(), minlength=n)[:n]
        counts += c
        total += pred.size
        flagged += int(c[1:].sum() > 0.01 * pred.size)
    return {"n": len(images), "labelled_share": float(counts[1:].sum() / max(total, 1)),
            "images_over_1pct": float(flagged / max(len(images), 1)),
            "per_class_share": {name: float(counts[k] / max(total, 1)) for k, name in enumerate(class_names) if k}}


def label_ceiling(ds, size):
    """IoU per class of the labels themselves squashed to ``size`` (area-averaged one-hot) and
    upsampled back (bilinear, argmax): what a model with a perfect ``size`` output could score, so
    the part of the error that the input resolution alone explains."""
    import cv2
    import numpy as np

    from kseg.metrics import confusion_matrix, scores_from_confusion

    n = len(ds.class_names)
    cm = np.zeros((n, n), np.int64)
    for i in range(len(ds)):
        _, mask = ds.load(i)
        h, w = mask.shape
        up = np.stack([cv2.resize(cv2.resize((mask == k).astype(np.float32), (size[1], size[0]),
                                             interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
                       for k in range(n)], -1).argmax(-1).astype(np.uint8)
        cm += confusion_matrix(mask, up, n)
    return scores_from_confusion(cm)


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
        held_out = lambda sets: {k: v for k, v in sets.items() if not k.endswith("(trained on)")}
        # --flip: the figures with kseg.runtime.Segmenter(flip=True), beside the plain ones
        suffix = "_flip" if args.flip else ""
        fields = {"validation" + suffix: {"task": args.task, "split": f"val_fraction {args.val_fraction}, seed {args.seed}",
                                          "command": command, "sets": held_out(results[key])}}
        if float_key:
            fields["validation_float" + suffix] = {"model": float_key, "sets": held_out(results[float_key])}
        if read_card(path) is not None:
            write_model_card(path, **fields)
            print(f"recorded validation figures in the card of {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--task", choices=("portrait", "parsing", "person-free"), default="portrait")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run .keras models at this input size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flip", action="store_true",
                    help="test-time flip (kseg.runtime.Segmenter(flip=True)): each image and its mirror image, averaged")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trained-on", action="store_true",
                    help="also score the training split (parsing: people-parsing; portrait: the people sets together)")
    ap.add_argument("--label-ceiling", type=int, nargs=2, metavar=("H", "W"),
                    help="first print the IoU of the labels squashed to H x W and back (the resolution's share of the error)")
    ap.add_argument("--as-person", action="store_true",
                    help="with --task portrait: score parsing models as person/background (any group is person): "
                         "how much of the people in street, COCO and webcam scenes they label at all")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--write-card", action="store_true",
                    help="record the figures in each .tflite model's card (validation; with a .keras model "
                         "in the same run, its figures as validation_float)")
    args = ap.parse_args(argv)
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)

    import numpy as np

    from kseg.metrics import scores_from_confusion

    sets = val_sets(args.task, args.val_fraction, args.seed, args.trained_on)
    results, ceiling = {}, {}  # ceiling: kept apart so that results' keys stay one per model
    if args.label_ceiling and args.task != "person-free":
        for name, ds in sets.items():
            s = label_ceiling(ds, args.label_ceiling)
            per = "  ".join(f"{c} {v:.3f}" for c, v in zip(ds.class_names, s["per_class_iou"]))
            print(f"{'labels at %dx%d' % tuple(args.label_ceiling):<52} {name:<16} n={len(ds):<4} mIoU {s['miou']:.3f}  {per}",
                  flush=True)
            ceiling.setdefault(f"label_ceiling@{args.label_ceiling[0]}x{args.label_ceiling[1]}", {})[name] = {
                "n": len(ds), "miou": float(s["miou"]),
                "per_class_iou": {c: float(v) for c, v in zip(ds.class_names, s["per_class_iou"])}}
    for path in args.models:
        seg = load_segmenter(path, args.size, args.threads, args.flip)
        if args.as_person:
            seg = _AsPerson(seg)
        key = f"{path}@{seg.input_size[0]}x{seg.input_size[1]}" + ("+flip" if args.flip else "")
        for name, ds in sets.items():
            if args.task == "person-free":
                row = score_person_free(seg, ds, list(seg.class_names))
                top = sorted(row["per_class_share"].items(), key=lambda kv: -kv[1])[:3]
                print(f"{key:<52} {name:<26} n={row['n']:<4} labelled {100 * row['labelled_share']:.2f}% of pixels, "
                      f"{100 * row['images_over_1pct']:.1f}% of images over 1%  ("
                      + ", ".join(f"{c} {100 * v:.2f}%" for c, v in top) + ")", flush=True)
                results.setdefault(key, {})[name] = row
                continue
            n = len(ds.class_names)
            person = 1 if args.task == "portrait" else None
            cm, per_image = score(seg, ds, n, person)
            s = scores_from_confusion(cm)
            row = {"n": len(ds), "miou": float(s["miou"]),
                   "per_class_iou": {c: float(v) for c, v in zip(ds.class_names, s["per_class_iou"])},
                   "confusion": cm.tolist()}  # rows: label, columns: prediction (pixels at label resolution)
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
                json.dump({**ceiling, **results}, f, indent=2)


if __name__ == "__main__":
    main()
