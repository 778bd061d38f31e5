#!/usr/bin/env bash
# Test-time settings of the trained person Mask R-CNN against AP and latency (issue 13): the
# proposals kept after the RPN's NMS (rpn_post_nms_test) and the detections the mask head runs on
# (max_detections) hold no weights, so each variant is the same weights exported again with the
# config changed. Each variant: `kseg export ... --quantization int8` (calibrated as the shipped
# file), `kseg evaluate` on coco-mini and coco-tiny val (person), then `kseg benchmark` of all
# files, 3 rounds (median; time them on an otherwise idle machine). Skips what exists; rerun after a kill.
#
#   bash tools/instances_sweep.sh [RUN] [OUT]
#   VARIANTS="50:20 100:20 300:20 100:50" bash tools/instances_sweep.sh
#
# RUN: the training run folder (default ~/kseg-runs/runs/mask_rcnn_person_composite, with
# last.weights.h5); OUT: where files and JSONs go (default RUN/sweep). Writes OUT/sweep.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-$HOME/kseg-runs/runs/mask_rcnn_person_composite}
OUT=${2:-$RUN/sweep}
PY=${PY:-.venv/bin/python}
CONFIG=${CONFIG:-configs/mask_rcnn_person_composite.yaml}
VARIANTS=${VARIANTS:-"50:20 100:20 300:20 100:50"}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT"
files=()
for v in $VARIANTS; do
  post=${v%%:*}; det=${v##*:}
  name=p${post}_d${det}
  cfg=$OUT/$name.yaml
  $PY - "$CONFIG" "$cfg" "$post" "$det" <<'EOF'
import sys, yaml
src, dst, post, det = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = yaml.safe_load(open(src))
cfg["model"]["rpn_post_nms_test"] = post
cfg["model"]["max_detections"] = det
cfg["model"]["rpn_pre_nms_test"] = max(cfg["model"]["rpn_pre_nms_test"], post)
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
EOF
  if [ ! -f "$OUT/$name.tflite" ]; then
    echo "=== export $name ($(date -u +%H:%M:%S))"
    $PY -m kseg export "$RUN/last.weights.h5" --config "$cfg" --quantization int8 --parity 0 --out "$OUT/$name.tflite"
  fi
  for subset in coco-mini coco-tiny; do
    j=$OUT/${name}_$subset.json
    [ -f "$j" ] || { $PY -m kseg evaluate "$OUT/$name.tflite" "${KSEG_DATA:-../shared/data}/coco/$subset" \
      --categories person --json > "$j.tmp" && mv "$j.tmp" "$j"; }
  done
  files+=("$OUT/$name.tflite")
done
for r in 1 2 3; do   # three rounds of all files: a burst of load hits every variant alike
  [ -f "$OUT/latency_r$r.json" ] || $PY -m kseg benchmark "${files[@]}" --threads 2 --runs 100 --warmup 10 --json "$OUT/latency_r$r.json"
done
$PY - "$OUT" $VARIANTS <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
import statistics
rounds = [json.loads((out / f"latency_r{r}.json").read_text())["models"] for r in (1, 2, 3)]
ms = {m["model"]: statistics.median(rd[i]["latency"]["median_ms"] for rd in rounds) for i, m in enumerate(rounds[0])}
lines = ["| proposals | detections | coco-mini mask AP / AP50 / box AP | coco-tiny mask AP / AP50 / box AP | ms, 2 threads (median of 3 rounds) |",
         "|---:|---:|---|---|---:|"]
for v in sys.argv[2:]:
    post, det = v.split(":")
    name = f"p{post}_d{det}"
    cells = []
    for subset in ("coco-mini", "coco-tiny"):
        e = json.loads((out / f"{name}_{subset}.json").read_text())
        cells.append(f"{e['segm']['AP']:.3f} / {e['segm']['AP50']:.3f} / {e['bbox']['AP']:.3f}")
    lines.append(f"| {post} | {det} | {cells[0]} | {cells[1]} | {ms[name]:.1f} |")
(out / "sweep.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
