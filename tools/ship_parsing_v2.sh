#!/usr/bin/env bash
# The parsing_v2 chain (issue 12): train → int8 export at 256 (post-training, or QAT) → figures
# against the shipped parsing model: 8-group IoU on held-out people-parsing and faces, and labels
# on held-out frames with nobody in them. Each step skips when its output exists, so the script
# resumes after a kill. Runs live outside the work tree.
#
#   bash tools/ship_parsing_v2.sh [train|qat|export|eval|all] [RUNS_DIR]
#   QUANT=qat bash tools/ship_parsing_v2.sh            # QAT (one epoch on the tf_keras twin) first
#   CALIBRATE=1 bash tools/ship_parsing_v2.sh           # per-class logit biases first (kseg calibrate):
#                                                       # $RUN/calibrated/best.keras → $RUN/export-int8-calibrated/
#   CALIBRATE=1 BALANCE=sources bash tools/ship_parsing_v2.sh   # biases for the mean over the config's datasets
#                                                       # of their mIoU: $RUN/calibrated-sources/, export-int8-calibrated-sources/
#
# Shipping is a copy of $RUN/export-$QUANT/parsing.tflite and .json to exports/ after reading
# $RUN/export-$QUANT/figures.txt (figures-$QUANT.txt in runs before 2026-11-30 15:00).
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:-all}
RUNS=${2:-$HOME/kseg-runs/runs}
CONFIG=${CONFIG:-parsing_v2}   # or parsing_v3 (parsing_v2 trained longer), same chain
RUN=$RUNS/$CONFIG
CFG=configs/$CONFIG.yaml
PY=${PY:-.venv/bin/python}
QAT_EPOCHS=${QAT_EPOCHS:-1}
QUANT=${QUANT:-int8}   # int8 (post-training, calibrated on the config's training data) or qat
CALIBRATE=${CALIBRATE:-0}   # 1: fit per-class logit biases for mIoU on the training images first
BALANCE=${BALANCE:-pixels}  # kseg calibrate --balance: pixels (all sampled pixels) or sources
MODEL=$RUN/best.keras
OUT=$RUN/export-$QUANT
if [ "$CALIBRATE" = 1 ]; then
  SUFFIX=$([ "$BALANCE" = pixels ] || echo "-$BALANCE")
  MODEL=$RUN/calibrated$SUFFIX/best.keras; OUT=$RUN/export-$QUANT-calibrated$SUFFIX
fi
LICENCE="people-parsing: Clothing Co-Parsing (CCP), Apache-2.0; faces: CelebAMask-HQ (non-commercial research and education only); backgrounds of composites: COCO (annotations CC BY 4.0, images Flickr terms), CamVid (research use), Oxford-IIIT Pets (CC BY-SA 4.0), Intel IoT sample videos (CC BY 4.0)"

step() { [ "$STEP" = all ] || [ "$STEP" = "$1" ]; }

if step train && [ ! -f "$RUN/done" ]; then
  $PY -m kseg train --config $CFG --out-dir "$RUNS"
  touch "$RUN/done"
fi
if step calibrate && [ "$CALIBRATE" = 1 ] && [ ! -f "$MODEL" ]; then
  $PY -m kseg calibrate "$RUN/best.keras" --config $CFG --balance "$BALANCE" --out "$MODEL"
fi
if step qat && [ "$QUANT" = qat ] && [ ! -f "$RUN/qat256/qat_model.h5" ]; then
  $PY -m kseg quantize "$MODEL" --config $CFG --epochs "$QAT_EPOCHS" --lr 1e-5 --batch-size 16 \
    --out "$RUN/qat256"
fi
if step export && [ ! -f "$OUT/parsing.tflite" ]; then
  mkdir -p "$OUT"
  if [ "$QUANT" = qat ]; then
    $PY -m kseg export "$RUN/qat256" --quantization qat --config $CFG --keras-model "$MODEL" \
      --licence "$LICENCE" --parity 40 --out "$OUT/parsing.tflite"
  else
    $PY -m kseg export "$MODEL" --quantization int8 --config $CFG \
      --licence "$LICENCE" --parity 40 --out "$OUT/parsing.tflite"
  fi
fi
if step eval; then
  { $PY benchmarks/eval_people.py --task parsing "$MODEL" "$OUT/parsing.tflite" exports/parsing.tflite \
      --json "$OUT/eval_parsing.json"
    $PY benchmarks/eval_people.py --task person-free "$OUT/parsing.tflite" exports/parsing.tflite \
      --json "$OUT/eval_person_free.json"
  } 2>&1 | grep -v -i warn | tee "$OUT/figures.txt"
fi
