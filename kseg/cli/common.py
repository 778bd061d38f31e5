"""What several ``kseg`` commands share: dataset options, the instance/semantic branch, quiet TF."""

from __future__ import annotations

import os
import shlex
import sys

from kseg.errors import KsegError, is_interrupt  # noqa: F401  (is_interrupt: for the verbs)


def quiet_tf() -> None:
    """TensorFlow's C++ log at warnings and the TensorFlow backend, unless the user chose otherwise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# flag -> (test, what is expected): numbers every command checks before any work starts
_NUMBER_FLAGS = {
    "size": (lambda v: v >= 1, "at least 1 pixel"),
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "lr": (lambda v: v > 0, "a positive number, e.g. 1e-4"),
    "calibration": (lambda v: v >= 1, "at least 1 image"),
    "parity": (lambda v: v >= 0, "0 (skip) or more images"),
    "threads": (lambda v: v >= 1, "at least 1"),
    "stuff_area": (lambda v: v >= 0, "0 or more pixels"),
    "runs": (lambda v: v >= 1, "at least 1"),
    "warmup": (lambda v: v >= 0, "0 or more"),
    "limit": (lambda v: v >= 1, "at least 1 sample"),
    "n": (lambda v: v >= 1, "at least 1"),
    "cpu_devices": (lambda v: v >= 0, "0 or more"),
    "held_out": (lambda v: 0 < v < 1, "a fraction between 0 and 1, e.g. 0.15"),
    "val_fraction": (lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
}


def check_numbers(args) -> None:
    """Refuse numeric flags out of range (``--size 0 0``, ``--epochs -1``) in one line, before any work.

    Raises:
        KsegError: naming the flag, the value given and what it must be.
    """
    for key, (ok, expected) in _NUMBER_FLAGS.items():
        value = getattr(args, key, None)
        if value is None or isinstance(value, bool):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (int, float)) and ok(v) for v in values):
            shown = " ".join(str(v) for v in values)
            raise KsegError(f"--{key.replace('_', '-')} {shown}: must be {expected}")


def command_line() -> str:
    """The command being run, as a shell line (recorded in model cards and QAT metadata)."""
    return shlex.join(["kseg", *sys.argv[1:]])


def add_dataset_args(p) -> None:
    """``--format``, ``--split``, ``--groups``, ``--border``, ``--categories``: the reader options."""
    p.add_argument("--format", default="auto", help="masks, ccp, camvid, pets, coco, auto")
    p.add_argument("--split", help="camvid: train|val|test; coco: train|val")
    p.add_argument("--groups", help="ccp: suggested|person|raw|PATH.json")
    p.add_argument("--border", choices=["ignore", "pet", "class"], help="pets trimap border (class: 3 classes)")
    p.add_argument("--categories", help="coco: comma-separated category names (default person)")


def dataset_options(args) -> dict:
    """The reader keyword arguments (``open_dataset(path, format, **options)``) given on the command line."""
    opts = {}
    for key in ("split", "groups", "border"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    if getattr(args, "categories", None):
        opts["categories"] = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    return opts


def instance_branch(args) -> bool:
    """Whether a command's MODEL is a Mask R-CNN (and its DATA COCO), failing in one line on a mix."""
    from kseg.runtime import INSTANCE_HINT, model_kind

    kind = model_kind(args.model)
    data = getattr(args, "data", None)
    if kind != "instance" and data and str(data).endswith(".json"):
        if kind == "semantic":
            raise KsegError(f"{args.model} is a semantic segmentation model; a COCO annotation JSON scores "
                            f"instances (box/mask AP) and needs {INSTANCE_HINT}")
        return True  # let the instance loader say what is wrong with the file
    return kind == "instance"


def open_data(path, format: str):
    """A ``SegDataset`` from a folder (or a name under the shared data folder) in ``format``."""
    from kseg.data.readers import open_dataset

    try:
        from kseg.config import resolve_data_path

        root = resolve_data_path(path)
    except ImportError:
        root = path
    return open_dataset(root, format)


def _source_name(source) -> str:
    """A training source in words: its path, or for generated composites what they are."""
    if source.path:
        return str(source.path)
    if source.format == "composite":
        o = dict(getattr(source, "options", None) or {})
        count, labels = o.get("count"), o.get("labels", "person")
        return f"{count or ''} composites ({labels} labels)".strip()
    return source.format or "?"


def config_data(config, size, batch_size: int | None = None, training: bool = False):
    """The data of a training config, split as ``kseg train`` splits it.

    Returns:
        ``(train_set, val_set, description)``, or with ``training``
        ``(train_set, train_ds, val_ds, description)`` (batched ``tf.data`` pipelines).
    """
    from kseg.config import load_config
    from kseg.train import build_data

    cfg = load_config(config)
    cfg.data.size = tuple(size)
    if batch_size:
        cfg.data.batch_size = batch_size
    cfg.data.cache = False
    train_ds, val_ds, train_set, val_set = build_data(cfg)
    names = f'{", ".join(_source_name(s) for s in cfg.data.train)} (config {config})'
    if not training:
        return train_set, val_set, names
    return train_set, train_ds, val_ds, names


def at_size(model, size):
    """A fixed-size kseg model rebuilt at ``size`` (same weights); free-size models as they are."""
    if None in tuple(model.input_shape[1:3]):
        return model
    from kseg.models.base import with_input_size

    return with_input_size(model, size)
