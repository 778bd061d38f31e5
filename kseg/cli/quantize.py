"""``kseg quantize``: quantization-aware fine-tuning of a trained model (``kseg.quantize.qat``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kseg.cli.common import at_size, command_line, config_data, open_data
from kseg.errors import KsegError
from kseg.paths import check_writable, staged_output


def add(sub) -> None:
    """Add ``kseg quantize``."""
    q = sub.add_parser(
        "quantize", help="quantization-aware fine-tuning (tfmot on a tf_keras twin)",
        description="Fine-tune a trained .keras model with fake quantization; writes OUT/qat_model.h5. "
                    "Convert it with kseg export OUT --quantization qat.",
    )
    q.add_argument("model", help="trained .keras model")
    q.add_argument("--data", help="training dataset folder (or --config)")
    q.add_argument("--config", help="the model's training config (configs/NAME.yaml): fine-tune on the same "
                   "data pipeline, augmentation, split and input size as kseg train")
    q.add_argument("--format", default="auto")
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--lr", type=float, default=1e-5)
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    q.add_argument("--val-fraction", type=float, default=0.1)
    q.add_argument("--loss", choices=["config", "ce"], default="config",
                   help="config: the training config's loss and class weights (default with --config); "
                        "ce: plain cross-entropy (the default with --data)")
    q.add_argument("--out", required=True, help="output folder, e.g. runs/NAME/qat")
    q.set_defaults(func=run)


def config_loss(config_path, train_set):
    """The training config's loss (class weights computed from ``train_set`` as ``kseg train``
    does) as a plain ``(y_true, y_pred)`` function for the tf_keras QAT model, and its name."""
    from kseg.config import load_config
    from kseg.train import make_loss

    cfg = load_config(config_path)
    loss = make_loss(cfg, len(train_set.class_names), train_set)

    def config_loss(y_true, y_pred):
        return loss(y_true, y_pred)

    t = cfg.train
    return config_loss, t.loss + (f" with {t.class_weights} class weights" if t.class_weights else "")


def run(args) -> int:
    """Run ``kseg quantize``: fine-tune, write ``OUT/qat.json`` beside the model; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = command_line()
    from kseg.data.pipeline import make_dataset
    from kseg.export import _input_size
    from kseg.models.saving import load_keras_file
    from kseg.paths import atomic_path
    from kseg.quantize.qat import QAT_MODEL_FILE, qat_fine_tune

    if not (args.data or args.config):
        raise KsegError("kseg quantize needs training data: --config configs/NAME.yaml (the model's "
                        "training config) or --data FOLDER")
    check_writable(args.out, "--out")  # before the slow part
    if args.data:
        from kseg.config import resolve_data_path

        resolve_data_path(args.data)  # a missing folder is one line before the model loads
    model = load_keras_file(Path(args.model))
    size = tuple(args.size) if args.size else _input_size(model, None)
    model = at_size(model, size)
    loss, loss_name = None, "ce"
    if args.config:
        ds, train_ds, val_ds, data_name = config_data(args.config, size, args.batch_size, training=True)
        if args.loss == "config":
            loss, loss_name = config_loss(args.config, ds)
    else:
        ds = open_data(args.data, args.format)
        data_name = args.data
        train, val = ds.split(args.val_fraction) if args.val_fraction > 0 else (ds, None)
        train_ds = make_dataset(train, size=size, batch_size=args.batch_size, training=True)
        val_ds = make_dataset(val, size=size, batch_size=args.batch_size, training=False) if val else None
    n_model = int(model.output_shape[-1])
    if len(ds.class_names) != n_model:  # would fail in the first training step, minutes later
        names = ", ".join(list(ds.class_names)[:6]) + (", ..." if len(ds.class_names) > 6 else "")
        raise KsegError(f"--{'config' if args.config else 'data'} {args.config or args.data} has "
                        f"{len(ds.class_names)} classes ({names}) but {args.model} predicts {n_model}; fine-tune "
                        "on the data the model was trained on")
    info = {"source_model": str(args.model), "data": data_name, "format": args.format, "loss": loss_name,
            "class_names": list(ds.class_names), "colors": ds.colors.tolist(), "command": command,
            "input_size": list(size), "config": args.config}
    # the model, its history and qat.json appear together or not at all (a failure or Ctrl-C
    # leaves an earlier QAT model as it was)
    with staged_output(Path(args.out) / QAT_MODEL_FILE, "--out") as staged:
        qat_fine_tune(model, train_ds, val_ds, epochs=args.epochs, lr=args.lr, out_dir=staged.parent, verbose="auto",
                      loss=loss)
        with atomic_path(staged.parent / "qat.json") as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2))
    print(f"QAT model written to {args.out}; convert it with: kseg export {args.out} --quantization qat --out exports/NAME.tflite")
    return 0
