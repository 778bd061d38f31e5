"""Training throughput of each architecture: images/s of `model.fit` on this machine, on one or two
replicas, with the TensorFlow and JAX backends.

Feeds random in-memory batches (so the input pipeline is not what is measured) through
`model.fit` with `steps_per_epoch=--steps`; the first epoch (tracing, first allocations) is a
warm-up, the median of the next `--runs` epochs is reported. Each mode runs in its own processes
(the backend and the device split are fixed at start-up):

    tf               TensorFlow, one replica (the default; also prints parameters and GFLOPs)
    tf_bf16          TensorFlow, one replica, the mixed_bfloat16 policy
    tf_mirrored2     TensorFlow, MirroredStrategy over 2 logical CPU devices (GPUs if present)
    tf_workers2      TensorFlow, MultiWorkerMirroredStrategy, 2 local worker processes
    jax              JAX, one device
    jax_dp2          JAX, keras.distribution.DataParallel over 2 host devices

`--batch` is the batch of one replica: two replicas train on twice as many images per step
(kseg's rule, docs/distributed.md). "scaling" is images/s over the same backend's one-replica
figure.

    .venv/bin/python benchmarks/train_throughput.py --size 256 256 --batch 4 --steps 5 --runs 3
    .venv/bin/python benchmarks/train_throughput.py --models unet_lite deeplab_v3_plus_mnv2 \\
        --modes tf tf_mirrored2 tf_workers2 jax jax_dp2 --size 128 128 --batch 2
    .venv/bin/python benchmarks/train_throughput.py --models portrait_small unet_lite --modes tf tf_bf16 \\
        --size 192 192 --batch 16 --steps 4 --runs 2

PSPNet needs sides that are multiples of 48 (output stride 8 × the pooling bins' lcm 6): its
size is rounded up (256 → 288) and printed in the table. A model that cannot be built is
reported on its line and the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> (registry name, kwargs)
CONFIGS = {
    "fcn8s_vgg16": ("fcn8s", {"encoder": "vgg16"}),
    "fcn32s_vgg16": ("fcn32s", {"encoder": "vgg16"}),
    "unet_paper": ("unet", {}),
    "unet_lite": ("unet", {"encoder": "efficientnet_lite0"}),
    "segnet": ("segnet", {}),
    "pspnet_resnet50": ("pspnet", {"encoder": "resnet50"}),
    "pspnet_lite": ("pspnet", {"encoder": "efficientnet_lite0"}),
    "deeplab_v3_plus": ("deeplab_v3_plus", {"encoder": "efficientnet_lite0"}),
    "deeplab_v3_plus_mnv2": ("deeplab_v3_plus", {"encoder": "mobilenet_v2"}),
    "portrait_small": ("unet", {"encoder": "efficientnet_lite0", "encoder_stages": 5, "decoder_filters": [32, 24, 16],
                                "decoder_block": "separable", "global_context": True}),
}

# input sides must be multiples of this (default 32: five stride-2 stages)
MULTIPLE = {"pspnet_resnet50": 48, "pspnet_lite": 48, "unet_paper": 16}

# mode -> (KERAS_BACKEND, kseg train.strategy, replicas, how)
MODES = {
    "tf": ("tensorflow", None, 1, "1 process"),
    "tf_bf16": ("tensorflow", None, 1, "1 process, mixed_bfloat16"),
    "tf_mirrored2": ("tensorflow", "mirrored", 2, "MirroredStrategy, 2 logical devices"),
    "tf_workers2": ("tensorflow", "multi_worker", 2, "MultiWorkerMirrored, 2 local workers"),
    "jax": ("jax", None, 1, "1 device"),
    "jax_dp2": ("jax", "mirrored", 2, "DataParallel, 2 host devices"),
}


def model_size(name, size):
    m = MULTIPLE.get(name, 32)
    return tuple(m * math.ceil(s / m) for s in size)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gflops(model, size) -> float:
    """Forward FLOPs per image from TensorFlow's profiler (multiply-add = 2 FLOPs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    tf.get_logger().setLevel(logging.ERROR)  # the profiler's own deprecation warnings
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, *size, 3], tf.float32))
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, options=opts)
    return info.total_float_ops / 1e9


# --------------------------------------------------------------------------------------
# one mode, in this process (or in each worker process)


def measure(mode: str, models, size, batch: int, steps: int, runs: int, classes: int) -> None:
    """Print one ``RESULT {json}`` line per model (only the chief, for several workers)."""
    _, strategy_name, _, _ = MODES[mode]
    from kseg import distribute

    if strategy_name == "mirrored":
        distribute.configure_cpu_devices(2)
    strategy = distribute.make_strategy(strategy_name)  # first: the multi-worker collectives
    worker = distribute.this_worker(strategy)

    import keras
    import numpy as np
    import tensorflow as tf

    from kseg.errors import KsegError
    from kseg.losses import SparseCategoricalCrossEntropy
    from kseg.models import build_model

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.t0)

    if mode == "tf_bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    replicas = strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    for name in models:
        reg, kwargs = CONFIGS[name]
        hw = model_size(name, size)
        global_batch = batch * replicas
        x = rng.uniform(0, 255, (global_batch, *hw, 3)).astype("float32")
        y = rng.integers(0, classes, (global_batch, *hw)).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch, drop_remainder=True)
        data = distribute.shard_by_data(data, strategy)
        result = {"model": name, "mode": mode, "size": list(hw), "replicas": replicas, "global_batch": global_batch}
        try:
            with strategy.scope():
                model = build_model(reg, num_classes=classes, input_shape=(*hw, 3), **kwargs)
                model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=SparseCategoricalCrossEntropy())
        except KsegError as e:
            result["error"] = str(e)
        else:
            distribute.patch_keras_for_multi_worker(model, strategy)
            times = EpochTimes()
            model.fit(data, epochs=runs + 1, steps_per_epoch=steps, callbacks=[times], verbose=0)
            result["images_per_s"] = global_batch * steps / statistics.median(times.seconds[1:])
            result["params_m"] = model.count_params() / 1e6
            if mode == "tf":
                result["gflops"] = gflops(model, hw)
        if worker.chief:
            print("RESULT " + json.dumps(result), flush=True)
    distribute.close_strategy(strategy)


# --------------------------------------------------------------------------------------
# the table


def run_mode(mode: str, args) -> list[dict]:
    """Run ``mode`` in fresh processes; the chief's results."""
    backend, _, _, _ = MODES[mode]
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", mode, "--models", *args.models,
           "--size", *map(str, args.size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--runs", str(args.runs), "--classes", str(args.classes)]
    base = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    base.pop("TF_CONFIG", None)
    if mode == "tf_workers2":
        from kseg.distribute import worker_envs

        envs = worker_envs(2, environ=base)
    else:
        envs = [base]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
    outs = [p.communicate() for p in procs]
    results = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode:
            tail = (err.strip().splitlines() or ["no output"])[-1]
            print(f"# {mode}: a process failed ({p.returncode}): {tail}", flush=True)
        results += [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), metavar="MODEL",
                    help=f"any of {', '.join(CONFIGS)} (default all)")
    ap.add_argument("--modes", nargs="*", default=["tf"], choices=list(MODES), metavar="MODE",
                    help=f"any of {', '.join(MODES)} (default tf)")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256))
    ap.add_argument("--batch", type=int, default=4, help="images per replica and step")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed epoch")
    ap.add_argument("--runs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--measure", choices=list(MODES), help=argparse.SUPPRESS)  # inside a mode's process
    args = ap.parse_args(argv)
    if args.measure:
        measure(args.measure, args.models, tuple(args.size), args.batch, args.steps, args.runs, args.classes)
        return

    load = os.getloadavg()
    print(f"# {cpu_name()}, {os.cpu_count()} cores, load average {load[0]:.1f} at start; batch {args.batch} "
          f"per replica, {args.size[0]}x{args.size[1]}, median of {args.runs} epochs of {args.steps} steps "
          "after a warm-up epoch", flush=True)
    rows = {}
    for mode in args.modes:
        t0 = time.perf_counter()
        for r in run_mode(mode, args):
            rows[(r["model"], mode)] = r
            print(f"# {mode} {r['model']}: {r.get('images_per_s', r.get('error'))}", flush=True)
        print(f"# {mode} took {time.perf_counter() - t0:.0f} s", flush=True)
    one = {"tensorflow": "tf", "jax": "jax"}
    print("| model | input | params (M) | GFLOPs | backend | replicas | how | images/s | scaling |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        flops = next((r.get("gflops") for (m, _), r in rows.items() if m == name and r.get("gflops")), None)
        for mode in args.modes:
            r = rows.get((name, mode))
            backend, _, replicas, how = MODES[mode]
            if r is None or "error" in r:
                print(f"| {name} | | | | {backend} | {replicas} | {how} | {r['error'] if r else 'failed'} | |")
                continue
            base = rows.get((name, one[backend]))
            scaling = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base and "images_per_s" in base else ""
            print(f"| {name} | {r['size'][0]}x{r['size'][1]} | {r['params_m']:.2f} | "
                  f"{'' if flops is None else f'{flops:.1f}'} | {backend} | {replicas} | {how} | "
                  f"{r['images_per_s']:.2f} | {scaling} |", flush=True)
    load = os.getloadavg()
    print(f"# load average {load[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
