"""Training data pipeline throughput (images/s) on the people data.

people-parsing (person vs background) + people-masks, read by kseg.data.readers, 256×256,
full augmentation (scale/crop/flip/rotation, portrait crops with probability 0.5, colour
jitter, blur, noise), batch 16. Prints the median of several timed runs after a warm-up,
without and with the in-memory cache of decoded, downscaled samples.

Usage:
    .venv/bin/python benchmarks/data_pipeline.py [--batches 40] [--runs 3] [--portrait 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def machine() -> str:
    from kseg.benchmark import cpu_name

    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores available"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40, help="batches per timed run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--portrait", type=float, default=0.5)
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from kseg.data.pipeline import Augment, make_dataset
    from kseg.data.readers import concat, open_dataset
    from kseg.paths import shared_data_dir

    root = shared_data_dir()
    parsing = open_dataset(root / "people-parsing", "ccp", groups="person")
    masks = open_dataset(root / "people-masks", "masks", class_names=("background", "person"), binary=True)
    ds = concat([parsing, masks], name="people")
    augment = Augment(portrait=args.portrait)
    size = (args.size, args.size)
    print(f"machine: {machine()}; TensorFlow {tf.__version__}")
    print(f"data: {len(ds)} images ({len(parsing)} people-parsing ~550x825, {len(masks)} people-masks); "
          f"{args.size}x{args.size}, batch {args.batch_size}, Augment(portrait={args.portrait}) "
          f"+ photometric; {args.runs} runs x {args.batches} batches after a warm-up")
    print(f"{'cache':<8} {'images/s (median)':>18} {'runs':>28}")
    for cache in (False, "memory"):
        data = make_dataset(ds, size=size, batch_size=args.batch_size, augment=augment, cache=cache, repeat=True)
        it = iter(data)
        # warm-up: with the cache, one full pass fills it
        warm = (len(ds) // args.batch_size + 2) if cache else 5
        for _ in range(warm):
            next(it)
        rates = []
        for _ in range(args.runs):
            t = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            rates.append(args.batches * args.batch_size / (time.perf_counter() - t))
        print(f"{str(cache):<8} {statistics.median(rates):>18.0f} {', '.join(f'{r:.0f}' for r in rates):>28}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
