"""kseg people models side by side with MediaPipe's selfie segmenter, in one run on one machine.

For every model: multiply-adds and parameters (counted from the ``.tflite`` graph), invoke
latency with 1 and with 2 threads (median over several interleaved rounds, so that a burst
of load hits every model alike), and person IoU on held-out images with masks: the image is
squashed to the model's input, the output upsampled to the image and thresholded at 0.5, IoU
per image, averaged (the protocol of ``../shared/data/README.md``; an image whose ground truth
and prediction are both empty counts 1).

Validation sets are the 10% held out (seed 0) of each shared set, which no kseg people config
trains on: ``people-masks`` (close-ups), ``people-parsing`` (full body), ``portraits``
(webcam-like), ``faces`` (CelebAMask-HQ, person = any label) and COCO val persons. And
``person-free``: held-out images with nobody in them (COCO val without a person annotation,
CamVid val/test frames without pedestrians or cyclists, the pets validation split; the
composite format's backgrounds, ``benchmarks/eval_people.py --task person-free``): the share of
their pixels a model calls person and the share of images where that exceeds 1% (lower is
better; what shows as sharp patches in a blurred background).

    .venv/bin/python benchmarks/vs_mediapipe.py exports/portrait.tflite exports/portrait-fast.tflite
    .venv/bin/python benchmarks/vs_mediapipe.py runs/x/model.tflite --sets portraits --rounds 5 --json out.json
    .venv/bin/python benchmarks/vs_mediapipe.py --replot out.json --chart docs/img/portrait_vs_mediapipe.png

``--chart PNG`` draws the latency/IoU chart of the run (one panel per set: median invoke time
with 1 thread against person IoU, MediaPipe's models in black and grey; 1 thread because on a shared VM the
second thread's share varies from run to run, the table has both);
``--replot JSON`` draws it again from a run's ``--json`` without measuring.
``--paired MODEL`` (a model's name or file, e.g. the shipped one) adds, for every other model, the
mean of the per-image IoU differences against it on each set with a 95% bootstrap interval (the
same images, resampled 5,000 times, seed 0) and how many images got better or worse by more than
0.005: whether a new model's gain is more than which images happen to be held out. The run's
``--json`` keeps every image's IoU (``iou_per_image``), so ``--replot JSON --paired MODEL`` prints
it again later.
``--write-cards`` records the run's figures in the model card beside each kseg ``.tflite``
(``NAME.json``): a ``vs_mediapipe`` field for the square MediaPipe model and
``vs_mediapipe_landscape`` for the landscape one (person IoU per set, person-free share, latency
with 1 and 2 threads, both models' and MediaPipe's, the machine, date and command); with
``--replot JSON`` it takes them from a saved run instead.

MediaPipe's models run first, as references: by default both of ``../shared/peers``, the square
``selfie_segmentation.tflite`` (256×256) and ``selfie_segmentation_landscape.tflite`` (144×256, the
one MediaPipe uses for webcam frames), float32 RGB in [0, 1], one sigmoid person probability;
``--mediapipe PATH [PATH ...]`` chooses others. Every model's time is also given as a ratio to
each reference's (``× MP`` to the first, ``× MPL`` to the landscape one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETS = ("people-masks", "people-parsing", "portraits", "faces", "coco-val", "person-free")
FREE = "person-free"


# --------------------------------------------------------------------------------------
# Graph statistics


def graph_stats(path) -> dict:
    """Multiply-adds and parameters of a ``.tflite`` file, from its operators' tensor shapes.

    Counts CONV_2D (out H·W·C × kh·kw·C_in), DEPTHWISE_CONV_2D (out H·W·C × kh·kw),
    TRANSPOSE_CONV (in H·W × weight size) and FULLY_CONNECTED; parameters are the elements of
    every constant tensor that is an operator's weight or bias (once: the converter stores
    identical constants, e.g. untrained zero biases, as one tensor). ``macs_by_stride``: the same
    count by the output stride of each operator (input height / output height).
    """
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in it.get_tensor_details()}
    produced = set()
    ops = it._get_ops_details()
    # float16 weights reach their operator through a DEQUANTIZE of a constant (MediaPipe's)
    dequantized = {int(op["outputs"][0]): int(op["inputs"][0]) for op in ops if op["op_name"] == "DEQUANTIZE"}
    for op in ops:
        produced.update(int(i) for i in op["outputs"])
    inputs = {d["index"] for d in it.get_input_details()}
    height = int(it.get_input_details()[0]["shape"][1])
    macs, params, by_stride = 0, set(), {}
    for op in ops:
        name, ins, outs = op["op_name"], [int(i) for i in op["inputs"]], [int(i) for i in op["outputs"]]
        out = shapes[outs[0]]
        n = 0
        if name == "CONV_2D":
            w = shapes[ins[1]]
            n = int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif name == "DEPTHWISE_CONV_2D":
            w = shapes[ins[1]]
            n = int(np.prod(out[1:])) * w[1] * w[2]
        elif name == "TRANSPOSE_CONV":
            w, x = shapes[ins[1]], shapes[ins[2]]
            n = int(np.prod(x[1:3])) * int(np.prod(w))
        elif name == "FULLY_CONNECTED":
            w = shapes[ins[1]]
            n = int(np.prod(out[:-1])) * int(np.prod(w))
        macs += n
        if n:
            stride = round(height / out[1]) if len(out) == 4 and out[1] > 1 else 0  # 0: global (1×1) or FC
            by_stride[stride] = by_stride.get(stride, 0) + n
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"):
            for i in ins:
                i = dequantized.get(i, i)
                if i >= 0 and i not in produced and i not in inputs and len(shapes[i]) >= 1:
                    params.add(i)
    if any(op["op_name"] == "TRANSPOSE_CONV" for op in ops):
        # TRANSPOSE_CONV's first input is the output shape, not a weight
        params -= {int(op["inputs"][0]) for op in ops if op["op_name"] == "TRANSPOSE_CONV"}
    n_params = sum(int(np.prod(shapes[i])) for i in params)
    return {"macs": macs, "params": n_params, "ops": sorted({op["op_name"] for op in ops}),
            "macs_by_stride": dict(sorted(by_stride.items()))}


# --------------------------------------------------------------------------------------
# Models


class MediaPipeSelfie:
    """MediaPipe's selfie segmenter on LiteRT: RGB squashed to its input, person probability out."""

    def __init__(self, path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.it = Interpreter(model_path=str(path), num_threads=num_threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.size = tuple(int(v) for v in self.inp["shape"][1:3])
        # "MediaPipe selfie" (square) or "MediaPipe landscape" (wider than tall)
        self.name = "MediaPipe landscape" if self.size[1] > self.size[0] else "MediaPipe selfie"

    def feed(self):
        return np.random.default_rng(0).uniform(0, 1, self.inp["shape"]).astype(np.float32)

    def person(self, rgb):
        import cv2

        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, self.size[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        self.it.set_tensor(self.inp["index"], x[None])
        self.it.invoke()
        p = self.it.get_tensor(self.out["index"])[0, ..., 0]
        return cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


class KsegModel:
    """A kseg semantic export through ``kseg.Segmenter`` (person = class 1, argmax = p > 0.5)."""

    def __init__(self, path, num_threads=2):
        from kseg.runtime import Segmenter

        self.path = Path(path)
        self.name = self.path.stem
        self.seg = Segmenter(str(path), num_threads=num_threads)
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=num_threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.size = tuple(int(v) for v in self.inp["shape"][1:3])

    def feed(self):
        rng = np.random.default_rng(0)
        if self.inp["dtype"] == np.uint8:
            return rng.integers(0, 256, self.inp["shape"], dtype=np.uint8)
        return rng.uniform(0, 255, self.inp["shape"]).astype(self.inp["dtype"])

    def person(self, rgb):
        return self.seg.segment(rgb).category_mask == 1


def run_label(path) -> str:
    """A short name for a model file whose stem another model shares: the stem for a file in
    ``exports/`` (the shipped one), else ``RUN/stem`` with RUN the nearest folder that is not an
    ``export…`` folder (``~/kseg-runs/runs/portrait_tiny/export-int8/portrait.tflite`` →
    ``portrait_tiny/portrait``)."""
    path = Path(path)
    if path.parent.name == "exports":
        return path.stem
    run = next((p.name for p in path.parents if p.name and not p.name.startswith("export")), path.parent.name)
    return f"{run}/{path.stem}"


def invoke_ms(path, feed, threads, n):
    """Median invoke time (ms) of ``n`` invokes after 5 warm-ups, on a fresh interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    idx = it.get_input_details()[0]["index"]
    it.set_tensor(idx, feed)
    for _ in range(5):
        it.invoke()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


# --------------------------------------------------------------------------------------
# Data


def val_sets(names, limit=None):
    """The held-out validation split (10%, seed 0) of each named shared set."""
    from kseg.data.readers import open_ccp, open_masks, people_dataset
    from kseg.paths import shared_data_dir

    root = shared_data_dir()
    out = {}
    people = None
    for name in names:
        if name == FREE:
            out[name] = person_free_images(limit)
            continue
        if name in ("people-masks", "people-parsing", "coco-val"):
            if people is None:
                people = people_dataset(root, val_fraction=0.1, seed=0)[1]
            ds = people[name]
        elif name == "portraits":
            ds = open_masks(root / "portraits", class_names=("background", "person"), binary=True).split(0.1, 0)[1]
        elif name == "faces":
            ds = open_ccp(root / "faces", groups="person").split(0.1, 0)[1]
        else:
            raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")
        if limit:
            ds = ds.subset(list(range(min(limit, len(ds)))))
        out[name] = ds
    return out


def person_free_images(limit=None) -> dict:
    """``{source: [load() -> RGB image]}``: the held-out person-free images (see the module
    docstring), at most ``limit`` per source."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_people import person_free_sets

    return {name: loads[:limit] if limit else loads for name, loads in person_free_sets().items()
            if "trained on" not in name}  # the empty-room video frames are training backgrounds


def person_free(model, sources: dict) -> dict:
    """Share of pixels called person, and share of images with more than 1%: over all the
    images of ``sources`` and per source."""
    def share(loads):
        labelled, total, flagged = 0, 0, 0
        for load in loads:
            pred = model.person(load())
            labelled += int(pred.sum())
            total += pred.size
            flagged += int(pred.mean() > 0.01)
        return labelled, total, flagged, len(loads)

    per = {name: share(loads) for name, loads in sources.items()}
    tot = [sum(v[i] for v in per.values()) for i in range(4)]
    fig = lambda v: {"labelled_share": v[0] / max(v[1], 1), "images_over_1pct": v[2] / max(v[3], 1), "n": v[3]}  # noqa: E731
    return {**fig(tot), "by_source": {name: fig(v) for name, v in per.items()}}


def person_ious(model, ds) -> list:
    """Person IoU of every image of ``ds`` (1 where ground truth and prediction are both empty)."""
    from kseg.evaluate import iter_loaded

    ious, skipped = [], {}
    for _, image, label in iter_loaded(ds, range(len(ds)), skipped):
        gt = label == 1
        pred = model.person(image)
        valid = label != 255
        inter = np.logical_and(pred, gt)[valid].sum()
        union = np.logical_or(pred, gt)[valid].sum()
        ious.append(1.0 if union == 0 else inter / union)
    if skipped:
        print(f"note: {len(skipped)} unreadable images skipped in {ds.name}", file=sys.stderr)
    return [float(v) for v in ious]


def paired(rows, base: str, resamples: int = 5000, seed: int = 0) -> dict:
    """Per-image IoU differences of every row against the row named (or filed) ``base``:
    ``{model: {set: {mean_diff, ci95: [lo, hi], better, worse, n}}}``, a percentile bootstrap
    over the images (resampled with replacement, ``resamples`` times); better/worse count the
    images that moved by more than 0.005."""
    by = [r for r in rows if base in (r["model"], r["file"], Path(r["file"]).name)]
    if len(by) != 1:
        raise SystemExit(f"--paired {base}: no single model of that name or file in this run "
                         f"(models: {', '.join(r['model'] for r in rows)})")
    ref = by[0]
    if not ref.get("iou_per_image"):
        raise SystemExit("--paired needs every image's IoU: a run without --skip-iou, saved since 2026-12-02")
    rng = np.random.default_rng(seed)
    out = {}
    for row in rows:
        if row is ref:
            continue
        figs = {}
        for name, ref_ious in ref["iou_per_image"].items():
            ious = row.get("iou_per_image", {}).get(name)
            if ious is None or len(ious) != len(ref_ious):
                continue
            d = np.asarray(ious, float) - np.asarray(ref_ious, float)
            boot = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            figs[name] = {"mean_diff": float(d.mean()), "ci95": [float(lo), float(hi)],
                          "better": int((d > 0.005).sum()), "worse": int((d < -0.005).sum()), "n": int(len(d))}
        out[row["model"]] = figs
    return out


def print_paired(rows, base: str) -> dict:
    figs = paired(rows, base)
    print(f"paired against {base}: mean per-image IoU difference [95% bootstrap interval] (images better / worse by > 0.005)")
    for model, sets in figs.items():
        print(f"  {model:<28} " + "  ".join(f"{name} {f['mean_diff']:+.3f} [{f['ci95'][0]:+.3f}, {f['ci95'][1]:+.3f}] "
                                            f"({f['better']}/{f['worse']})" for name, f in sets.items()))
    return figs


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
        extra = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2") if f" {f}" in flags]
        if extra:
            cpu += f" ({', '.join(extra)})"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["exports/portrait.tflite", "exports/portrait-fast.tflite"])
    shared = Path(os.environ["KSEG_DATA"]).parent if os.environ.get("KSEG_DATA") else ROOT.parent / "shared"
    ap.add_argument("--mediapipe", nargs="+", metavar="PATH",
                    default=[str(p) for p in (shared / "peers" / "selfie_segmentation.tflite",
                                              shared / "peers" / "selfie_segmentation_landscape.tflite")
                             if p.name == "selfie_segmentation.tflite" or p.exists()],
                    help="MediaPipe reference models, run first (default: the square and the landscape "
                         "selfie segmenters of ../shared/peers); times are also given relative to each")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--limit", type=int, default=None, help="at most N images per set")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--invokes", type=int, default=100, help="invokes per round")
    ap.add_argument("--skip-iou", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--chart", help="draw the latency/IoU chart into this PNG")
    ap.add_argument("--replot", metavar="JSON", help="no measuring: draw --chart (or --write-cards) from a run's --json")
    ap.add_argument("--paired", metavar="MODEL",
                    help="per-image IoU differences of every model against this one (name or file), with 95%% intervals")
    ap.add_argument("--write-cards", action="store_true",
                    help="record the figures in each kseg model's card (NAME.json beside NAME.tflite)")
    args = ap.parse_args(argv)
    if args.replot:
        if not (args.chart or args.write_cards or args.paired):
            ap.error("--replot needs --chart PNG, --write-cards or --paired MODEL")
        saved = json.loads(Path(args.replot).read_text())
        if args.paired:
            print_paired(saved["rows"], args.paired)
        if args.chart:
            chart(saved["rows"], saved["machine"], args.chart)
        if args.write_cards:
            write_cards(saved)
        return
    if args.paired and args.skip_iou:
        ap.error("--paired compares per-image IoU: leave out --skip-iou")
    if args.write_cards and args.skip_iou:
        ap.error("--write-cards needs the IoU figures: leave out --skip-iou")

    for path in args.mediapipe:
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no MediaPipe model there; give --mediapipe PATH (../shared/peers/"
                             "selfie_segmentation.tflite) or set KSEG_DATA to the shared data folder")
    refs = [MediaPipeSelfie(p) for p in args.mediapipe]
    models = refs + [KsegModel(p) for p in args.models]
    stems = [m.name for m in models]
    for m in models:  # two models of one name (a new model and the shipped one): say which
        if stems.count(m.name) > 1:
            m.name = run_label(m.path)
    rows = []
    for i, m in enumerate(models):
        st = graph_stats(m.path)
        rows.append({"model": m.name, "file": str(m.path), "input": list(m.size), "macs": st["macs"],
                     "params": st["params"], "macs_by_stride": st["macs_by_stride"], "ms": {1: [], 2: []}, "iou": {},
                     "reference": i < len(refs)})
    feeds = [m.feed() for m in models]
    for _ in range(args.rounds):
        for threads in (1, 2):
            for m, row, feed in zip(models, rows, feeds):
                row["ms"][threads].append(invoke_ms(m.path, feed, threads, args.invokes))
    if not args.skip_iou:
        sets = val_sets(args.sets, args.limit)
        for m, row in zip(models, rows):
            for name, ds in sets.items():
                if name == FREE:
                    row["person_free"] = person_free(m, ds)
                else:
                    ious = person_ious(m, ds)
                    row["iou"][name] = float(np.mean(ious))
                    row.setdefault("iou_per_image", {})[name] = ious
                row.setdefault("n", {})[name] = sum(map(len, ds.values())) if name == FREE else len(ds)

    ref_ms = [{t: float(np.median(r["ms"][t])) for t in (1, 2)} for r in rows[:len(refs)]]
    mp_ms = ref_ms[0]
    tags = ["MP"] + [("MPL" if r.name == "MediaPipe landscape" else f"R{i + 2}") for i, r in enumerate(refs[1:])]
    print(f"machine: {machine()}; {args.rounds} interleaved rounds x {args.invokes} invokes, median")
    head = f"{'model':<30} {'input':>8} {'MMACs':>7} {'params':>8} {'ms 1T':>7} {'ms 2T':>7}"
    head += "".join(f" {'x ' + tag + ' 1T':>8} {'x ' + tag + ' 2T':>8}" for tag in tags)
    names = list(rows[0]["iou"])
    free = "person_free" in rows[0]
    print(head + "".join(f" {n[:14]:>14}" for n in names) + (f" {'free: px %':>10} {'imgs >1%':>8}" if free else ""))
    for row in rows:
        ms = {t: float(np.median(row["ms"][t])) for t in (1, 2)}
        row["median_ms"] = ms
        row["ratio_to_mediapipe"] = {t: ms[t] / mp_ms[t] for t in (1, 2)}
        row["ratio_to"] = {r["model"]: {t: ms[t] / rm[t] for t in (1, 2)} for r, rm in zip(rows, ref_ms)}
        line = (f"{row['model']:<30} {row['input'][0]:>4}x{row['input'][1]:<3} {row['macs'] / 1e6:>7.1f} "
                f"{row['params'] / 1e3:>7.0f}k {ms[1]:>7.2f} {ms[2]:>7.2f}")
        line += "".join(f" {ms[1] / rm[1]:>8.2f} {ms[2] / rm[2]:>8.2f}" for rm in ref_ms)
        line += "".join(f" {row['iou'][n]:>14.3f}" for n in names)
        if free:
            f = row["person_free"]
            line += f" {100 * f['labelled_share']:>10.2f} {100 * f['images_over_1pct']:>7.0f}%"
        print(line)
    if rows[0].get("n"):
        print("images per set: " + ", ".join(f"{n} {k}" for n, k in rows[0]["n"].items()))
    strides = sorted({k for row in rows for k in row["macs_by_stride"]})
    print("multiply-adds (M) by output stride (0: global pooling and fully connected): "
          + "; ".join(f"{row['model']}: " + ", ".join(f"/{k} {row['macs_by_stride'].get(k, 0) / 1e6:.1f}"
                                                       for k in strides) for row in rows))
    if free:
        print("person-free, per source (pixels called person / images over 1%):")
        for row in rows:
            print(f"  {row['model']:<28} " + "  ".join(f"{src} ({f['n']}) {100 * f['labelled_share']:.1f}% / "
                                                     f"{100 * f['images_over_1pct']:.0f}%"
                                                     for src, f in row["person_free"]["by_source"].items()))
    if args.paired:
        figs = print_paired(rows, args.paired)
        for row in rows:
            if row["model"] in figs:
                row["paired"] = {"against": args.paired, "by_set": figs[row["model"]]}
    saved = json.loads(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "command": " ".join(["benchmarks/vs_mediapipe.py", *(argv if argv is not None
                                                                                          else sys.argv[1:])]),
                                   "rounds": args.rounds, "invokes": args.invokes, "rows": rows}, default=str))
    if args.json:
        from kseg.paths import atomic_path

        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps(saved, indent=1))
    if args.chart:
        chart(saved["rows"], saved["machine"], args.chart)
    if args.write_cards:
        write_cards(saved)


CARD_FIELDS = {"MediaPipe selfie": "vs_mediapipe", "MediaPipe landscape": "vs_mediapipe_landscape"}


def card_figures(saved: dict, row: dict, ref: dict) -> dict:
    """The card field of kseg model ``row`` against reference ``ref``, from a saved run (string keys)."""
    r3 = lambda v: round(float(v), 3)  # noqa: E731
    ms = lambda r: {f"{t}_threads": round(float(np.median(r["ms"][t])), 2) for t in ("1", "2")}  # noqa: E731
    ref_file = Path(ref["file"])
    if ref_file.parent.name == "peers":  # where every user has it: beside the repository
        ref_file = Path("..", "shared", "peers", ref_file.name)
    out = {
        "reference": f"{ref['model']} ({ref_file}, {ref['input'][0]}x{ref['input'][1]}, "
                     f"{ref['macs'] / 1e6:.1f}M multiply-adds, float32)",
        "protocol": "benchmarks/vs_mediapipe.py: held-out 10% (seed 0) of each set, image squashed to the input, "
                    "output upsampled and thresholded at 0.5, mean per-image person IoU; latency: median of "
                    f"{saved.get('rounds')} interleaved rounds x {saved.get('invokes')} invokes",
        "command": saved.get("command", "benchmarks/vs_mediapipe.py").replace(str(Path.home()), "~"),
        "machine": f"{saved['machine']} ({saved.get('date', 'date not recorded')})",
        "person_iou": {k: r3(v) for k, v in row["iou"].items()},
        "mediapipe_person_iou": {k: r3(v) for k, v in ref["iou"].items()},
        "latency_ms": ms(row),
        "mediapipe_latency_ms": ms(ref),
        "multiply_adds": int(row["macs"]),
        "mediapipe_multiply_adds": int(ref["macs"]),
    }
    if "person_free" in row and "person_free" in ref:
        out["person_free_pixels"] = r3(row["person_free"]["labelled_share"])
        out["mediapipe_person_free_pixels"] = r3(ref["person_free"]["labelled_share"])
    return out


def write_cards(saved: dict) -> list:
    """Write each kseg model's figures against each MediaPipe reference into its model card
    (``NAME.json`` beside ``NAME.tflite``, replaced atomically). Returns the cards written."""
    from kseg.paths import atomic_path

    rows = saved["rows"]
    refs = [r for i, r in enumerate(rows) if r.get("reference", i == 0)]
    if not rows[0].get("iou"):
        raise SystemExit("no IoU in these figures (a --skip-iou run): nothing to write into the cards")
    written = []
    for row in rows:
        if row.get("reference", row is rows[0]):
            continue
        card_file = Path(row["file"]).with_suffix(".json")
        if not card_file.is_file():
            print(f"note: {row['file']} has no model card {card_file.name} beside it; not written", file=sys.stderr)
            continue
        card = json.loads(card_file.read_text())
        for ref in refs:
            card[CARD_FIELDS.get(ref["model"], "vs_" + ref["model"].lower().replace(" ", "_"))] = card_figures(saved, row, ref)
        with atomic_path(card_file) as tmp:
            Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
        written.append(str(card_file))
        print(f"wrote the figures into {card_file}")
    return written


def chart(rows, machine_name, out):
    """The latency/IoU chart: a panel per set, each model at (median ms with 1 thread, IoU),
    MediaPipe's (the reference rows) in black and grey; with person-free figures, a last panel of the share of
    their pixels called person (lower is better). ``rows`` as in ``--json`` (string keys)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kseg.paths import atomic_path

    sets = list(rows[0].get("iou") or {})
    free = "person_free" in rows[0]
    if not sets and not free:
        raise SystemExit("no IoU in these figures (a --skip-iou run): nothing to chart")
    panels = sets + ([FREE] if free else [])
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    # the default cycle without its grey, which belongs to the references
    from matplotlib.colors import to_hex

    colours = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if to_hex(c) != "#7f7f7f"]
    # older --json files have no "reference" key: their first row is MediaPipe's
    refs = [bool(row.get("reference", i == 0)) for i, row in enumerate(rows)]
    greys, markers = ["black", "dimgrey", "darkgrey"], ["s", "D", "^"]
    for ax, name in zip(axes.flat, panels):
        k = 0
        for i, (row, ref) in enumerate(zip(rows, refs)):
            ms = float(np.median(row["ms"]["1"]))
            y = 100 * row["person_free"]["labelled_share"] if name == FREE else row["iou"][name]
            if ref:
                j = sum(refs[:i])
                ax.scatter([ms], [y], color=greys[j % 3], marker=markers[j % 3], s=40, zorder=3, label=row["model"])
            else:
                ax.scatter([ms], [y], color=colours[k % len(colours)], s=40, zorder=3, label=row["model"])
                k += 1
        n = rows[0].get("n", {}).get(name)
        ax.set_title(f"{name} ({n})" if n else name, fontsize=9)
        ax.set_xlabel("invoke ms, 1 thread", fontsize=8)
        ax.set_ylabel("% of pixels called person (lower is better)" if name == FREE else "person IoU", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"kseg people models and MediaPipe's selfie segmenters, one run: {machine_name}", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
