"""``kseg recover``: a trainable ``.keras`` model rebuilt from a kseg ``.tflite`` file and its training config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kseg.cli.common import config_data, quiet_tf
from kseg.errors import KsegError
from kseg.paths import atomic_path, check_writable


def add(sub) -> None:
    """Add ``kseg recover``."""
    p = sub.add_parser(
        "recover",
        help="rebuild a trainable .keras model from a kseg .tflite file (when the float checkpoint is lost), "
             "to fine-tune or distil from",
        description="Loads every convolution of the .tflite file (int8 kernels dequantized) into the "
                    "architecture of --config and rebuilds each BatchNorm with statistics measured on the "
                    "config's training batches, so the model computes what the file computes and trains "
                    "like a checkpoint. Pixel agreement with the file is printed.",
    )
    p.add_argument("model", help="the .tflite file (int8 or float32, exported by kseg export)")
    p.add_argument("--config", required=True, help="the config the file was trained with (its model and data)")
    p.add_argument("--out", required=True, help="the .keras model to write")
    p.add_argument("--images", type=int, default=256,
                   help="training images (augmented as in kseg train) the BatchNorm statistics are measured on")
    p.add_argument("--uncalibrate", action="store_true",
                   help="subtract the kseg calibrate biases the model card records from the classifier's "
                        "bias (fine-tune the trained model, then calibrate again)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg recover``."""
    src, out = Path(args.model), Path(args.out)
    if src.suffix != ".tflite" or not src.is_file():
        raise KsegError(f"{src}: give an existing .tflite file exported by kseg")
    if out.suffix != ".keras":
        raise KsegError(f"--out {out}: give a .keras file name")
    if args.images < 1:
        raise KsegError(f"--images {args.images}: must be at least 1")
    check_writable(out.parent, "--out")
    quiet_tf()
    from kseg.calibrate import classifier_layer
    from kseg.config import load_config
    from kseg.recover import load_tflite_weights
    from kseg.train import build_from_config

    cfg = load_config(args.config)
    cfg.model.init_from = None  # the file gives every weight
    size = tuple(int(v) for v in cfg.data.size)
    train_set, train_ds, _, names = config_data(args.config, size, training=True)
    model = build_from_config(cfg, len(train_set.class_names))
    offsets = None
    if args.uncalibrate:
        card = src.with_suffix(".json")
        biases = (json.loads(card.read_text()).get("calibration") or {}).get("biases") if card.is_file() else None
        if not biases:
            raise KsegError(f"--uncalibrate: {card} records no calibration biases; drop --uncalibrate")
        offsets = {classifier_layer(model).name: np.array([biases[c] for c in train_set.class_names], np.float32)}
    batches, seen = [], 0
    for x, _ in train_ds:
        batches.append(np.asarray(x, np.float32))
        seen += len(batches[-1])
        if seen >= args.images:
            break
    images = np.concatenate(batches)[: args.images]
    report = load_tflite_weights(model, src, images, bias_offsets=offsets, batch_size=int(cfg.data.batch_size))
    with atomic_path(out) as tmp:
        model.save(tmp)
    meta = {"class_names": list(train_set.class_names), "colors": [list(map(int, c)) for c in train_set.colors]}
    classes = out.with_name("classes.json")
    if not classes.exists():
        with atomic_path(classes) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{src}: {report.convolutions} convolutions loaded, {report.batchnorms} BatchNorms rebuilt on "
          f"{report.images} training images of {names}")
    if report.matched_by_shape:
        print(f"matched by order and shape, not by name: {', '.join(report.matched_by_shape)}")
    if report.pixel_agreement is not None:
        what = " (before --uncalibrate's biases came off)" if offsets else ""
        print(f"pixels where the recovered model and the file agree: {100 * report.pixel_agreement:.2f}%{what}; "
              f"training mode (batch statistics) against inference: {100 * report.training_agreement:.2f}%")
    print(f"wrote {out}")
    return 0
