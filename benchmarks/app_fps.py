"""Frames/s of each app effect on the bundled clip, stage breakdown, temporal stability, memory.

Usage:
    python benchmarks/app_fps.py                              # shipped models, 600 frames per effect
    python benchmarks/app_fps.py --model /tmp/dev/portrait.tflite --frames 300
    python benchmarks/app_fps.py --long 10000                 # + memory over a 10,000-frame run
    python benchmarks/app_fps.py --keep largest --keep-rate 5 0 --effects --skip-stability --no-baseline

Sections:
    1. each effect, threaded pipeline and sequential loop: decode → segment → refine → effect
       (no output encoding: a NullSink), median of ``--repeats`` runs, median stage times, and
       the process's CPU time per frame (all threads), which bounds the rate on idle cores
       (2 cores: at most 2000 / CPU ms frames/s) when the machine is shared;
    2. a plain sequential baseline on the same machine at the same time: ``Segmenter.segment``
       (probabilities upsampled to 640×480) + 55×55 Gaussian background blur + float composite,
       the loop the issue's MediaPipe reference used;
    3. temporal stability over the clip: mean |mask_t - mask_{t-1}| (soft person mask, 0..1, in
       %), over all pixels and over still pixels only (where the frame itself changed by < 3
       grey levels, so true motion is left out), without and with smoothing;
    4. with ``--long N``: RSS at frame 200 and at the end of an N-frame looped run;
    5. with ``--keep RULE``: the portrait effect through the threaded pipeline without and with
       ``--keep RULE`` (the person instance model on its own thread; at each ``--keep-rate``),
       the same clip and frames, every setting once per round over ``--repeats`` rounds (the
       order rotates), median frames/s of each, the ratio to the run without (of the medians,
       and the median of the per-round ratios), CPU ms per frame, instance detections per second
       and the detector's median wall ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    from kseg.benchmark import cpu_name

    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu}, {cores} cores available, load average {load[0]:.2f} at start, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def run_effect(app, name, clip, frames, threaded):
    from apps.common.pipeline import Pipeline
    from apps.common.sinks import NullSink
    from apps.common.sources import VideoSource

    app.effect = app.get_effect(name)
    est = app.estimator()
    est.reset()
    pipe = Pipeline(VideoSource(clip, loop=True), [NullSink()], app.effect, est, hud=None,
                    threaded=threaded, max_frames=frames)
    t0 = os.times()
    stats = pipe.run()
    t1 = os.times()
    # CPU time of the whole process (all threads: decoder, interpreter, OpenCV) per frame
    stats.cpu_ms = ((t1.user - t0.user) + (t1.system - t0.system)) * 1e3 / max(stats.frames, 1)
    return stats


def run_keep(app, clip, frames):
    """One threaded portrait run of ``app`` (with or without a keeper); stats + detections made."""
    keeper = app.keeper
    if keeper is not None:
        keeper.reset()
        before = keeper.detections
    stats = run_effect(app, "portrait", clip, frames, threaded=True)
    if keeper is not None:
        stats.detections = keeper.detections - before
        stats.detect_ms = keeper.detect_ms
    return stats


def keep_section(args, clip, report):
    """Portrait frames/s without and with ``--keep`` (at each rate): interleaved rounds, medians, ratios."""
    from apps.webcam import App

    def make(keep, rate):
        return App(model=args.model, parsing_model=None, fast_model=None, threads=args.threads[0], effect="portrait",
                   effect_args={"strength": 0.6}, keep=keep, instance_model=args.instance_model, keep_rate=rate)

    apps = {"without --keep": make("all", None)}
    for rate in args.keep_rate:
        apps[f"with --keep {args.keep} --detect-rate {rate:g}"] = make(args.keep, rate)
    runs = {k: [] for k in apps}
    try:
        for r in range(args.repeats):  # each round runs every setting once, in an order that rotates
            names = list(apps)
            for k in names[r % len(names):] + names[: r % len(names)]:
                runs[k].append(run_keep(apps[k], clip, args.frames))
    finally:
        for a in apps.values():
            a.close()
    base = runs["without --keep"]
    report["keep"] = {"rule": args.keep, "settings": {}}
    print(f"\n| portrait, threaded, {args.frames} frames | frames/s (median of {args.repeats}) | each round | "
          "ratio (of medians; median of rounds) | CPU ms/frame | instance detections/s |")
    print("|---|---:|---|---|---:|---:|")
    for k, v in runs.items():
        fps = float(np.median([s.fps for s in v]))
        cpu = float(np.median([s.cpu_ms for s in v]))
        each = ", ".join(f"{s.fps:.1f}" for s in v)
        if v is base:
            print(f"| {k} | {fps:.1f} | {each} | — | {cpu:.2f} | — |")
            report["keep"]["settings"][k] = {"fps": fps, "all_fps": [s.fps for s in v], "cpu_ms_per_frame": cpu}
            continue
        ratio = fps / float(np.median([s.fps for s in base]))
        paired = float(np.median([a.fps / b.fps for a, b in zip(v, base)]))
        det_rate = float(np.median([s.detections / s.wall_s for s in v]))
        det_ms = float(np.median([s.detect_ms for s in v]))
        print(f"| {k} | {fps:.1f} | {each} | {ratio:.3f}; {paired:.3f} | {cpu:.2f} | "
              f"{det_rate:.1f} (detect {det_ms:.0f} ms) |", flush=True)
        report["keep"]["settings"][k] = {"fps": fps, "all_fps": [s.fps for s in v], "ratio": ratio,
                                         "ratio_paired": paired, "cpu_ms_per_frame": cpu,
                                         "detections_per_s": det_rate, "detect_ms": det_ms}


def baseline(seg, clip, frames):
    """Decode, ``Segmenter.segment``, 55×55 Gaussian blur, float composite: one thread, no tricks."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    n = 0
    t0 = time.perf_counter()
    while n < frames:
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(clip))
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        conf = seg.segment(rgb).confidence[..., seg.person_index][..., None]
        blurred = cv2.GaussianBlur(rgb, (55, 55), 0)
        out = (conf * rgb + (1 - conf) * blurred).astype(np.uint8)
        n += 1
    cap.release()
    del out
    return n / (time.perf_counter() - t0)


def stability(seg_factory, clip, smoothing, adaptive):
    import cv2

    from apps.common.refine import MaskEstimator
    from apps.common.sources import VideoSource

    est = MaskEstimator(seg_factory(), smoothing=smoothing, adaptive=adaptive)
    prev_m = prev_g = None
    all_d, still_d = [], []
    with VideoSource(clip) as src:
        for frame in src:
            m = est(frame)[..., 0].copy()
            g = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (5, 5), 0).astype(np.int16)
            if prev_m is not None:
                d = np.abs(m - prev_m)
                still = np.abs(g - prev_g) < 3
                all_d.append(d.mean())
                still_d.append(d[still].mean() if still.any() else 0.0)
            prev_m, prev_g = m, g
    return 100 * float(np.mean(all_d)), 100 * float(np.mean(still_d))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="exports/portrait.tflite")
    p.add_argument("--parsing-model", default="exports/parsing.tflite")
    p.add_argument("--clip", default="assets/book.mkv")
    p.add_argument("--frames", type=int, default=600, help="frames per effect run (the clip loops)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="interpreter threads (several: one table row each)")
    p.add_argument("--skip-stability", action="store_true")
    p.add_argument("--effects", nargs="*", default=["portrait", "swap", "tryon", "mask"], help="effects to time (none: skip)")
    p.add_argument("--long", type=int, default=0, help="frames of the memory run (0: skip)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--keep", choices=("largest", "nearest", "center"),
                   help="also time portrait without and with --keep RULE (interleaved runs, ratio)")
    p.add_argument("--keep-rate", type=float, nargs="+", default=[5.0],
                   help="--keep: the app's --detect-rate(s), instance detections per second (default 5, the "
                   "app's; 0: no cap; several: one row each)")
    p.add_argument("--instance-model", default="exports/person-instances.tflite", help="--keep: the instance model")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from apps.webcam import App, resolve
    from kseg.runtime import Segmenter

    clip = resolve(args.clip)
    parsing = resolve(args.parsing_model)

    def make_app(threads):
        return App(model=args.model, parsing_model=args.parsing_model, fast_model=None, threads=threads,
                   effect="portrait", effect_args={"strength": 0.6, "background": "green", "hair_color": "#b03a2e"})

    thread_counts = list(args.threads)
    model = resolve(args.model)
    report = {"machine": machine(), "model": str(model), "parsing_model": str(parsing) if parsing.exists() else None,
              "clip": str(clip), "frames": args.frames, "threads": args.threads, "effects": {}}
    print(f"# app_fps: {report['machine']}")
    print(f"model {model.name}, parsing {parsing.name if parsing.exists() else '(none)'}, clip {clip.name} "
          f"640×480, {args.frames} frames per run, median of {args.repeats}\n")

    if args.effects:
        print("| effect | mode | interpreter threads | frames/s | CPU ms/frame | capture | infer | refine | effect | output (ms, median) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in (thread_counts if args.effects else []):
        app = make_app(threads)
        for name in args.effects:
            if name == "tryon" and not parsing.exists():
                print(f"| tryon | — | {threads} | skipped: {parsing} not found | | | | | |")
                continue
            for threaded in (True, False):
                runs = [run_effect(app, name, clip, args.frames, threaded) for _ in range(args.repeats)]
                fps = float(np.median([r.fps for r in runs]))
                mid = runs[int(np.argsort([r.fps for r in runs])[len(runs) // 2])]
                ms = mid.stage_ms
                mode = "threaded" if threaded else "sequential"
                cpu = float(np.median([r.cpu_ms for r in runs]))
                report["effects"].setdefault(name, {})[f"{mode}/{threads}"] = {
                    "fps": fps, "all_fps": [r.fps for r in runs], "cpu_ms_per_frame": cpu, "stage_ms": ms}
                cells = " | ".join(f"{ms.get(k, 0):.2f}" for k in ("capture", "infer", "refine", "effect", "output"))
                print(f"| {name} | {mode} | {threads} | {fps:.1f} | {cpu:.2f} | {cells} |", flush=True)
        app.close()
    app = make_app(thread_counts[0])

    if not args.no_baseline:
        seg = Segmenter(model, num_threads=thread_counts[0])
        fps = float(np.median([baseline(seg, clip, min(args.frames, 300)) for _ in range(args.repeats)]))
        report["baseline_fps"] = fps
        print(f"\nbaseline (segment() at 640×480 + 55×55 Gaussian blur + float composite, one thread): {fps:.1f} frames/s")

    if args.skip_stability:
        args_stab = []
    else:
        args_stab = [("off", 0.0, False), ("EMA 0.6", 0.6, False), ("adaptive EMA 0.6 (default)", 0.6, True)]
        print("\n| temporal smoothing | mean abs Δmask, all pixels (%) | mean abs Δmask, still pixels (%) |")
        print("|---|---:|---:|")
    report["stability"] = {}
    for label, s, adaptive in args_stab:
        a, b = stability(lambda: Segmenter(model, num_threads=thread_counts[0]), clip, s, adaptive)
        report["stability"][label] = {"all": a, "still": b}
        print(f"| {label} | {a:.3f} | {b:.3f} |", flush=True)

    if args.long:
        from apps.common.pipeline import Pipeline
        from apps.common.sinks import NullSink
        from apps.common.sources import VideoSource

        samples = {}

        def sample(i, frame, out):
            if i == 200 or (i + 1) % 1000 == 0:
                samples[i + 1 if i != 200 else 200] = rss_mb()

        app.effect = app.get_effect("portrait")
        pipe = Pipeline(VideoSource(clip, loop=True), [NullSink()], app.effect, app.estimator(), hud=None,
                        max_frames=args.long, on_frame=sample)
        st = pipe.run()
        report["memory"] = {"frames": st.frames, "fps": st.fps, "rss_mb": samples}
        first, last = samples.get(200), samples[max(samples)]
        print(f"\nmemory: {st.frames} frames of portrait (threaded) at {st.fps:.1f} frames/s: RSS {first:.1f} MiB at "
              f"frame 200, {last:.1f} MiB at frame {max(samples)} ({last - first:+.1f} MiB); samples "
              + ", ".join(f"{k}: {v:.1f}" for k, v in sorted(samples.items())))
    app.close()
    if args.keep:
        keep_section(args, clip, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
