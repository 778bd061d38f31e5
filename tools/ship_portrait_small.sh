#!/usr/bin/env bash
# The portrait_small chain (issue 12): train → QAT → int8 exports at 192 (portrait) and 160
# (portrait-fast) → side-by-side figures against MediaPipe. Each step skips when its output
# exists, so the script resumes after a kill. Runs live outside the work tree.
#
#   bash tools/ship_portrait_small.sh [train|qat|export|eval|all] [RUNS_DIR]
#   QUANT=int8 bash tools/ship_portrait_small.sh export    # post-training int8 instead of QAT
#   CONFIG=portrait_small_v2 QUANT=int8 bash tools/ship_portrait_small.sh all   # another config, same chain
#   CONFIG=portrait_tiny_landscape EXPORTS="portrait-landscape 144 256" QUANT=int8 bash tools/ship_portrait_small.sh all
#
# RUNS_DIR defaults to $HOME/kseg-runs/runs; the teacher frames (see the config's header)
# must exist first: python -c "from kseg.distill import ..." as the config's header says.
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:-all}
RUNS=${2:-$HOME/kseg-runs/runs}
CONFIG=${CONFIG:-portrait_small}
RUN=$RUNS/$CONFIG
PY=${PY:-.venv/bin/python}
QAT_EPOCHS=${QAT_EPOCHS:-1}
QUANT=${QUANT:-qat}   # qat, or int8 (post-training, calibrated on the config's training data)
EXPORTS=${EXPORTS:-portrait 192 192,portrait-fast 160 160}   # NAME H W, comma-separated: the files exported
# the configs since portrait_small_v2 paste people onto composite backgrounds too
LICENCE=${LICENCE:-"people-parsing: CCP, Apache-2.0; people-masks: Human-Segmentation-Dataset, no licence stated (research use); portraits: Face-Segmentation (no licence stated, research use); faces: CelebAMask-HQ (non-commercial research and education only); COCO: annotations CC BY 4.0, images Flickr terms; teacher labels: MediaPipe selfie segmenter (Apache-2.0) on Intel IoT sample videos (CC BY 4.0); composite backgrounds: COCO val/train images without people (Flickr terms), CamVid (CC BY-NC 4.0, research use), Oxford-IIIT Pets sample (CC BY-SA 4.0), Intel IoT sample videos (CC BY 4.0)"}

step() { [ "$STEP" = all ] || [ "$STEP" = "$1" ]; }

if step train && [ ! -f "$RUN/done" ]; then
  $PY -m kseg train --config configs/$CONFIG.yaml --out-dir "$RUNS"
  touch "$RUN/done"
fi
if step qat && [ "$QUANT" = qat ] && [ ! -f "$RUN/qat192/qat_model.h5" ]; then
  $PY -m kseg quantize "$RUN/best.keras" --config configs/$CONFIG.yaml --size 192 192 \
    --epochs "$QAT_EPOCHS" --lr 1e-5 --batch-size 16 --loss ce --out "$RUN/qat192"
fi
if step export; then
  IFS=, read -ra specs <<< "$EXPORTS"
  for spec in "${specs[@]}"; do
    set -- $spec
    OUT=$RUN/export-$QUANT
    [ -f "$OUT/$1.tflite" ] && continue
    mkdir -p "$OUT"
    if [ "$QUANT" = qat ]; then
      $PY -m kseg export "$RUN/qat192" --quantization qat --config configs/$CONFIG.yaml --size "$2" "$3" \
        --keras-model "$RUN/best.keras" --licence "$LICENCE" --parity 40 --out "$OUT/$1.tflite"
    else
      $PY -m kseg export "$RUN/best.keras" --quantization int8 --config configs/$CONFIG.yaml --size "$2" "$3" \
        --licence "$LICENCE" --parity 40 --out "$OUT/$1.tflite"
    fi
  done
fi
if step eval; then
  IFS=, read -ra specs <<< "$EXPORTS"
  files=()
  for spec in "${specs[@]}"; do set -- $spec; files+=("$RUN/export-$QUANT/$1.tflite"); done
  # side by side with the shipped models and both MediaPipe selfie segmenters (square and landscape)
  $PY benchmarks/vs_mediapipe.py "${files[@]}" exports/portrait.tflite exports/portrait-fast.tflite \
    --rounds 5 --invokes 100 --json "$RUN/vs_mediapipe-$QUANT.json"
fi
