"""TFLite invoke latency of Mask R-CNN variants at 320×320 (docs/mask_rcnn.md, issue 13).

    .venv/bin/python benchmarks/mask_rcnn_latency.py --one-thread --also base:float16 chosen:float16   # docs' grid
    .venv/bin/python benchmarks/mask_rcnn_latency.py --only base fpn96 --quantization int8 float16
    .venv/bin/python benchmarks/mask_rcnn_latency.py --list

Latency does not depend on training: every variant is built with random weights (the encoder
without its ImageNet weights), exported with ``kseg.export_instances.export_tflite`` and timed with
``Interpreter.invoke`` on a letterboxed COCO val image. The shipped
``exports/person-instances.tflite`` is timed in the same rounds as a reference, so that the ratio
to it holds when other jobs load the machine. Rounds are interleaved (every file once per round,
``--invokes`` invokes each, the round's median kept); the table gives the median over rounds and
that median divided by the reference's, and the same for the best round (the least disturbed
one). With ``--one-thread`` each file is also run on one thread in the same rounds and its
process CPU time per invoke reported: the work of one invoke, which other jobs disturb far less
than wall time.

Converted files are cached under ``~/.cache/kseg/mask_rcnn_latency/``, keyed by variant,
quantization and the source of ``kseg/models/mask_rcnn`` and ``kseg/export_instances.py``.
``int8`` is ``export_tflite``'s int8: post-training int8 of the encoder, FPN, RPN head and both
heads with a uint8 input (calibrated on 4 COCO val images: only ranges, accuracy is not measured
here), the box path, NMS and RoIAlign sampling in float32; ``--float-ops`` lists the float ops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = Path.home() / ".cache" / "kseg" / "mask_rcnn_latency"
REFERENCE = ROOT / "exports" / "person-instances.tflite"

# the shipped model's architecture (configs/mask_rcnn_person_lite0.yaml)
SHIPPED = dict(num_classes=2, input_shape=(320, 320, 3), encoder="efficientnet_lite0", fpn_channels=128,
               anchor_sizes=(16, 32, 64, 128, 256), anchor_ratios=(0.5, 1.0, 2.0), rpn_pre_nms_test=1000,
               rpn_post_nms_test=300, box_head_dim=512, mask_head_channels=128, mask_head_convs=4,
               max_detections=50)
# the light starting point the grid varies one option at a time
BASE = dict(SHIPPED, fpn_channels=64, anchor_ratios=(1.0, 2.0, 3.0), rpn_pre_nms_test=500, rpn_post_nms_test=100,
            box_head_dim=256, mask_head_channels=64, mask_head_convs=2, max_detections=20)

VARIANTS = {
    "shipped_arch": SHIPPED,
    "base": BASE,
    "fpn96": dict(BASE, fpn_channels=96),
    "fpn128": dict(BASE, fpn_channels=128),
    "prop300": dict(BASE, rpn_pre_nms_test=1000, rpn_post_nms_test=300),
    "prop1000": dict(BASE, rpn_pre_nms_test=2000, rpn_post_nms_test=1000),
    "prop50": dict(BASE, rpn_pre_nms_test=300, rpn_post_nms_test=50),
    "mask4conv": dict(BASE, mask_head_convs=4),
    "mask128": dict(BASE, mask_head_channels=128),
    "box512": dict(BASE, box_head_dim=512),
    "det50": dict(BASE, max_detections=50),
    "det10": dict(BASE, max_detections=10),
    "sampling1": dict(BASE, roi_sampling_ratio=1),
    "ratios4": dict(BASE, anchor_ratios=(0.5, 1.0, 2.0, 3.0)),
    "fpn64_prop300_mask4": dict(BASE, rpn_pre_nms_test=1000, rpn_post_nms_test=300, mask_head_convs=4),
    "fpn96_prop300_mask4": dict(BASE, fpn_channels=96, rpn_pre_nms_test=1000, rpn_post_nms_test=300, mask_head_convs=4),
    "fpn128_prop300_mask4": dict(BASE, fpn_channels=128, rpn_pre_nms_test=1000, rpn_post_nms_test=300,
                                 mask_head_convs=4),
    # configs/mask_rcnn_person_composite.yaml (test-time proposals and detections are export-time choices)
    "chosen": dict(BASE, mask_head_convs=4, roi_sampling_ratio=1),
    "chosen_prop300": dict(BASE, mask_head_convs=4, roi_sampling_ratio=1, rpn_pre_nms_test=1000, rpn_post_nms_test=300),
    "chosen_fpn96": dict(BASE, fpn_channels=96, mask_head_convs=4, roi_sampling_ratio=1),
}
# the grid of docs/mask_rcnn.md (one option at a time from BASE, then the chosen config); ratios4 and the
# *_prop300_mask4 combinations are in VARIANTS for --only (their costs add up from the single changes)
DEFAULT_GRID = ["shipped_arch", "base", "fpn96", "fpn128", "prop50", "prop300", "prop1000", "mask4conv", "mask128",
                "box512", "det10", "det50", "sampling1", "chosen", "chosen_prop300", "chosen_fpn96"]


def machine() -> str:
    from kseg.benchmark import cpu_name

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu_name()}, {cores} cores available, load average {load[0]:.2f} at start, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def val_images(n=4, size=320):
    """``n`` letterboxed COCO val images with persons (calibration and the timed input)."""
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image
    from kseg.evaluate_instances import open_coco_images

    coco = open_coco_images("coco/coco-mini", "val", ("person",))
    return [letterbox(read_image(p), size)[0] for p in coco.image_paths[:n]]


def _key(cfg, quantization):
    import kseg.export_instances as ei
    from kseg.models.mask_rcnn import model as mr

    src = "".join((Path(mr.__file__).parent / f).read_text() for f in sorted(os.listdir(Path(mr.__file__).parent))
                  if f.endswith(".py")) + Path(ei.__file__).read_text()
    blob = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(cfg.items())}) + quantization
    return hashlib.sha1((blob + src).encode()).hexdigest()[:12]


def convert(name, cfg, quantization, calib):
    """The cached ``.tflite`` of one variant (built with random weights, seed 0)."""
    import keras

    from kseg.export_instances import export_tflite
    from kseg.models.mask_rcnn import MaskRCNN

    path = CACHE / f"{name}_{quantization}_{_key(cfg, quantization)}.tflite"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = MaskRCNN(**cfg, pretrained=False)
    t0 = time.time()
    export_tflite(model, path, quantization=quantization, representative_images=calib)
    print(f"  converted {name} {quantization} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return path


class Timer:
    """One interpreter; ``round(n)`` → (median wall ms, median CPU ms) of ``n`` invokes.

    CPU time is the process's (every interpreter thread, spin-waits included): with 1 thread it
    is the work of one invoke, which other jobs on the machine disturb far less than wall time.
    """

    def __init__(self, path, image, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.it.allocate_tensors()
        d = self.it.get_input_details()[0]
        x = np.asarray(image)[None]
        if d["dtype"] in (np.uint8, np.int8):
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / (scale or 1.0) + zero), info.min, info.max)
        self.it.set_tensor(d["index"], x.astype(d["dtype"]))
        for _ in range(3):
            self.it.invoke()

    def round(self, n):
        wall, cpu = [], []
        for _ in range(n):
            c, t = time.process_time(), time.perf_counter()
            self.it.invoke()
            wall.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - c) * 1e3)
        return float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, help=f"variants (default: all): {', '.join(VARIANTS)}")
    p.add_argument("--quantization", nargs="+", default=["int8"], help="int8, float16, dynamic, float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--invokes", type=int, default=5, help="invokes per file per round")
    p.add_argument("--float-ops", action="store_true", help="list the ops left in float in integer files")
    p.add_argument("--one-thread", action="store_true",
                   help="also time each file on 1 thread in the same rounds and report its CPU ms (robust to load)")
    p.add_argument("--also", nargs="*", default=[], metavar="VARIANT:QUANT",
                   help="more files in the same rounds, e.g. base:float16 shipped_arch:float16")
    p.add_argument("--json", default=None, help="write the rows here too")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    args = p.parse_args(argv)
    names = args.only or DEFAULT_GRID
    if args.list:
        for n in VARIANTS:
            print(n, {k: v for k, v in VARIANTS[n].items() if SHIPPED.get(k) != v or n == "shipped_arch"})
        return 0
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_mediapipe import graph_stats  # multiply-adds from the .tflite graph

    from kseg.export_instances import float_ops

    calib = val_images(4)
    files = {}
    for n in names:
        for q in args.quantization:
            files[(n, q)] = convert(n, VARIANTS[n], q, calib)
    for item in args.also:
        n, _, q = item.partition(":")
        if n not in VARIANTS or q not in ("int8", "float16", "dynamic", "float32"):
            p.error(f"--also {item!r}: give VARIANT:QUANT, e.g. base:float16")
        files[(n, q)] = convert(n, VARIANTS[n], q, calib)
    print(f"# {machine()}; {args.threads} threads; median over {args.rounds} interleaved rounds of "
          f"{args.invokes} invokes; input: one letterboxed COCO val image", flush=True)
    keys = ([("reference", "float16")] if REFERENCE.is_file() else []) + list(files)
    path_of = {k: REFERENCE if k[0] == "reference" else files[k] for k in keys}
    timers = {k: Timer(path_of[k], calib[0], args.threads) for k in keys}
    ones = {k: Timer(path_of[k], calib[0], 1) for k in keys} if args.one_thread else {}
    rounds = {k: [] for k in keys}
    cpu1 = {k: [] for k in keys}
    for _ in range(args.rounds):
        for k in keys:
            rounds[k].append(timers[k].round(args.invokes)[0])
            if ones:
                cpu1[k].append(ones[k].round(max(1, args.invokes // 2))[1])
    ref_key = ("reference", "float16")
    ref = float(np.median(rounds[ref_key])) if ref_key in rounds else None
    ref_min = min(rounds[ref_key]) if ref_key in rounds else None
    ref_cpu = float(np.median(cpu1[ref_key])) if ones and ref_key in cpu1 else None
    rows = []
    print(f"| variant | quantization | differs from shipped | MACs (G) | params (M) | size (MB) | {args.threads}-thread "
          "invoke ms (median) | best round | × shipped (median / best) |" + (" 1-thread CPU ms | × shipped |" if ones else ""))
    print("|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ones else ""))
    for k in keys:
        n, q = k
        r = rounds[k]
        path = path_of[k]
        st = graph_stats(path)
        med = float(np.median(r))
        diff = "exports/person-instances.tflite" if n == "reference" else ", ".join(
            f"{a}={v}" for a, v in VARIANTS[n].items() if SHIPPED.get(a) != v) or "-"
        row = {"variant": n, "quantization": q, "differs": diff, "macs": st["macs"], "params": st["params"],
               "size_mb": round(path.stat().st_size / 2**20, 2), "ms": med, "ms_rounds": r,
               "ratio": med / ref if ref else None, "ratio_best": min(r) / ref_min if ref_min else None}
        line = (f"| {n} | {q} | {diff} | {st['macs'] / 1e9:.2f} | {st['params'] / 1e6:.2f} | {row['size_mb']} | "
                f"{med:.1f} | {min(r):.1f} | " + (f"{row['ratio']:.3f} / {row['ratio_best']:.3f} |" if ref else "- |"))
        if ones:
            row["cpu_ms_1_thread"] = float(np.median(cpu1[k]))
            row["cpu_ratio"] = row["cpu_ms_1_thread"] / ref_cpu if ref_cpu else None
            line += f" {row['cpu_ms_1_thread']:.1f} | " + (f"{row['cpu_ratio']:.3f} |" if ref_cpu else "- |")
        if args.float_ops and q == "int8":
            row["float_ops"] = float_ops(path)
        rows.append(row)
        print(line, flush=True)
    for row in rows:
        if row.get("float_ops"):
            print(f"# {row['variant']} {row['quantization']}: float ops {', '.join(row['float_ops'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
