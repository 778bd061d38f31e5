"""Training: build data and model from a ``RunConfig`` and run ``model.fit``.

Writes ``runs/NAME/{config.yaml, best.keras, last.keras, history.csv, curves.png, logs/}``
(``logs/``: TensorBoard, ``tensorboard --logdir runs/NAME/logs``). Progress: Keras' bar on a
terminal; in a log one line per epoch and, within long epochs, one every 30 s
(``train.verbose``, ``kseg.progress``).
A killed run resumes where it stopped when started again with the same name (Keras
``BackupAndRestore`` keeps the epoch, weights and optimizer state in ``runs/NAME/backup``,
written atomically with a SHA-256 beside them; the previous backup stays until the new one is
complete, and a resumed run sees the data in the order an uninterrupted one would). Ctrl-C or
SIGTERM stops at the next step, never in the middle of a write.

Example:
    from kseg.config import load_config
    from kseg.train import fit
    history = fit(load_config("configs/camvid_unet.yaml", ["train.epochs=1"]))
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from kseg import _faults
from kseg.config import RunConfig, save_config
from kseg.errors import KsegError
from kseg.paths import atomic_path
from kseg.progress import fit_verbose, step_lines_callback

MONITOR = "val_mean_iou"


def _say(line: str) -> None:
    """One line to the user about the run itself (on stderr, beside Keras' progress on stdout)."""
    print(f"kseg: {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# data


def open_specs(specs, *, what: str):
    """Open and concatenate the datasets of a config section."""
    from kseg.data.readers import concat, open_dataset

    if not specs:
        raise KsegError(f"config data.{what} lists no dataset; add at least one {{path, format}}")
    datasets = [open_dataset(s.resolved_path(), s.format, **s.options) for s in specs]
    return datasets[0] if len(datasets) == 1 else concat(datasets)


def split_sources(cfg: RunConfig):
    """``(train_sets, val_sets)``: each ``data.train`` entry opened, and split into training and
    held-out parts (``val_fraction``, the run's seed) unless ``data.val`` is given or the entry has
    ``holdout: false``; one training set per entry, in the config's order."""
    from kseg.data.readers import open_dataset

    d = cfg.data
    train_sets, val_sets = [], []
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
    return train_sets, val_sets


def build_data(cfg: RunConfig, start_epoch: int = 0):
    """Return ``(train_ds, val_ds, train_set, val_set)``: tf.data pipelines and their SegDatasets.

    ``start_epoch``: the epoch training resumes at (the training data is shuffled as in that epoch).
    """
    from kseg.data.pipeline import Augment, make_dataset
    from kseg.data.readers import concat

    d = cfg.data
    train_sets, val_sets = split_sources(cfg)
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
        start_epoch=start_epoch,
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
        if not cfg.train.warmup_epochs:
            _say(f"starting from {cfg.model.init_from} with a fresh optimizer at the full learning rate "
                 f"({cfg.train.learning_rate:g}); trained weights usually lose accuracy in the first steps: "
                 "set train.warmup_epochs: 1 and a lower rate to fine-tune")
    return model


def make_distiller(student, cfg: RunConfig):
    """``student`` wrapped for soft-target distillation from ``cfg.train.distill``'s teacher
    (``kseg.models.distiller``); the teacher is rebuilt at the student's input size."""
    from kseg.models.base import with_input_size
    from kseg.models.distiller import Distiller
    from kseg.models.saving import load_model

    d = dict(cfg.train.distill)
    unknown = sorted(set(d) - {"teacher", "alpha", "temperature"})
    if unknown or not d.get("teacher"):
        raise KsegError(f"train.distill takes {{teacher: PATH.keras, alpha: 0.5, temperature: 1}}; got {d}"
                        + (f" (unknown: {', '.join(unknown)})" if unknown else " (no teacher)"))
    path = Path(os.path.expanduser(str(d["teacher"])))
    teacher = load_model(path)
    size = tuple(int(v) for v in student.input_shape[1:3])
    if tuple(teacher.input_shape[1:3]) != size:
        teacher = with_input_size(teacher, size)
    model = Distiller(student, teacher, alpha=float(d.get("alpha", 0.5)), temperature=float(d.get("temperature", 1.0)))
    _say(f"distilling from {path} (alpha {model.alpha:g}, temperature {model.temperature:g})")
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
    ema = {}
    if t.ema:
        if not 0 < float(t.ema) < 1:
            raise KsegError(f"train.ema {t.ema!r}: the moving average's momentum is between 0 and 1 (e.g. 0.998), "
                            "or leave it out")
        ema = {"use_ema": True, "ema_momentum": float(t.ema)}
    if name == "adam":
        opt = keras.optimizers.Adam(lr, **ema)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=t.weight_decay or 1e-4, **ema)
    elif name == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=False, **ema)
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
        weights = dataset_class_weights(train_set, num_classes, t.class_weights, t.class_weight_power)
        kwargs["class_weights"] = [float(w) for w in weights]
        names = getattr(train_set, "class_names", None) or [str(k) for k in range(num_classes)]
        _say(f"class weights ({t.class_weights}" + (f", power {t.class_weight_power:g}" if t.class_weight_power != 1 else "")
             + "): " + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights)))
    if t.loss in ("dice", "ce_dice"):
        kwargs.setdefault("num_classes", num_classes)
    return losses.get_loss(t.loss, **kwargs)


def dataset_class_weights(train_set, num_classes: int, method: str, power: float = 1.0):
    """Class weights from the training masks (SegNet's median-frequency balancing, or inverse),
    each raised to ``power`` (``train.class_weight_power``)."""
    import numpy as np

    from kseg.losses import class_pixel_counts, compute_class_weights

    def masks():
        for i in range(len(train_set)):
            try:
                yield train_set.load(i)[1]
            except KsegError:
                continue

    counts, present = class_pixel_counts(masks(), num_classes)
    w = compute_class_weights(counts, method=method, present_counts=present, power=power)
    return np.asarray(w, dtype="float32")


def deep_supervision_outputs(model) -> list[str] | None:
    """The output names of a deep-supervision model (dict of logits: ``logits`` is the fused map,
    the others side outputs, e.g. U²-Net's ``side1``…``side6``), or ``None`` for a model with one
    output."""
    if isinstance(model.output, dict):
        names = list(model.output)
        if "logits" not in names:
            raise KsegError(f"model {model.name} returns a dict without a 'logits' entry ({', '.join(names)}); "
                            "kseg train needs the fused logits under 'logits'")
        return names
    return None


def targets_for(ds, names):
    """``ds`` with each element's mask repeated for every output in ``names`` (the same ground truth
    supervises the fused and every side output, as in U²-Net's deep supervision)."""

    def repeat(x, y, *rest):
        return (x, {n: y for n in names}, *rest)

    return ds.map(repeat)


def _rename_fused_logs():
    """Multi-output training logs ``logits_mean_iou``, ``val_logits_pixel_accuracy``, …; this renames
    the fused output's metrics to the single-output names (``mean_iou``…) before the checkpoint,
    early-stopping and CSV callbacks read them, so every run's history and monitor look alike."""
    import keras

    class RenameFusedLogs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not logs:
                return
            for key in list(logs):
                for prefix, plain in (("logits_", ""), ("val_logits_", "val_")):
                    if key.startswith(prefix) and key != prefix + "loss":  # the fused loss keeps its name
                        logs[plain + key[len(prefix):]] = logs.pop(key)

    return RenameFusedLogs()


def make_metrics(num_classes: int):
    from kseg import metrics

    return [
        metrics.PixelAccuracy(num_classes, name="pixel_accuracy"),
        metrics.MeanIoU(num_classes, name="mean_iou"),
    ]


# --------------------------------------------------------------------------------------
# callbacks

# SIGINT/SIGTERM during model.fit: the first one is noted and raised as KeyboardInterrupt at the
# next step boundary (never inside TensorFlow's C++ nor in the middle of the end-of-epoch
# writes); a second one interrupts at once.
_INTERRUPT = {"signal": None}


@contextlib.contextmanager
def deferred_interrupts():
    """Within this block SIGINT and SIGTERM stop training at the next step, not mid-write.

    The first signal is only noted (``_Interrupts`` raises ``KeyboardInterrupt`` at the next
    batch or epoch boundary); a second one raises at once. Outside the main thread, nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _INTERRUPT["signal"] is not None:
            raise KeyboardInterrupt
        _INTERRUPT["signal"] = signum

    _INTERRUPT["signal"] = None
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        if _INTERRUPT["signal"] is not None:
            raise KeyboardInterrupt
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _INTERRUPT["signal"] = None


def _interrupts_callback():
    import keras

    class _Interrupts(keras.callbacks.Callback):
        """Raises the interrupt noted by ``deferred_interrupts`` where it is safe: between steps."""

        def _check(self, *args, **kwargs):
            if _INTERRUPT["signal"] is not None:
                raise KeyboardInterrupt

        on_train_batch_begin = on_epoch_begin = on_test_begin = _check

        def on_test_batch_begin(self, batch, logs=None):
            _faults.pause("validation")
            self._check()

    return _Interrupts()


# the backup before the latest (Keras loads only files named *.weights.h5)
PREVIOUS = ("previous.weights.h5", "previous_metadata.json")


def _decode_report_callback(cfg: RunConfig, train_ds, val_ds):
    import keras

    from kseg.data.pipeline import decode_report

    class DecodeReport(keras.callbacks.Callback):
        """After the first full pass: one line naming the samples the decoder skipped (on_error: skip)."""

        def on_epoch_end(self, epoch, logs=None):
            passes = [(val_ds, "validation")]
            if cfg.train.steps_per_epoch is None:  # otherwise an epoch is not one pass over the data
                passes.insert(0, (train_ds, "training"))
            for ds, what in passes:
                line = decode_report(ds, what) if ds is not None else None
                if line:
                    _say(line)

    return DecodeReport()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_backup(backup_dir: Path, latest_only: bool = False) -> list[tuple[Path, dict]]:
    """The complete backups in ``backup_dir``, newest first: ``[(weights file, metadata)]``.

    A backup is complete when its metadata parses and names the weights' size and SHA-256 (or,
    for backups written before kseg recorded them, when the weights file exists); the latest
    one comes first, then the previous one (``previous.weights.h5``) unless ``latest_only``.
    """
    import json

    found = []
    pairs = [(backup_dir / "latest.weights.h5", backup_dir / "training_metadata.json"),
             (backup_dir / PREVIOUS[0], backup_dir / PREVIOUS[1])]
    for w, m in pairs[:1] if latest_only else pairs:
        try:
            meta = json.loads(m.read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or not w.is_file():
                continue
            if "sha256" in meta and (w.stat().st_size != meta.get("size") or _file_digest(w) != meta["sha256"]):
                continue
        except (OSError, ValueError):
            continue
        found.append((w, meta))
    return found


def resume_epoch(run_dir) -> int:
    """The epoch (1-based) that ``fit`` starts from when it runs again on ``run_dir``."""
    done = read_backup(Path(run_dir) / "backup")
    return done[0][1]["epoch"] + 1 if done else 1


def _backup_callback(backup_dir: Path):
    import json

    import keras

    class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` that never leaves a torn backup and verifies the one it loads.

        Each epoch's weights go to a temporary file (fsynced) that replaces
        ``latest.weights.h5`` only once complete; the previous backup is kept as
        ``previous.weights.h5`` until the new metadata (epoch, size and SHA-256 of the
        weights) is in place. On resume, a backup whose weights do not match their metadata,
        or do not open, is skipped with one line and the previous one is used.
        """

        def __init__(self):
            super().__init__(str(backup_dir), delete_checkpoint=False)

        def _save_model(self):
            w, m = Path(self._weights_path), Path(self._training_metadata_path)
            with atomic_path(w, suffix=".weights.h5", option="out_dir (--out-dir)") as tmp:
                self.model.save_weights(str(tmp), overwrite=True)
                _faults.pause("backup")
                meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                        "size": tmp.stat().st_size, "sha256": _file_digest(tmp)}
                current = read_backup(backup_dir, latest_only=True)
                if current:  # a complete latest: it becomes the previous one
                    os.replace(w, backup_dir / PREVIOUS[0])
                    os.replace(m, backup_dir / PREVIOUS[1])
                else:  # nothing, or a torn latest: keep the previous one, drop the stale metadata
                    m.unlink(missing_ok=True)
            with atomic_path(m, option="out_dir (--out-dir)") as tmp:
                Path(tmp).write_text(json.dumps(meta))

        def on_train_begin(self, logs=None):
            latest = Path(self._weights_path)
            candidates = read_backup(backup_dir)
            torn = (latest.exists() or Path(self._training_metadata_path).exists()) and not (
                candidates and candidates[0][0] == latest)
            if not candidates:
                if torn:
                    _say(f"backup {latest} is incomplete (interrupted while it was written) and there is no "
                         "earlier one; starting again from epoch 1")
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            variables = list(self.model.variables)
            if self.model.optimizer is not None:
                variables += list(self.model.optimizer.variables)
            start = [v.numpy() for v in variables]
            misfit = None
            for weights, meta in candidates:
                try:
                    self.model.load_weights(str(weights))
                except Exception as e:
                    for v, value in zip(variables, start):
                        v.assign(value)
                    reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
                    if not isinstance(e, OSError):  # it opens, but holds another model's weights
                        misfit = misfit or reason
                    _say(f"backup {weights} does not load ({reason}); trying the previous one")
                    torn = True
                    continue
                if torn:
                    _say(f"backup {latest} is incomplete (interrupted while it was written); resuming from the "
                         f"previous backup, epoch {meta['epoch'] + 1}")
                self.model._initial_epoch = meta["epoch"]
                return
            if misfit:
                raise KsegError(
                    f"cannot resume from {backup_dir}: its weights do not fit this model ({misfit}); it was "
                    "written by another model or data — use a new --name or delete that folder"
                )
            _say(f"no backup in {backup_dir} can be read (torn files, written before kseg verified them); "
                 "starting again from epoch 1")

    return SafeBackupAndRestore()


def _ema_callback():
    """Keras' ``SwapEMAWeights(swap_on_epoch=True)``: validation and the checkpoints written at each
    epoch's end see the moving average, training steps the raw weights. The backup is written while
    the average is in the model and the raw weights in the optimizer's slots, so after a resume the
    first epoch swaps them back before training on. Unlike Keras' callback it does not copy the
    average over the raw weights at the last epoch (a run given more epochs later would go on from
    the average): the model gets the average back when training ends."""
    import keras

    class EMAWeights(keras.callbacks.SwapEMAWeights):
        def __init__(self):
            super().__init__(swap_on_epoch=True)
            self._first, self._average = True, None

        def on_epoch_begin(self, epoch, logs=None):
            if self._first:
                self._first = False
                self._ema_weights_in_model = bool(getattr(self.model, "_initial_epoch", 0))
            super().on_epoch_begin(epoch, logs)

        def on_epoch_end(self, epoch, logs=None):
            if not self._ema_weights_in_model:
                self._swap_variables()
                self._ema_weights_in_model = True
            self._average = [v.numpy() for v in self.model.trainable_variables]

        def on_train_end(self, logs=None):  # after fit's finalize_variable_values, which put the slots' raw weights back
            if self._average is not None:
                for v, value in zip(self.model.trainable_variables, self._average):
                    v.assign(value)

    return EMAWeights()


def _callbacks(cfg: RunConfig, run_dir: Path, train_ds=None, val_ds=None):
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        """Saves ``best.keras`` (best val mIoU) and ``last.keras``, each atomically; a deep-supervision
        model is saved as its single-output (fused logits) model, the one evaluate and export use."""

        def deployable(self):
            from kseg.models.saving import single_output

            return single_output(self.model)

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
            model = self.deployable()
            with atomic_path(run_dir / "last.keras", option="--out-dir") as tmp:
                model.save(tmp)
            score = logs.get(MONITOR)
            if score is not None and score > self.best:
                self.best = float(score)
                with atomic_path(run_dir / "best.keras", option="--out-dir") as tmp:
                    model.save(tmp)
                with atomic_path(run_dir / "best_score.txt", option="--out-dir") as tmp:
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

    # the backup restores first (on_train_begin) and is written last (on_epoch_end): a backup
    # of epoch N means best/last.keras and history.csv have epoch N too
    backup = _backup_callback(run_dir / "backup")
    cbs = [
        _interrupts_callback(),
        _decode_report_callback(cfg, train_ds, val_ds),
        Timer(),
        *([_ema_callback()] if cfg.train.ema else []),  # before BestCheckpoint: it saves the average
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
    cbs.append(backup)
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
    train_ds, val_ds, train_set, _ = build_data(scaled, start_epoch=resume_epoch(run_dir) - 1)
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
        sides = deep_supervision_outputs(model)
        if cfg.train.distill:
            if sides:
                raise KsegError("train.distill does not take a deep-supervision model (its outputs are a dict); "
                                "set deep_supervision: false or remove train.distill")
            model = make_distiller(model, cfg)
        loss, metrics = make_loss(cfg, num_classes, train_set), make_metrics(num_classes)
        if sides:  # deep supervision: the same loss on the fused and on every side output, summed
            loss, metrics = {n: loss for n in sides}, {"logits": metrics}
        model.compile(optimizer=make_optimizer(scaled, steps), loss=loss, metrics=metrics)
    if sides:
        train_ds, val_ds = targets_for(train_ds, sides), targets_for(val_ds, sides)
    distribute.patch_keras_for_multi_worker(model, strategy)
    # a bar on a terminal; in a log Keras' line per epoch and, within long epochs, one every 30 s
    verbose = fit_verbose(cfg.train.verbose) if worker.chief else 0
    callbacks = _callbacks(cfg, out, train_ds, val_ds)
    if sides:
        callbacks.insert(0, _rename_fused_logs())
    if verbose == 2:
        callbacks.insert(0, step_lines_callback(keras.callbacks.Callback))
    interrupts = contextlib.ExitStack()  # Ctrl-C stops between steps, so a re-run resumes
    try:
        interrupts.enter_context(deferred_interrupts())
        # Keras learns a tf.data pipeline's length (unknown after ignore_errors) when the first pass
        # ends, and warns "ran out of data; interrupting training" then: nothing is interrupted
        # (training data repeats whenever steps_per_epoch is set)
        interrupts.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.train.epochs,
            steps_per_epoch=cfg.train.steps_per_epoch,
            shuffle=False,  # the pipeline shuffles (Keras ignores it for tf.data, with a warning)
            callbacks=callbacks,
            verbose=verbose,
        )
    except Exception as e:
        if type(e).__name__ in ("InvalidArgumentError", "DataLossError", "UnknownError"):
            from kseg.data.pipeline import decode_failure

            why = decode_failure(train_ds) or decode_failure(val_ds)
            if why:  # the data pipeline stopped at a file (data.on_error: fail)
                raise KsegError(f"{why} (data.on_error is fail; set it to skip to train without such files)") from None
        if not isinstance(e, ValueError):
            raise
        if "backup" in str(e).lower() or "shape" in str(e).lower() and (out / "backup").exists():
            raise KsegError(
                f"cannot resume from {out / 'backup'}: it was written by another model or "
                f"config ({str(e).splitlines()[0][:120]}); use a new --name or delete that folder"
            ) from None
        raise
    finally:
        if policy:
            keras.mixed_precision.set_global_policy("float32")
        interrupts.close()
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
