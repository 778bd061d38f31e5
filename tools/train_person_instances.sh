#!/usr/bin/env bash
# The light person Mask R-CNN (issue 13), end to end, for a background run on the 2-core VM:
#   train (resumable) -> Keras COCO eval (+ AP vs test-time proposals, people-masks val)
#   -> int8 (post-training) and float16 exports with Keras parity -> card via `kseg export`
#   -> `kseg evaluate` on coco-mini val and coco-tiny val persons (the issue's protocol)
#   -> `kseg benchmark` latency -> RUN/figures.md
#
#   nohup tools/train_person_instances.sh > ~/kseg-runs/person_instances.log 2>&1 &
#   MINUTES=150 STEPS="train" tools/train_person_instances.sh        # only (more) training
#   STEPS="eval export evaluate figures" tools/train_person_instances.sh
#
# Run it again after a kill: training resumes from RUN/last.weights.h5 (weights + Adam state,
# RUN/state.json counts the epochs) and the steps after it are cheap to redo.
# Checkpoints live outside the work tree (OUT, default ~/kseg-runs/runs). The code runs from a
# snapshot of this checkout (SRC, default ~/kseg-runs/src-person-instances, made on the first run;
# REFRESH=1 re-copies it) so that edits in the work tree during a long run cannot change it.
# Nothing is written to exports/: copying RUN/person-instances.tflite and .json there is a
# decision for the session that reads RUN/figures.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-configs/mask_rcnn_person_composite.yaml}
OUT=${OUT:-$HOME/kseg-runs/runs}
SRC=${SRC:-$HOME/kseg-runs/src-person-instances}
MINUTES=${MINUTES:-165}          # training wall-clock budget; the schedule itself is train.epochs
STEPS=${STEPS-"train eval export evaluate benchmark figures"}
PY=${PY:-$HERE/.venv/bin/python}
export KSEG_DATA=${KSEG_DATA:-$(cd "$HERE/.." && pwd)/shared/data}
export TF_CPP_MIN_LOG_LEVEL=2

. "$HERE/tools/snapshot.sh"
snapshot_code "$HERE" "$SRC"
cd "$SRC"
export PYTHONPATH=$SRC
NAME=$($PY -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$CONFIG")
RUN=$OUT/$NAME
mkdir -p "$RUN"
BENCH="$PY benchmarks/mask_rcnn_person.py"
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
echo "$(date -u +%H:%M:%S) run $RUN, config $CONFIG, steps: $STEPS"

if step train; then
    $BENCH train --config "$CONFIG" --out-dir "$OUT" --minutes "$MINUTES"
fi
if step eval; then   # Keras model: COCO val persons not seen in training, people-masks held-out
    $BENCH eval --config "$CONFIG" --out-dir "$OUT" --people-masks
    $BENCH eval --config "$CONFIG" --out-dir "$OUT" --rpn-post-nms-test 50 100 300 --limit 40
fi
if step export; then  # int8 PTQ (uint8 input; NMS stays float) and float16, parity on 20 val images
    $BENCH export --config "$CONFIG" --out-dir "$OUT" --quantization int8 float16 --parity-images 20
    $PY -m kseg export "$RUN/last.weights.h5" --config "$CONFIG" --quantization int8 \
        --out "$RUN/person-instances.tflite" --parity 20 --threads 2
fi
if step evaluate; then  # the issue's protocol: every val image with a person, person category only;
    # the shipped file on the same images, with the paired bootstrap interval of the difference
    for sub in coco-mini coco-tiny; do
        $PY -m kseg evaluate "$RUN/person-instances.tflite" "coco/$sub" --categories person --json \
            --compare "$HERE/exports/person-instances.tflite" > "$RUN/kseg_evaluate_$sub.json"
    done
fi
if step benchmark; then  # the new file and the shipped one in interleaved rounds
    $PY -m kseg benchmark "$RUN/person-instances.tflite" "$HERE/exports/person-instances.tflite" --threads 2 \
        --json "$RUN/benchmark.json" || echo "kseg benchmark failed (see above); figures.md goes without it"
fi
if step figures; then
    $PY - "$RUN" <<'EOF'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
def load(name):
    p = run / name
    return json.loads(p.read_text()) if p.is_file() else None

lines = [f"# {run.name}", ""]
st = load("state.json")
if st:
    lines.append(f"trained epochs: {st['epochs_done']}, optimizer steps: {st.get('optimizer_step')}")
ev = load("eval.json")
if ev:
    lines += ["", "## Keras, pycocotools (val images not in training)", "",
              "| set | images | mask AP | AP50 | AP75 | box AP | s/image |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, v in ev["subsets"].items():
        lines.append(f"| {k} | {v['images']} | {v['segm']['AP']:.3f} | {v['segm']['AP50']:.3f} | "
                     f"{v['segm']['AP75']:.3f} | {v['bbox']['AP']:.3f} | {v['seconds_per_image']:.2f} |")
pr = load("eval_proposals.json")
if pr:
    lines += ["", "## AP vs test-time proposals (first 40 val images of each subset)", "",
              "| proposals | " + " | ".join(next(iter(pr.values()))["subsets"]) + " |", "|---|" + "---:|" * len(next(iter(pr.values()))["subsets"])]
    for n, r in pr.items():
        lines.append(f"| {n} | " + " | ".join(f"{v['segm']['AP']:.3f} / {v['bbox']['AP']:.3f}" for v in r["subsets"].values()) + " |")
ex = load("export.json")
if ex:
    lines += ["", "## exports (parity with Keras on 20 val images)", ""]
    for q, v in ex.items():
        if isinstance(v, dict) and "parity" in v:
            p = v["parity"]
            lines.append(f"- {q}: {v['size_mb']} MB, matched {p['matched']}/{p['keras_detections']}, mean mask IoU "
                         f"{p['mean_mask_iou']}, median box diff {p['median_box_diff']} px, invoke "
                         f"{v['tflite_latency_s_2_threads'] * 1000:.1f} ms (2 threads); float ops: {v.get('float_ops', '-')}")
for sub in ("coco-mini", "coco-tiny"):
    e = load(f"kseg_evaluate_{sub}.json")
    if e:
        lines.append(f"- kseg evaluate person-instances.tflite {sub} val: {e.get('images')} images, mask AP "
                     f"{e['segm']['AP']:.3f}, box AP {e['bbox']['AP']:.3f}")
        bs = (e.get("bootstrap") or {}).get("segm")
        if bs and "diff_AP" in bs:
            lo, hi = bs["diff_AP_ci"]
            lines.append(f"  against the shipped file: mask AP {bs['baseline_AP']:.3f}, difference {bs['diff_AP']:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] (paired, {bs['resamples']} draws; not better in "
                         f"{100 * bs['p_not_better']:.1f}%)")
b = load("benchmark.json")
if b:
    for m in b.get("models", []):
        lines.append(f"- kseg benchmark {m.get('file', m.get('model'))}: median {m.get('median_ms')} ms")
(run / "figures.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
fi
echo "$(date -u +%H:%M:%S) done: $RUN"
