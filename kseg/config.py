"""Run configuration: dataclasses that a YAML file in ``configs/`` serialises.

A config is the whole recipe of a training run. ``load_config`` reads YAML, applies
``--set key=value`` overrides (dotted keys, values parsed as YAML), and rejects unknown keys
with a message that lists the known ones.

Example:
    cfg = load_config("configs/camvid_unet.yaml", overrides=["train.epochs=2"])
    print(cfg.model.name, cfg.train.epochs)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kseg.errors import KsegError
from kseg.paths import shared_data_dir


@dataclass
class DatasetSpec:
    """One dataset to read: a folder, its format, and reader options.

    ``path`` is absolute, relative to the working directory, or relative to the shared data
    folder (``../shared/data`` or ``$KSEG_DATA``), in that order.
    """

    path: str = ""
    format: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    # hold out data.val_fraction of this dataset for validation (when data.val is empty);
    # false uses all of it for training (e.g. COCO train persons, whose val split is separate)
    holdout: bool = True

    def resolved_path(self) -> Path:
        return resolve_data_path(self.path)


@dataclass
class AugmentSpec:
    """Training augmentation; see ``kseg.data.transforms`` for what each does."""

    scale: tuple[float, float] = (0.5, 2.0)
    rotate: float = 10.0
    flip: bool = True
    portrait: float = 0.0
    photometric: bool = True


@dataclass
class DataConfig:
    """Training and validation data.

    If ``val`` is empty, ``val_fraction`` of each training dataset is held out by ``seed``.
    """

    train: list[DatasetSpec] = field(default_factory=list)
    val: list[DatasetSpec] = field(default_factory=list)
    val_fraction: float = 0.1
    size: tuple[int, int] = (256, 256)
    batch_size: int = 8
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    cache: Any = False
    on_error: str = "skip"


@dataclass
class ModelConfig:
    """A model from the registry (``kseg.models.MODELS``) and its keyword arguments."""

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # a trained .keras checkpoint of the same architecture to start from (fine-tuning); its
    # weights replace the initial (e.g. ImageNet-encoder) weights before training starts
    init_from: str | None = None


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of ``kseg train``."""

    epochs: int = 50
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "poly"
    warmup_epochs: int = 0
    loss: str = "ce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    class_weights: str | None = None
    # softening of class_weights: each weight raised to this power (1 = full balancing,
    # 0.5 = square root: rare classes still up-weighted, frequent ones less given away)
    class_weight_power: float = 1.0
    # exponential moving average of the weights (Polyak averaging; the optimizer's use_ema), e.g.
    # 0.998: validation, best.keras and last.keras hold the average, training steps the raw weights
    ema: float | None = None
    # soft-target distillation (kseg.models.distiller): {teacher: a trained .keras with the same
    # classes, alpha: the teacher term's share of the loss (default 0.5), temperature: (default 1)}
    distill: dict[str, Any] = field(default_factory=dict)
    # mixed_float16 (GPUs; loss scaling) or mixed_bfloat16 (TPUs, recent GPUs); true = mixed_bfloat16
    mixed_precision: bool | str = False
    early_stop_patience: int | None = 15
    # tf.distribute / keras.distribution: mirrored, multi_worker (TF_CONFIG), tpu (kseg.distribute)
    strategy: str | None = None
    # learning rate with N replicas (data.batch_size is per replica): linear (×N), sqrt (×√N), none
    lr_scaling: str = "linear"
    seed: int = 0
    # auto: Keras' bar on a terminal; in a log a line per epoch and one every 30 s within it
    verbose: int | str = "auto"


@dataclass
class ExportConfig:
    """Defaults of ``kseg export --config`` for the model this config trains."""

    # int8 only: TFLite op types kept in float (as ``kseg export --float-ops``), e.g. a
    # transformer's attention and LayerNorm ops, for which XNNPACK has no int8 kernels
    float_ops: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """A whole run: data, model, training, and where outputs go (``out_dir/name``)."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Find a dataset folder: as given, else under the shared data folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    candidate = shared_data_dir() / p
    if candidate.exists():
        return candidate
    raise KsegError(
        f"dataset folder {path} not found (looked in {Path.cwd()} and {shared_data_dir()}); "
        "give an existing path or set KSEG_DATA to the folder that holds the datasets"
    )


# --------------------------------------------------------------------------------------
# dict <-> dataclass with strict keys


def _from_dict(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise KsegError(f"config {where or 'root'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise KsegError(
                f"unknown config key {where + '.' if where else ''}{key}{hint}; "
                f"known keys here: {', '.join(fields)}"
            )
        kwargs[key] = _convert(fields[key].type, value, f"{where + '.' if where else ''}{key}")
    return cls(**kwargs)


_NESTED = {
    "DatasetSpec": DatasetSpec,
    "AugmentSpec": AugmentSpec,
    "DataConfig": DataConfig,
    "ModelConfig": ModelConfig,
    "TrainConfig": TrainConfig,
    "ExportConfig": ExportConfig,
}


def _convert(type_str, value, where):
    t = type_str if isinstance(type_str, str) else getattr(type_str, "__name__", str(type_str))
    if t in _NESTED:
        return _from_dict(_NESTED[t], value, where)
    if t.startswith("list[DatasetSpec]"):
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise KsegError(f"config {where} must be a list of datasets ({{path, format}} mappings), got {value!r}")
        return [
            _from_dict(DatasetSpec, _dataset_shorthand(v), f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
    optional = t.endswith(" | None")
    base = t[: -len(" | None")] if optional else t
    if value is None:
        if optional or base == "Any":
            return None
        raise KsegError(f"config {where} must be {_EXPECTED.get(base, base)}, got nothing (null); "
                        "give a value or remove the key")
    if base in ("int", "float"):
        value = _number(value, base, where)
    elif base == "bool":
        if not isinstance(value, bool):
            raise KsegError(f"config {where} must be true or false, got {value!r}")
    elif base == "str":
        if isinstance(value, (dict, list)):
            raise KsegError(f"config {where} must be a name (text), got {value!r}")
        value = str(value)
    elif base.startswith("tuple["):
        inner = [x.strip() for x in base[len("tuple["):-1].split(",")]
        expected = f"a list of {len(inner)} {'whole numbers' if inner[0] == 'int' else 'numbers'}"
        if not isinstance(value, (list, tuple)) or len(value) != len(inner):
            raise KsegError(f"config {where} must be {expected} like [{', '.join(_EXAMPLE[i] for i in inner)}], "
                            f"got {value!r}")
        try:
            value = tuple(_number(v, i, where) for v, i in zip(value, inner))
        except KsegError:
            raise KsegError(f"config {where} must be {expected} like [{', '.join(_EXAMPLE[i] for i in inner)}], "
                            f"got {value!r}") from None
    elif base == "list[str]":
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise KsegError(f"config {where} must be a list of names like [BATCH_MATMUL, SOFTMAX], got {value!r}")
        value = [v.strip() for v in value]
    elif base.startswith("dict[") and not isinstance(value, dict):
        raise KsegError(f"config {where} must be a mapping of names to values, got {value!r}")
    return value


_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a name (text)"}
_EXAMPLE = {"int": "256", "float": "0.5"}


def _number(value, kind: str, where: str):
    """``value`` as an ``int`` or ``float``; YAML text such as ``"5e-4"`` or ``"3"`` is accepted."""
    expected = _EXPECTED[kind]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise KsegError(f"config {where} must be {expected}, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())  # YAML 1.1 reads 5e-4 as a string
        except ValueError:
            raise KsegError(f"config {where} must be {expected}, got {value!r}") from None
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise KsegError(f"config {where} must be {expected}, got {value!r}")
        return int(value)
    return float(value)


# (key, test, what is expected): checked once every value has its type
_RANGES = (
    ("data.size", lambda v: all(x >= 1 for x in v), "[H, W] with H and W of at least 1 pixel, e.g. [256, 256]"),
    ("data.batch_size", lambda v: v >= 1, "at least 1"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1, e.g. 0.1"),
    ("data.on_error", lambda v: v in ("skip", "fail"), "skip or fail"),
    ("data.augment.scale", lambda v: 0 < v[0] <= v[1], "[low, high] with 0 < low <= high, e.g. [0.5, 2.0]"),
    ("data.augment.rotate", lambda v: v >= 0, "degrees, 0 or more"),
    ("data.augment.portrait", lambda v: 0 <= v <= 1, "a probability from 0 to 1"),
    ("train.epochs", lambda v: v >= 1, "at least 1"),
    ("train.steps_per_epoch", lambda v: v is None or v >= 1, "at least 1, or null (one pass over the data)"),
    ("train.learning_rate", lambda v: v > 0, "a positive number, e.g. 0.001"),
    ("train.weight_decay", lambda v: v >= 0, "0 or more"),
    ("train.warmup_epochs", lambda v: v >= 0, "0 or more"),
    ("train.early_stop_patience", lambda v: v is None or v >= 0, "epochs without improvement (0 or null: off)"),
    ("train.optimizer", lambda v: v.lower() in ("adam", "adamw", "sgd"), "adam, adamw or sgd"),
    ("train.schedule", lambda v: v in ("poly", "cosine", "constant"), "poly, cosine or constant"),
    ("train.verbose", lambda v: not isinstance(v, bool) and v in (0, 1, 2, "auto"),
     "auto (a bar on a terminal, lines in a log), 0 (silent), 1 (progress bar) or 2 (a line per epoch)"),
)


def _check_ranges(cfg) -> None:
    for key, ok, expected in _RANGES:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if not ok(node):
            shown = list(node) if isinstance(node, tuple) else node
            raise KsegError(f"config {key} must be {expected}, got {shown!r}")


def _dataset_shorthand(v):
    """Allow ``{path, format, any reader option...}`` as a flat mapping."""
    if isinstance(v, str):
        return {"path": v}
    if isinstance(v, dict):
        known = {"path", "format", "options", "holdout"}
        opts = dict(v.get("options") or {})
        opts.update({k: val for k, val in v.items() if k not in known})
        out = {k: v[k] for k in ("path", "format", "holdout") if k in v}
        out["options"] = opts
        return out
    return v


def config_to_dict(cfg) -> dict:
    """A plain dict (tuples as lists) suitable for YAML."""

    def clean(x):
        if isinstance(x, tuple):
            return [clean(v) for v in x]
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return clean(dataclasses.asdict(cfg))


def _apply_override(tree: dict, item: str):
    if "=" not in item:
        raise KsegError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KsegError(f"--set {item!r}: {part} is not a section")
    node[parts[-1]] = value


def read_yaml(path: str | os.PathLike, hint: str = "see configs/ for examples") -> dict:
    """A YAML config file as a dict, with one-line errors for a missing file or bad syntax.

    Args:
        path: the YAML file.
        hint: what to do when the file is missing (ends the error message).

    Raises:
        KsegError: missing file or invalid YAML (with its line).
    """
    p = Path(path)
    if not p.is_file():
        raise KsegError(f"config file {p} not found; {hint}")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise KsegError(f"config file {p} is not valid YAML{at}: fix the syntax") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or start from defaults) and apply ``key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: dotted ``key=value`` strings, values parsed as YAML.

    Returns:
        A validated ``RunConfig``.

    Raises:
        KsegError: missing file, invalid YAML, unknown key, or a value of the wrong type or out
            of range (one line naming the key, the value and what is expected).
    """
    tree: dict = {}
    if path is not None:
        p = Path(path)
        tree = read_yaml(p)
        if "name" not in tree:
            tree["name"] = p.stem
    for item in overrides or []:
        _apply_override(tree, item)
    cfg = _from_dict(RunConfig, tree, "")
    _check_ranges(cfg)
    return cfg


def save_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically."""
    from kseg.paths import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
