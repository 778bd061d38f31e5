#!/usr/bin/env bash
# Issue 18's models on real data, end to end, for a background run on the 2-core VM:
#   train, one config after another (each resumable)
#   -> CamVid rows (SegFormer-B0, HRNet-W18-small): test evaluation, QAT, five TFLite variants and
#      their latency/mIoU (tools/camvid_zoo.sh), the tables of docs/results.md (tools/camvid_table.py)
#   -> U²-Net† rows: held-out evaluation with the salient-object metrics (kseg evaluate), the shipped
#      portrait model on the same images, int8 export and latency -> OUT/zoo_figures.md
#
#   nohup tools/train_zoo.sh > ~/kseg-runs/zoo.log 2>&1 &
#   CONFIGS="camvid_hrnet_w18_small" tools/train_zoo.sh          # one model only
#   STEPS="saliency figures" tools/train_zoo.sh                   # evaluation only
#
# Estimated on the shared 2-core CPU: SegFormer-B0 and HRNet 40 epochs of 367 CamVid frames at
# 288x384, about 2-3 hours each; U²-Net† on pets (15 epochs of 510 images at 192) about 2 hours and
# on people (12 x 150 steps of 8 at 192) about 3-4 hours; then QAT and exports, about an hour.
# Run it again after a kill: kseg train resumes each run from its checkpoint (RUN/ holds the
# interrupt-safe state), finished runs are not trained again, and every later step is skipped
# when its output exists. Checkpoints live outside the work tree (OUT, default ~/kseg-runs/runs;
# the snapshot's runs/ links there). The code runs from a snapshot of this checkout (SRC, default
# ~/kseg-runs/src-zoo, made on the first run; REFRESH=1 re-copies it) so that edits in the work
# tree during a long run cannot change it. Nothing is written to exports/ or docs/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$HOME/kseg-runs/runs}
SRC=${SRC:-$HOME/kseg-runs/src-zoo}
CONFIGS=${CONFIGS:-"camvid_segformer_b0 camvid_hrnet_w18_small pets_u2net_small people_u2net_small"}
STEPS=${STEPS-"train camvid saliency figures"}
PY=${PY:-$HERE/.venv/bin/python}
export KSEG_DATA=${KSEG_DATA:-$(cd "$HERE/.." && pwd)/shared/data}
export TF_CPP_MIN_LOG_LEVEL=2

. "$HERE/tools/snapshot.sh"
snapshot_code "$HERE" "$SRC"
mkdir -p "$OUT/eval"
ln -sfn "$OUT" "$SRC/runs"   # tools/camvid_zoo.sh and camvid_table.py read runs/NAME and runs/eval
cd "$SRC"
export PYTHONPATH=$SRC
K="$PY -m kseg"
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
has() { case " $CONFIGS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
say() { echo "=== $* ($(date -u +%H:%M:%S))"; }
say "runs in $OUT, configs: $CONFIGS, steps: $STEPS"

if step train; then
    for name in $CONFIGS; do
        if [ -f "$OUT/$name/DONE" ]; then echo "$name: trained (remove $OUT/$name/DONE to train on)"; continue; fi
        say "train $name"
        if $K train --config "configs/$name.yaml" --out-dir "$OUT"; then touch "$OUT/$name/DONE"; else echo "FAILED $name"; fi
    done
fi

CAMVID=$(for n in $CONFIGS; do case $n in camvid_*) echo -n "$n " ;; esac; done)
if step camvid && [ -n "$CAMVID" ]; then
    say "CamVid: test evaluation, QAT, exports, benchmark: $CAMVID"
    PY=$PY bash tools/camvid_zoo.sh $CAMVID || echo "FAILED camvid_zoo.sh (see above)"
    $PY tools/camvid_table.py $CAMVID > "$OUT/eval/camvid_zoo_table.md" || echo "FAILED camvid_table.py"
fi

# evaluate MODEL DATA NAME ARGS...: kseg evaluate --json into OUT/eval/NAME.json, once
evaluate() {
    local model=$1 data=$2 name=$3; shift 3
    [ -f "$OUT/eval/$name.json" ] && return 0
    say "evaluate $name"
    $K evaluate "$model" "$data" "$@" --json > "$OUT/eval/$name.json.tmp" && mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json" \
        || echo "FAILED evaluate $name"
}

if step saliency; then
    # the held-out images of each set (train.seed 0 splits every data.train entry the same way)
    if has people_u2net_small && [ -f "$OUT/people_u2net_small/best.keras" ]; then
        R=$OUT/people_u2net_small
        for m in "$R/best.keras:people_u2net_small" "$HERE/exports/portrait.tflite:portrait"; do
            evaluate "${m%%:*}" portraits "${m##*:}_portraits" --format masks --held-out 0.1 --seed 0
            evaluate "${m%%:*}" people-masks "${m##*:}_people-masks" --format masks --held-out 0.1 --seed 0
            evaluate "${m%%:*}" people-parsing "${m##*:}_people-parsing" --format ccp --groups person --held-out 0.1 --seed 0
        done
        [ -f "$R/tflite/people_u2net_small_int8.tflite" ] || { say "export people_u2net_small int8";
            $K export "$R/best.keras" --quantization int8 --config configs/people_u2net_small.yaml --parity 20 \
                --out "$R/tflite/people_u2net_small_int8.tflite" || echo "FAILED export"; }
        [ -f "$R/tflite/people_u2net_small_int8.tflite" ] && \
            evaluate "$R/tflite/people_u2net_small_int8.tflite" portraits people_u2net_small_int8_portraits \
                --format masks --held-out 0.1 --seed 0
        [ -f "$OUT/eval/people_u2net_small_bench.json" ] || [ ! -f "$R/tflite/people_u2net_small_int8.tflite" ] || {
            say "benchmark people_u2net_small int8 and portrait";
            $K benchmark "$R/tflite/people_u2net_small_int8.tflite" "$HERE/exports/portrait.tflite" --threads 2 \
                --runs 50 --warmup 10 --json "$OUT/eval/people_u2net_small_bench.json" || echo "FAILED benchmark"; }
    fi
    if has pets_u2net_small && [ -f "$OUT/pets_u2net_small/best.keras" ]; then
        evaluate "$OUT/pets_u2net_small/best.keras" pets pets_u2net_small_pets --format pets --border ignore \
            --held-out 0.15 --seed 0
        evaluate "$OUT/pets_u2net_small/best.keras" pets pets_u2net_small_pets-border-as-pet --format pets \
            --border pet --held-out 0.15 --seed 0
        R=$OUT/pets_u2net_small
        [ -f "$R/tflite/pets_u2net_small_int8.tflite" ] || { say "export pets_u2net_small int8";
            $K export "$R/best.keras" --quantization int8 --config configs/pets_u2net_small.yaml --parity 20 \
                --out "$R/tflite/pets_u2net_small_int8.tflite" || echo "FAILED export"; }
        [ -f "$R/tflite/pets_u2net_small_int8.tflite" ] && \
            evaluate "$R/tflite/pets_u2net_small_int8.tflite" pets pets_u2net_small_int8_pets --format pets \
                --border ignore --held-out 0.15 --seed 0
        [ -f "$OUT/eval/pets_u2net_small_bench.json" ] || [ ! -f "$R/tflite/pets_u2net_small_int8.tflite" ] || {
            say "benchmark pets_u2net_small int8"; $K benchmark "$R/tflite/pets_u2net_small_int8.tflite" --threads 2 \
                --runs 50 --warmup 10 --json "$OUT/eval/pets_u2net_small_bench.json" || echo "FAILED benchmark"; }
    fi
fi

if step figures; then
    $PY - "$OUT" <<'EOF'
import csv, json, sys
from pathlib import Path

out = Path(sys.argv[1])
ev = out / "eval"
lines = ["# issue 18 zoo runs", ""]
for name in ("camvid_segformer_b0", "camvid_hrnet_w18_small", "pets_u2net_small", "people_u2net_small"):
    hist = out / name / "history.csv"
    if hist.is_file():
        rows = list(csv.DictReader(open(hist)))
        best = max((float(r.get("val_mean_iou") or 0), i) for i, r in enumerate(rows)) if rows else (0, 0)
        lines.append(f"- {name}: {len(rows)} epochs, best val mIoU {100 * best[0]:.1f} (epoch {best[1] + 1})")
table = ev / "camvid_zoo_table.md"
if table.is_file():
    lines += ["", "## CamVid (tools/camvid_table.py)", "", table.read_text()]
keys = ("mae", "s_measure", "max_f_beta", "mean_f_beta", "adaptive_f_beta", "weighted_f_beta", "max_e_measure",
        "mean_e_measure", "adaptive_e_measure")
sod = sorted(p for p in ev.glob("*.json") if p.stem.startswith(("people_u2net", "portrait_", "pets_u2net"))
             and not p.stem.endswith("_bench"))
if sod:
    lines += ["", "## Salient-object metrics (held-out images; kseg evaluate)", "",
              "| model / set | images | person/pet IoU | mIoU | " + " | ".join(keys) + " |",
              "|---|---|---|---|" + "---|" * len(keys)]
    for p in sod:
        d = json.loads(p.read_text())
        s = d.get("saliency") or {}
        fg = s.get("foreground_class")
        iou = (d.get("per_class_iou") or {}).get(fg)
        lines.append(f"| {p.stem} | {d['num_images']} | {'' if iou is None else f'{iou:.3f}'} | {d['miou']:.3f} | "
                     + " | ".join(f"{s[k]:.3f}" if k in s else "" for k in keys) + " |")
for bench in (ev / "people_u2net_small_bench.json", ev / "pets_u2net_small_bench.json"):
    if not bench.is_file():
        continue
    b = json.loads(bench.read_text())
    for m in b.get("models", []):
        lines.append(f"- kseg benchmark {m.get('model')}: median {m.get('median_ms', 0):.2f} ms (2 threads), "
                     f"{m.get('size_mb', 0):.2f} MB")
(out / "zoo_figures.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
fi
say "done: $OUT/zoo_figures.md"
