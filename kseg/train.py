"""Training: build data and model from a ``RunConfig`` and run ``model.fit``.

Writes ``runs/NAME/{config.yaml, best.keras, last.keras, history.csv, curves.png, logs/}``.
A killed run resumes where it stopped when started again with the same name (Keras
``BackupAndRestore`` keeps the epoch, weights and optimizer state in ``runs/NAME/backup``).

Example:
    from kseg.config import load_config
    from kseg.train import fit
    history = fit(load_config("configs/camvid_unet.yaml", ["train.epochs=1"]))
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from kseg.config import RunConfig, save_config
from kseg.errors import KsegError
from kseg.paths import atomic_path

MONITOR = "val_mean_iou"


# --------------------------------------------------------------------------------------
# data


def open_specs(specs, *, what: str):
    """Open and concatenate the datasets of a config section."""
    from kseg.data.readers import concat, open_dataset

    if not specs:
        raise KsegError(f"config data.{what} lists no dataset; add at least one {{path, format}}")
    datasets = [open_dataset(s.resolved_path(), s.format, **s.options) for s in specs]
    return datasets[0] if len(datasets) == 1 else concat(datasets)


def build_data(cfg: RunConfig):
    """Return ``(train_ds, val_ds, train_set, val_set)``: tf.data pipelines and their SegDatasets."""
    from kseg.data.pipeline import Augment, make_dataset
    from kseg.data.readers import concat

    d = cfg.data
    from kseg.data.readers import open_dataset

    train_sets = []
    val_sets = []

    for s in d.train:
        ds = open_dataset(s.resolved_path(), s.format, **s.options)
        if not d.val and s.holdout:
            tr, va = ds.split(d.val_fraction, seed=cfg.train.seed)
            train_sets.append(tr)
            val_sets.append(va)
        else:
            train_sets.append(ds)
    if not train_sets:
        raise KsegError("config data.train lists no dataset; add at least one {path, format}")
    train_set = train_sets[0] if len(train_sets) == 1 else concat(train_sets)
    if d.val:
        val_set = open_specs(d.val, what="val")
    elif not val_sets:
        raise KsegError("no validation data: every data.train entry has holdout: false; list data.val "
                        "or let one dataset be held out")
    else:
        val_set = val_sets[0] if len(val_sets) == 1 else concat(val_sets)
    if len(val_set) == 0:
        raise KsegError("the validation split is empty; raise data.val_fraction or list data.val")

    aug = d.augment
    augment = Augment(
        scale=tuple(aug.scale),
        rotate=aug.rotate,
        flip=aug.flip,
        portrait=aug.portrait,
        photometric=aug.photometric,
    )
    size = tuple(d.size)
    train_ds = make_dataset(
        train_set,
        size=size,
        batch_size=d.batch_size,
        training=True,
        augment=augment,
        seed=cfg.train.seed,
        cache=d.cache,
        on_error=d.on_error,
        repeat=cfg.train.steps_per_epoch is not None,
    )
    val_ds = make_dataset(
        val_set,
        size=size,
        batch_size=d.batch_size,
        training=False,
        seed=cfg.train.seed,
        cache=d.cache,
        on_error=d.on_error,
    )
    return train_ds, val_ds, train_set, val_set


# --------------------------------------------------------------------------------------
# model, loss, optimiser


def build_from_config(cfg: RunConfig, num_classes: int):
    from kseg.models import build_model

    kwargs = dict(cfg.model.kwargs)
    kwargs.setdefault("num_classes", num_classes)
    if kwargs["num_classes"] != num_classes:
        raise KsegError(
            f"model.kwargs.num_classes is {kwargs['num_classes']} but the data has {num_classes} "
            "classes; remove num_classes from the config or fix the data options"
        )
    kwargs.setdefault("input_shape", (*cfg.data.size, 3))
    model = build_model(cfg.model.name, **kwargs)
    if cfg.model.init_from:
        init_weights_from(model, cfg.model.init_from)
    return model


def init_weights_from(model, path):
    """Copy every weight of the trained ``.keras`` model at ``path`` into ``model``.

    Raises:
        KsegError: the file is missing or holds another architecture (named by the first layer
            whose weights do not fit).
    """
    from pathlib import Path

    from kseg.models.saving import load_model

    src = load_model(Path(path).expanduser())
    mine, theirs = model.weights, src.weights
    if len(mine) != len(theirs):
        raise KsegError(
            f"model.init_from {path} has {len(theirs)} weight tensors but this {model.name} has {len(mine)}; "
            "it is another architecture — start from a checkpoint trained with the same model config"
        )
    for a, b in zip(mine, theirs):
        if tuple(a.shape) != tuple(b.shape):
            raise KsegError(
                f"model.init_from {path}: weight {b.path} is {tuple(b.shape)} but this model's {a.path} is "
                f"{tuple(a.shape)}; use a checkpoint with the same classes and model kwargs"
            )
    model.set_weights(src.get_weights())


def make_schedule(cfg: RunConfig, steps_per_epoch: int):
    import keras

    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    warmup = t.warmup_epochs * steps_per_epoch
    if t.schedule == "constant":
        return t.learning_rate
    if t.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(
            t.learning_rate, decay_steps=total, end_learning_rate=0.0, power=0.9
        )
    if t.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else t.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    raise KsegError(f"unknown train.schedule {t.schedule!r}; use poly, cosine or constant")


PRECISIONS = ("mixed_float16", "mixed_bfloat16")


def precision_policy(value) -> str | None:
    """The Keras dtype policy for ``train.mixed_precision`` (``None``: float32).

    ``mixed_float16`` (GPUs) or ``mixed_bfloat16`` (TPUs, recent GPUs): float32 variables,
    float16/bfloat16 computation; every kseg model's logits layer is float32, and the losses
    and metrics compute in float32. ``true`` means ``mixed_bfloat16`` (what it meant before the
    choice existed); ``false``, empty or ``float32`` turn it off.
    """
    if value in (None, False, "", "float32", "none"):
        return None
    if value is True:
        return "mixed_bfloat16"
    if value not in PRECISIONS:
        raise KsegError(f"train.mixed_precision {value!r}: use {' or '.join(PRECISIONS)}, or false")
    return value


def make_optimizer(cfg: RunConfig, steps_per_epoch: int):
    """The optimizer of ``train.optimizer``; under ``mixed_float16`` wrapped in a
    ``LossScaleOptimizer`` (dynamic loss scaling keeps float16 gradients from underflowing;
    bfloat16 has float32's exponent range and needs none)."""
    import keras

    t = cfg.train
    lr = make_schedule(cfg, steps_per_epoch)
    name = t.optimizer.lower()
    if name == "adam":
        opt = keras.optimizers.Adam(lr)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=t.weight_decay or 1e-4)
    elif name == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=False)
    else:
        raise KsegError(f"unknown train.optimizer {t.optimizer!r}; use adam, adamw or sgd")
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def make_loss(cfg: RunConfig, num_classes: int, train_set=None):
    from kseg import losses

    t = cfg.train
    kwargs = dict(t.loss_kwargs)
    if t.class_weights:
        weights = dataset_class_weights(train_set, num_classes, t.class_weights)
        kwargs["class_weights"] = [float(w) for w in weights]
    if t.loss in ("dice", "ce_dice"):
        kwargs.setdefault("num_classes", num_classes)
    return losses.get_loss(t.loss, **kwargs)


def dataset_class_weights(train_set, num_classes: int, method: str):
    """Class weights from the training masks (SegNet's median-frequency balancing, or inverse)."""
    import numpy as np

    from kseg.losses import class_pixel_counts, compute_class_weights

    def masks():
        for i in range(len(train_set)):
            try:
                yield train_set.load(i)[1]
            except KsegError:
                continue

    counts, present = class_pixel_counts(masks(), num_classes)
    w = compute_class_weights(counts, method=method, present_counts=present)
    return np.asarray(w, dtype="float32")


def make_metrics(num_classes: int):
    from kseg import metrics

    return [
        metrics.PixelAccuracy(num_classes, name="pixel_accuracy"),
        metrics.MeanIoU(num_classes, name="mean_iou"),
    ]


# --------------------------------------------------------------------------------------
# callbacks


def _callbacks(cfg: RunConfig, run_dir: Path):
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        """Saves ``best.keras`` (best val mIoU) and ``last.keras``, each atomically."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            marker = run_dir / "best_score.txt"
            if marker.exists():
                try:
                    self.best = float(marker.read_text().strip())
                except ValueError:
                    pass

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            with atomic_path(run_dir / "last.keras") as tmp:
                self.model.save(tmp)
            score = logs.get(MONITOR)
            if score is not None and score > self.best:
                self.best = float(score)
                with atomic_path(run_dir / "best.keras") as tmp:
                    self.model.save(tmp)
                with atomic_path(run_dir / "best_score.txt") as tmp:
                    Path(tmp).write_text(f"{self.best}\n")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.t0
                try:
                    logs["learning_rate"] = float(
                        keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
                    )
                except Exception:  # schedules without a scalar view
                    pass

    cbs = [
        Timer(),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False),
        BestCheckpoint(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
    ]
    if cfg.train.early_stop_patience:
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=MONITOR, mode="max", patience=cfg.train.early_stop_patience
            )
        )
    return cbs


def plot_curves(history_csv: Path, out_png: Path) -> None:
    """Loss and mIoU against epoch from ``history.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(history_csv)))
    if not rows:
        return
    # a resumed run appends; keep the last row of each epoch
    by_epoch = {int(r["epoch"]): r for r in rows}
    epochs = sorted(by_epoch)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, title in (
        (axes[0], ("loss", "val_loss"), "loss"),
        (axes[1], ("mean_iou", "val_mean_iou"), "mIoU"),
    ):
        for k in keys:
            if k in by_epoch[epochs[0]]:
                ax.plot([e + 1 for e in epochs], [float(by_epoch[e][k]) for e in epochs], label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------


def fit(cfg: RunConfig):
    """Train a model as ``cfg`` says; returns the Keras ``History``.

    Args:
        cfg: the run configuration (see ``kseg.config``).

    Returns:
        ``keras.callbacks.History`` of this invocation (a resumed run has only the epochs run now;
        ``history.csv`` has all of them).
    """
    import keras

    from kseg import distribute

    run_dir = cfg.run_dir
    # first: MultiWorkerMirroredStrategy sets up this process's collective ops
    strategy = distribute.make_strategy(cfg.train.strategy)
    worker = distribute.this_worker(strategy)
    out = distribute.write_dir(run_dir, worker)  # the run folder, or a non-chief's workertemp_I
    out.mkdir(parents=True, exist_ok=True)
    if worker.chief:
        _check_same_run(cfg, run_dir)
    save_config(cfg, out / "config.yaml")
    keras.utils.set_random_seed(cfg.train.seed)
    policy = precision_policy(cfg.train.mixed_precision)
    if policy:
        keras.mixed_precision.set_global_policy(policy)

    replicas = strategy.num_replicas_in_sync
    scaled = distribute.for_replicas(cfg, replicas)  # global batch, learning rate
    train_ds, val_ds, train_set, _ = build_data(scaled)
    train_ds = distribute.shard_by_data(train_ds, strategy)
    val_ds = distribute.shard_by_data(val_ds, strategy)
    num_classes = train_set.num_classes
    write_classes(train_set, out / "classes.json")
    steps = cfg.train.steps_per_epoch
    if steps is None:
        steps = max(1, len(train_set) // scaled.data.batch_size)

    if cfg.train.strategy:
        print(distribute.describe(cfg.train.strategy, strategy, worker, cfg, scaled), flush=True)
    with strategy.scope():
        model = build_from_config(cfg, num_classes)
        model.compile(
            optimizer=make_optimizer(scaled, steps),
            loss=make_loss(cfg, num_classes, train_set),
            metrics=make_metrics(num_classes),
        )
    distribute.patch_keras_for_multi_worker(model, strategy)
    try:
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.train.epochs,
            steps_per_epoch=cfg.train.steps_per_epoch,
            callbacks=_callbacks(cfg, out),
            verbose=cfg.train.verbose if worker.chief else 0,
        )
    except ValueError as e:
        if "backup" in str(e).lower() or "shape" in str(e).lower() and (out / "backup").exists():
            raise KsegError(
                f"cannot resume from {out / 'backup'}: it was written by another model or "
                f"config ({str(e).splitlines()[0][:120]}); use a new --name or delete that folder"
            ) from None
        raise
    finally:
        if policy:
            keras.mixed_precision.set_global_policy("float32")
        distribute.close_strategy(strategy)
    if worker.chief and (run_dir / "history.csv").exists():
        plot_curves(run_dir / "history.csv", run_dir / "curves.png")
    distribute.finish_dir(out, worker)
    return history


def write_classes(ds, path: Path) -> None:
    """Class names and colours beside the checkpoints, for predict/export."""
    import json

    meta = {"class_names": list(ds.class_names), "colors": [list(map(int, c)) for c in ds.colors]}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))


def _check_same_run(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run folder whose saved config has another model."""
    import yaml

    saved = run_dir / "config.yaml"
    if not saved.exists() or not (run_dir / "backup").exists():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    old_model = old.get("model", {})
    if old_model.get("name") != cfg.model.name or (old_model.get("kwargs") or {}) != dict(
        cfg.model.kwargs
    ):
        raise KsegError(
            f"{run_dir} holds a checkpoint of model {old_model.get('name')} "
            f"{old_model.get('kwargs') or {}}, not {cfg.model.name} {dict(cfg.model.kwargs)}; "
            "use another --name or delete the folder to start over"
        )


def configure_cpu_devices(n: int) -> None:
    """Split the CPU into ``n`` devices (for ``--strategy mirrored`` on a CPU-only machine).

    Must run before the backend initialises its devices; see ``kseg.distribute.configure_cpu_devices``.
    """
    from kseg.distribute import configure_cpu_devices as configure

    configure(n)
