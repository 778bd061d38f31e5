"""Training throughput of each architecture: images/s of `model.fit` steps on this CPU.

Feeds random in-memory batches (so the input pipeline is not what is measured), runs a warm-up
of a few steps, then times several runs of N steps and prints the median, with parameters and
forward GFLOPs per image.

    .venv/bin/python benchmarks/train_throughput.py --size 256 256 --batch 4 --steps 5 --runs 3
    .venv/bin/python benchmarks/train_throughput.py --models unet_lite deeplab_v3_plus

PSPNet needs sides that are multiples of 48 (output stride 8 × the pooling bins' lcm 6): its
size is rounded up (256 → 288) and printed in the table. A model that cannot be built is
reported on its line and the others still run.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
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
}

# input sides must be multiples of this (default 32: five stride-2 stages)
MULTIPLE = {"pspnet_resnet50": 48, "pspnet_lite": 48, "unet_paper": 16}


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), metavar="MODEL",
                    help=f"any of {', '.join(CONFIGS)} (default all)")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--classes", type=int, default=11)
    args = ap.parse_args(argv)

    import keras
    import numpy as np

    from kseg.errors import KsegError
    from kseg.losses import SparseCategoricalCrossEntropy
    from kseg.models import build_model

    rng = np.random.default_rng(0)
    print(f"# {cpu_name()}, {os.cpu_count()} cores, TF backend, batch {args.batch}, "
          f"{args.size[0]}x{args.size[1]}, median of {args.runs} runs of {args.steps} steps")
    print(f"{'model':<24} {'size':>9} {'params (M)':>10} {'GFLOPs':>8} {'train img/s':>12}")
    for name in args.models:
        reg, kwargs = CONFIGS[name]
        size = model_size(name, args.size)
        x = rng.uniform(0, 255, (args.batch, *size, 3)).astype("float32")
        y = rng.integers(0, args.classes, (args.batch, *size)).astype("int32")
        keras.backend.clear_session()
        try:
            model = build_model(reg, num_classes=args.classes, input_shape=(*size, 3), **kwargs)
        except KsegError as e:
            print(f"{name:<24} not built: {e}", flush=True)
            continue
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=SparseCategoricalCrossEntropy())
        for _ in range(2):  # warm-up: tracing and first allocations
            model.train_on_batch(x, y)
        rates = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            rates.append(args.steps * args.batch / (time.perf_counter() - t0))
        flops = gflops(model, size)
        print(f"{name:<24} {f'{size[0]}x{size[1]}':>9} {model.count_params() / 1e6:>10.2f} {flops:>8.1f} "
              f"{statistics.median(rates):>12.2f}",
              flush=True)


if __name__ == "__main__":
    main()
