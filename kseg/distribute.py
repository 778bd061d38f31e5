"""Training on more than one device or machine: strategies, replica scaling, the chief, a launcher.

``train.strategy`` (``kseg train --strategy``) says how ``kseg.train.fit`` spreads each step:

- ``mirrored``: every GPU of this machine (else its logical CPU devices, ``--cpu-devices N``)
  with ``tf.distribute.MirroredStrategy``; under ``KERAS_BACKEND=jax`` the same through
  ``keras.distribution.DataParallel`` over the local JAX devices.
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the processes that the
  standard ``TF_CONFIG`` lists (one per machine, or ``kseg train --workers N`` on this one).
- ``tpu``: ``tf.distribute.TPUStrategy`` on the Cloud TPU named by ``$TPU_NAME`` (default
  ``local``, a TPU VM).

Rules that hold for all of them (docs/distributed.md):

- ``data.batch_size`` is the batch of one replica: the global batch is
  ``batch_size × replicas``, so one replica sees what a single-device run sees.
- The learning rate follows the global batch: ``train.lr_scaling: linear`` (default) multiplies
  it by the number of replicas (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), ``sqrt``
  by its square root, ``none`` leaves it.
- Multi-worker input is sharded with ``AutoShardPolicy.DATA``: the pipeline starts from an
  in-memory list of files (``Dataset.from_tensor_slices``), which the ``FILE`` policy cannot
  split, and ``DATA`` gives worker *i* its slice of exactly the global batch a single process
  would have built (same shuffle, same augmentation seeds), so N workers train the same model
  as one process with the N× batch. The cost: every worker reads and augments every sample.
- Only the chief (task ``chief``, else worker 0) writes the run folder. The others write the
  same files (a save may need every worker, as the TensorFlow guide explains) into
  ``RUN/workertemp_I``, seeded from the chief's backup so that a restarted worker resumes at
  the chief's epoch, and removed when training ends.

Example:
    # two local worker processes on free loopback ports, output prefixed by worker
    kseg train --config configs/camvid_unet.yaml --workers 2
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kseg.errors import KsegError

STRATEGIES = ("mirrored", "multi_worker", "tpu")
LR_SCALINGS = ("linear", "sqrt", "none")


# --------------------------------------------------------------------------------------
# TF_CONFIG and the chief


@dataclass(frozen=True)
class Worker:
    """This process's place in a cluster.

    Attributes:
        task_type: ``"chief"`` or ``"worker"`` (``None`` outside a cluster).
        task_id: index within its task type.
        count: number of processes that train together.
        chief: whether this process writes the run folder.
    """

    task_type: str | None = None
    task_id: int = 0
    count: int = 1
    chief: bool = True

    @property
    def label(self) -> str:
        return "single process" if self.task_type is None else f"{self.task_type} {self.task_id}"


def read_tf_config(environ=None) -> Worker:
    """The ``Worker`` that ``$TF_CONFIG`` describes (a single process when it is unset).

    ``TF_CONFIG`` is the JSON that ``tf.distribute`` reads: ``{"cluster": {"worker": ["host:port",
    ...]}, "task": {"type": "worker", "index": 0}}``, optionally with a ``"chief"`` list; the chief
    is the ``chief`` task, else worker 0 (as in the TensorFlow multi-worker tutorial).

    Raises:
        KsegError: TF_CONFIG is not JSON, or its task is not in its cluster.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return Worker()
    try:
        conf = json.loads(raw)
        cluster = conf["cluster"]
        task_type = conf["task"]["type"]
        task_id = int(conf["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise KsegError(
            'TF_CONFIG is not {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            f'"index": I}}}} (got {raw[:80]!r}); fix the variable or unset it'
        ) from None
    if task_type not in ("chief", "worker"):
        raise KsegError(f"TF_CONFIG task type {task_type!r}: kseg trains with chief and worker tasks only")
    hosts = cluster.get(task_type) or []
    if not 0 <= task_id < len(hosts):
        raise KsegError(
            f"TF_CONFIG task {task_type} {task_id} is not in its cluster ({len(hosts)} {task_type} "
            "address(es)); give each process an index below that number"
        )
    count = sum(len(cluster.get(t) or []) for t in ("chief", "worker"))
    chief = task_type == "chief" or ("chief" not in cluster and task_id == 0)
    return Worker(task_type, task_id, count, chief)


def write_dir(run_dir: Path, worker: Worker) -> Path:
    """Where this process writes: the run folder for the chief, ``RUN/workertemp_I`` for the others.

    A non-chief folder is seeded with the chief's ``backup/`` and ``best_score.txt`` when it can
    see them (a shared file system), so every worker restores the same epoch after a restart.
    """
    run_dir = Path(run_dir)
    if worker.chief:
        return run_dir
    out = run_dir / f"workertemp_{worker.task_id}"
    out.mkdir(parents=True, exist_ok=True)
    chief_backup = run_dir / "backup"
    if (chief_backup / "training_metadata.json").is_file():
        shutil.rmtree(out / "backup", ignore_errors=True)
        (out / "backup").mkdir()
        for f in chief_backup.iterdir():
            if f.is_file():
                shutil.copy2(f, out / "backup" / f.name)
    if (run_dir / "best_score.txt").is_file():
        shutil.copy2(run_dir / "best_score.txt", out / "best_score.txt")
    return out


def finish_dir(out: Path, worker: Worker) -> None:
    """Remove a non-chief's ``workertemp_I`` after a completed run (the chief's files are the run)."""
    if not worker.chief:
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------------------
# strategies


def backend() -> str:
    import keras

    return keras.backend.backend()


class JaxDataParallel:
    """``keras.distribution.DataParallel`` behind the two things ``fit`` asks of a strategy."""

    def __init__(self, devices):
        import keras

        self.devices = list(devices)
        self.distribution = keras.distribution.DataParallel(devices=self.devices)
        self.num_replicas_in_sync = len(self.devices)

    def scope(self):
        import keras

        keras.distribution.set_distribution(self.distribution)
        return contextlib.nullcontext()

    def close(self):
        import keras

        keras.distribution.set_distribution(None)


class _Default:
    """No distribution (JAX or another backend without a strategy)."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(name: str | None):
    """The strategy for ``train.strategy`` on the current Keras backend.

    Create it before any other TensorFlow op: ``MultiWorkerMirroredStrategy`` sets up the
    collective ops of this process.

    Args:
        name: ``None`` (one device), ``"mirrored"``, ``"multi_worker"`` or ``"tpu"``.

    Returns:
        An object with ``scope()`` and ``num_replicas_in_sync`` (a ``tf.distribute.Strategy`` on
        TensorFlow).

    Raises:
        KsegError: an unknown name, ``multi_worker`` without ``TF_CONFIG``, a name the backend does
            not support, or no TPU.
    """
    if name and name not in STRATEGIES:
        raise KsegError(f"unknown train.strategy {name!r}; use {', '.join(STRATEGIES)} or leave it empty")
    if backend() == "jax":
        return _jax_strategy(name)
    if backend() != "tensorflow":
        if name:
            raise KsegError(f"train.strategy {name} needs KERAS_BACKEND=tensorflow or jax, not {backend()}")
        return _Default()
    import tensorflow as tf

    if not name:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        worker = read_tf_config()
        if worker.task_type is None:
            raise KsegError(
                "train.strategy multi_worker needs TF_CONFIG (the cluster and this process's task; see "
                "docs/distributed.md), or run kseg train --workers N to start N local workers"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(os.environ.get("TPU_NAME", "local"))


def _tpu_strategy(tpu: str):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise KsegError(f"no TPU {tpu!r} ({first}); run on a Cloud TPU VM or set TPU_NAME") from None
    return tf.distribute.TPUStrategy(resolver)


def _jax_strategy(name):
    if not name:
        return _Default()
    if name != "mirrored":
        raise KsegError(
            f"train.strategy {name} is a tf.distribute strategy; with KERAS_BACKEND=jax use mirrored "
            "(keras.distribution.DataParallel over this machine's devices)"
        )
    import keras

    return JaxDataParallel(keras.distribution.list_devices())


def close_strategy(strategy) -> None:
    """Undo what ``scope()`` left set globally (the JAX distribution)."""
    if isinstance(strategy, JaxDataParallel):
        strategy.close()


def this_worker(strategy) -> Worker:
    """This process's ``Worker`` under ``strategy`` (only ``multi_worker`` has several)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return read_tf_config()
    return Worker()


def configure_cpu_devices(n: int) -> None:
    """Split the CPU into ``n`` devices, before the backend initialises them.

    TensorFlow: ``n`` logical CPU devices (for ``MirroredStrategy``). JAX:
    ``--xla_force_host_platform_device_count`` (for ``DataParallel``).
    """
    if backend() == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        os.environ.setdefault("KSEG_CPU_DEVICES", str(n))
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    os.environ.setdefault("KSEG_CPU_DEVICES", str(n))


# --------------------------------------------------------------------------------------
# batch, learning rate and input sharding


def scaled_learning_rate(lr: float, replicas: int, rule: str) -> float:
    """``lr`` for ``replicas`` replicas: ``linear`` ×N, ``sqrt`` ×√N, ``none`` unchanged.

    Example:
        >>> scaled_learning_rate(0.001, 4, "linear")
        0.004
    """
    if rule not in LR_SCALINGS:
        raise KsegError(f"unknown train.lr_scaling {rule!r}; use {', '.join(LR_SCALINGS)}")
    if rule == "linear":
        return lr * replicas
    if rule == "sqrt":
        return lr * math.sqrt(replicas)
    return lr


def for_replicas(cfg, replicas: int):
    """A copy of the ``RunConfig`` with the global batch and the scaled learning rate.

    ``data.batch_size`` stays what one replica sees; the copy's is ``batch_size × replicas``, and
    its ``train.learning_rate`` follows ``train.lr_scaling``. ``cfg`` itself is unchanged (it is
    what ``config.yaml`` records).
    """
    scaled_learning_rate(cfg.train.learning_rate, 1, cfg.train.lr_scaling)  # a wrong rule fails on one device too
    if replicas <= 1:
        return cfg
    data = replace(cfg.data, batch_size=cfg.data.batch_size * replicas)
    lr = scaled_learning_rate(cfg.train.learning_rate, replicas, cfg.train.lr_scaling)
    return replace(cfg, data=data, train=replace(cfg.train, learning_rate=lr))


def describe(name: str | None, strategy, worker: Worker, cfg, scaled) -> str:
    """One line: replicas, global batch and learning rate (printed by ``fit``)."""
    n = strategy.num_replicas_in_sync
    where = f" ({worker.count} workers, this is {worker.label})" if worker.count > 1 else ""
    return (
        f"{name} strategy: {n} replicas{where}; global batch {scaled.data.batch_size} = "
        f"{cfg.data.batch_size} x {n}; learning rate {scaled.train.learning_rate:g} "
        f"({cfg.train.lr_scaling} scaling of {cfg.train.learning_rate:g})"
    )


def shard_by_data(dataset, strategy):
    """Set ``AutoShardPolicy.DATA`` on a ``tf.data`` pipeline for a multi-worker strategy.

    Every worker runs the same pipeline and keeps its slice of each global batch; see the module
    docstring for why not ``FILE``.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    sharded = dataset.with_options(options)
    tally = getattr(dataset, "_kseg_tally", None)  # the skipped-file tally (on_error: skip)
    if tally is not None:
        sharded._kseg_tally = tally
    return sharded


def patch_keras_for_multi_worker(model, strategy) -> None:
    """Let ``model.fit`` start under ``MultiWorkerMirroredStrategy`` with Keras 3.

    Keras 3 (3.15 here) builds the metrics' and the loss's state before the first step by
    all-reducing the first batch of the distributed dataset (``strategy.reduce("MEAN", batch)``),
    which ``MultiWorkerMirroredStrategy`` cannot do on a tuple of per-replica values ("Attempt to
    convert a value (PerReplica ...) to a Tensor"; keras-team/keras#20585,
    tensorflow/tensorflow#72388). That build needs only shapes and dtypes: this model builds from
    the dataset's element spec instead, and consumes no batch.

    After each step Keras averages the per-replica logs with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails on the scalars that ``train_step`` returns under this strategy ("Invalid
    reduction dimension 0 for input with 0 dimensions"): the steps here return each scalar as a
    vector of one, which that reduction turns back into a scalar. Epoch logs are unaffected (Keras
    reads them from the metrics' synchronised variables).

    Other strategies are left alone.
    """
    import keras
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def symbolic(spec):
        return keras.KerasTensor(tuple(spec.shape.as_list()), dtype=spec.dtype.name)

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if data_batch is None and iterator is not None:
            data_batch = tf.nest.map_structure(symbolic, iterator.data_adapter.get_tf_dataset().element_spec)
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def vectors(step):
        def run(data):
            logs = step(data)
            return {k: keras.ops.reshape(v, (1,)) if len(v.shape) == 0 else v for k, v in logs.items()}

        return run

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = vectors(model.train_step)
    model.test_step = vectors(model.test_step)


# --------------------------------------------------------------------------------------
# the local launcher


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free on ``host`` now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker_envs(workers: int, host: str = "127.0.0.1", environ=None) -> list[dict]:
    """The environment of each local worker: its ``TF_CONFIG`` and its share of the GPUs."""
    base = dict(os.environ if environ is None else environ)
    cluster = {"worker": [f"{host}:{p}" for p in free_ports(workers, host)]}
    gpus = _gpu_ids()
    per = len(gpus) // workers
    envs = []
    for i in range(workers):
        env = dict(base, PYTHONUNBUFFERED="1")
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        if gpus:
            # GPUs split evenly; with fewer GPUs than workers they would all share GPU 0: use CPUs
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[i * per:(i + 1) * per]) if per else "-1"
        envs.append(env)
    return envs


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def launch_local(train_args: list[str], workers: int, *, grace: float = 10.0, out=None) -> int:
    """Run ``kseg train TRAIN_ARGS --strategy multi_worker`` as ``workers`` local processes.

    Like ``torchrun --standalone``: each worker gets a ``TF_CONFIG`` naming free ports on
    127.0.0.1 and its index (worker 0 is the chief); their output is printed with a
    ``[worker I]`` prefix. When one worker fails, the others are stopped and the failure is raised;
    Ctrl-C (or SIGTERM) stops them all.

    Args:
        train_args: arguments of ``kseg train`` without ``--workers`` and ``--strategy``.
        workers: number of processes (≥ 1).
        grace: seconds a worker has to exit after SIGINT before SIGTERM, and again before SIGKILL.
        out: where worker lines go (default ``sys.stdout``).

    Returns:
        0 when every worker finished.

    Raises:
        KsegError: a worker failed (named, with its exit status and last line); the others were
            stopped.
        KeyboardInterrupt: after stopping the workers on Ctrl-C or SIGTERM.
    """
    if workers < 1:
        raise KsegError(f"--workers {workers}: give at least 1")
    out = out or sys.stdout
    cmd = [sys.executable, "-m", "kseg", "train", *train_args, "--strategy", "multi_worker"]
    lock = threading.Lock()
    last_line: dict[int, str] = {}
    procs: list[subprocess.Popen] = []
    threads = []

    def forward(i, stream):
        for line in stream:
            text = line.rstrip("\n")
            if text.strip():
                last_line[i] = text.strip()
            with lock:
                out.write(f"[worker {i}] {text}\n")
                out.flush()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for i, env in enumerate(worker_envs(workers)):
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 bufsize=1, start_new_session=True)
            procs.append(p)
            t = threading.Thread(target=forward, args=(i, p.stdout), daemon=True)
            t.start()
            threads.append(t)
        with lock:
            out.write(f"kseg train --workers {workers}: worker pids "
                      f"{', '.join(f'{i}={p.pid}' for i, p in enumerate(procs))}\n")
            out.flush()
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, rc) for i, rc in enumerate(codes) if rc not in (None, 0)]
            if failed:
                i, rc = failed[0]
                _stop(procs, grace)
                for t in threads:
                    t.join(timeout=2)
                why = last_line.get(i, "")
                raise KsegError(
                    f"worker {i} of {workers} failed ({_describe_exit(rc)}"
                    f"{': ' + why[:200] if why else ''}); stopped the other workers"
                )
            if all(rc == 0 for rc in codes):
                break
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=5)
        return 0
    except KeyboardInterrupt:
        _stop(procs, grace)
        raise
    finally:
        _stop(procs, grace)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop(procs, grace: float) -> None:
    """SIGINT each running worker's process group, then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + (grace if sig != signal.SIGKILL else 5.0)
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)
