"""``kseg calibrate``: per-class logit biases fitted for mIoU on the training data, folded into a copy of the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kseg.cli.common import config_data, quiet_tf
from kseg.errors import KsegError
from kseg.paths import atomic_path, check_writable


def _training_sources(config, size):
    """The training part of each ``data.train`` entry of ``config``, as ``kseg train`` splits it."""
    from kseg.config import load_config
    from kseg.train import split_sources

    cfg = load_config(config)
    cfg.data.size = tuple(size)
    cfg.data.cache = False
    return split_sources(cfg)[0]


def add(sub) -> None:
    """Add ``kseg calibrate``."""
    p = sub.add_parser(
        "calibrate",
        help="fit one logit bias per class for mIoU on the config's training images and write a "
             "model with them (for models trained with class weights)",
        description="Per-class logit biases (logit adjustment): searched for the dataset mIoU on "
                    "pixels of the config's training images (never its validation split), added to "
                    "the classifier's bias. Same network, same speed; export the new model as usual.",
    )
    p.add_argument("model", help=".keras model (U-Net, SegNet, DeepLab v3+, PSPNet, HRNet, SegFormer)")
    p.add_argument("--config", required=True, help="the training config (configs/NAME.yaml): its training data")
    p.add_argument("--out", required=True, help="the calibrated .keras model to write")
    p.add_argument("--images", type=int, default=900, help="training images sampled (default 900)")
    p.add_argument("--pixels", type=int, default=4096, help="pixels sampled per image (default 4096)")
    p.add_argument("--balance", choices=("pixels", "sources"), default="pixels",
                   help="what the biases maximise: the mIoU over all sampled pixels (default), or the mean "
                        "over the config's training sources of each one's mIoU, with --images split "
                        "evenly between them (so a large or easy source does not set a class's bias "
                        "for the others)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg calibrate``."""
    out = Path(args.out)
    if out.suffix != ".keras":
        raise KsegError(f"--out {out}: give a .keras file name")
    if out.resolve() == Path(args.model).resolve():
        raise KsegError(f"--out {out} is the model itself; write the calibrated model to a new file")
    check_writable(out.parent, "--out")
    quiet_tf()
    import numpy as np

    from kseg.calibrate import apply_class_biases, classifier_layer, collect_logits, dataset_miou, fit_class_biases
    from kseg.models.saving import load_keras_file

    model = load_keras_file(Path(args.model))
    classifier_layer(model)  # fails now, not after reading the data, if the model has none
    size = tuple(int(v) for v in model.input_shape[1:3])
    train_set, _, names = config_data(args.config, size)
    n = int(model.output_shape[-1])
    if len(train_set.class_names) != n:
        raise KsegError(f"{args.model} has {n} classes but --config {args.config}'s data has "
                        f"{len(train_set.class_names)}: give the config the model was trained with")
    groups, sources = None, None
    if args.balance == "sources":
        sources = _training_sources(args.config, size)
        per = max(1, args.images // len(sources))
        parts = [collect_logits(model, ds, images=per, pixels=args.pixels, seed=args.seed) for ds in sources]
        logits = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        groups = np.concatenate([np.full(len(p[1]), k, np.int64) for k, p in enumerate(parts)])
        used = sum(min(per, len(ds)) for ds in sources)
    else:
        logits, labels = collect_logits(model, train_set, images=args.images, pixels=args.pixels, seed=args.seed)
        used = min(args.images, len(train_set))
    fit = fit_class_biases(logits, labels, groups=groups)
    apply_class_biases(model, fit.biases)
    with atomic_path(out) as tmp:
        model.save(tmp)
    classes = Path(args.model).with_name("classes.json")
    if classes.is_file() and out.parent.resolve() != classes.parent.resolve():
        shutil.copyfile(classes, out.with_name("classes.json"))
    print(f"fitted on {len(labels):,} pixels of {used} training images of {names}")
    print(f"{'class':<16} {'bias':>6} {'IoU before':>10} {'after':>6}")
    for name, b, i0, i1 in zip(train_set.class_names, fit.biases, fit.iou_before, fit.iou_after):
        print(f"{name:<16} {b:>+6.2f} {100 * i0:>10.1f} {100 * i1:>6.1f}")
    if sources:
        for k, ds in enumerate(sources):
            sel = groups == k
            m0, m1 = (dataset_miou(logits[sel], labels[sel], b) for b in (None, fit.biases))
            print(f"  {ds.name}: mIoU {100 * m0:.1f} -> {100 * m1:.1f} ({int(sel.sum()):,} pixels)")
    what = "mean over sources of their mIoU" if sources else "mIoU on those pixels"
    print(f"{what} {100 * fit.miou_before:.1f} -> {100 * fit.miou_after:.1f} "
          "(training images: measure on held-out data with kseg evaluate)")
    side = out.with_suffix(".calibration.json")
    with atomic_path(side) as tmp:
        Path(tmp).write_text(json.dumps({
            "model": str(args.model), "config": str(args.config), "images": used, "pixels": int(len(labels)),
            "seed": args.seed, "balance": args.balance, "class_names": list(train_set.class_names),
            "biases": [round(float(b), 4) for b in fit.biases],
            "miou_before": fit.miou_before, "miou_after": fit.miou_after}, indent=1) + "\n")
    print(f"wrote {out} and {side.name}")
    return 0
