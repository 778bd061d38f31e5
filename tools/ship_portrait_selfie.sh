#!/usr/bin/env bash
# MediaPipe's selfie segmenter fine-tuned on kseg's people data (issue 12; configs/portrait_selfie.yaml):
# train → MediaPipe's one-logit head (kseg.models.selfie.single_logit: the same person probability) →
# float16 export, MediaPipe's own format and cost, and an int8 export for the record → figures side by
# side with MediaPipe's two models and the shipped portrait files, paired per image against MediaPipe.
# Each step skips when its output exists, so the script resumes after a kill. Runs live outside the tree.
#
#   bash tools/ship_portrait_selfie.sh [train|export|qat|eval|all] [RUNS_DIR]
#   CONFIG=portrait_selfie_lovasz bash tools/ship_portrait_selfie.sh all    # what exports/portrait-selfie.tflite is
# qat: one epoch of quantization-aware training (kseg quantize, the config's loss, 5e-6) of the hard_swish="split"
# form (the int8 graph XNNPACK runs in one partition) with the logits bounded at ±8 (LogitLimit: the uint8 output
# keeps the soft edge); then (HSWISH=folded, the default) tools/fold_selfie_qat.py moves its fine-tuned weights
# into the "folded" form (the hard-swish's /6 in the convolutions: 12 fewer int8 ops) and quantizes that again
# without training; exported full-int8 with uint8 I/O: export-qat/NAME.tflite. (QAT of the folded form itself
# trains weights stored 6-1,530 times smaller at the same Adam step: at 224 it lost 0.9 validation mIoU.)
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:-all}
RUNS=${2:-$HOME/kseg-runs/runs}
CONFIG=${CONFIG:-portrait_selfie}
NAME=${NAME:-portrait-selfie}
HSWISH=${HSWISH:-folded}
RUN=$RUNS/$CONFIG
PY=${PY:-.venv/bin/python}
LICENCE=${LICENCE:-"network and starting weights: MediaPipe selfie segmenter (Apache-2.0); people-parsing: CCP, Apache-2.0; people-masks: Human-Segmentation-Dataset, no licence stated (research use); portraits: Face-Segmentation (no licence stated, research use); faces: CelebAMask-HQ (non-commercial research and education only); COCO: annotations CC BY 4.0, images Flickr terms; teacher labels: MediaPipe selfie segmenter (Apache-2.0) on Intel IoT sample videos (CC BY 4.0); composite backgrounds: COCO val/train images without people (Flickr terms), CamVid (CC BY-NC 4.0, research use), Oxford-IIIT Pets sample (CC BY-SA 4.0), Intel IoT sample videos (CC BY 4.0)"}

step() { [ "$STEP" = all ] || [ "$STEP" = "$1" ]; }

TEACHER=$HOME/kseg-runs/selfie/mediapipe.keras   # train.distill's teacher: MediaPipe's network as it ships
if step train && [ ! -f "$TEACHER" ]; then
  mkdir -p "$(dirname "$TEACHER")"
  $PY -c "import sys; from kseg.models.selfie import SelfieSegmenter
SelfieSegmenter(num_classes=2, input_shape=(256, 256, 3), pretrained=True).save(sys.argv[1])" "$TEACHER"
fi
if step train && [ ! -f "$RUN/done" ]; then
  $PY -m kseg train --config configs/$CONFIG.yaml --out-dir "$RUNS"
  touch "$RUN/done"
fi
if step export; then
  for kind in float16 int8; do
    OUT=$RUN/export-$kind
    FILE=$OUT/$NAME-$kind.tflite   # distinct names in the figures
    [ -f "$FILE" ] && continue
    mkdir -p "$OUT"
    # int8: logits bounded at ±8 (LogitLimit) so the uint8 output keeps the edge's gradations, and
    # hard-swish as ops XNNPACK runs in int8 (one delegated partition instead of 12)
    opts=$([ $kind = int8 ] && echo "logit_limit=8, hard_swish='$HSWISH'" || echo "logit_limit=None")
    $PY -c "import sys; from kseg.models.saving import load_keras_file; from kseg.models.selfie import single_logit
single_logit(load_keras_file(sys.argv[1]), $opts).save(sys.argv[2])" "$RUN/best.keras" "$OUT/best-one-logit.keras"
    cp "$RUN/classes.json" "$OUT/classes.json"
    $PY -m kseg export "$OUT/best-one-logit.keras" --quantization $kind --config configs/$CONFIG.yaml \
      --licence "$LICENCE" --parity 40 --out "$FILE"
  done
fi
if step qat && [ ! -f "$RUN/export-qat/$NAME.tflite" ]; then
  if [ ! -f "$RUN/qat-split/qat_model.h5" ]; then
    $PY -c "import sys; from kseg.models.saving import load_keras_file; from kseg.models.selfie import reform
reform(load_keras_file(sys.argv[1]), hard_swish='split', logit_limit=8).save(sys.argv[2])" \
      "$RUN/best.keras" "$RUN/qat_src_split.keras"
    $PY -m kseg quantize "$RUN/qat_src_split.keras" --config configs/$CONFIG.yaml --epochs 1 --lr 5e-6 --batch-size 16 \
      --out "$RUN/qat-split"
  fi
  QAT=$RUN/qat-split KERAS=$RUN/qat_src_split.keras
  if [ "$HSWISH" = folded ]; then
    [ -f "$RUN/qat-split-folded/qat_model.h5" ] || $PY tools/fold_selfie_qat.py "$RUN/qat-split" "$RUN/qat_src_split.keras" \
      --config configs/$CONFIG.yaml --out "$RUN/qat-split-folded"
    QAT=$RUN/qat-split-folded KERAS=$RUN/qat-split-folded/folded.keras
  fi
  mkdir -p "$RUN/export-qat"
  $PY -m kseg export "$QAT" --quantization qat --config configs/$CONFIG.yaml --keras-model "$KERAS" \
    --licence "$LICENCE" --parity 40 --out "$RUN/export-qat/$NAME.tflite"
fi
if step eval; then
  # MediaPipe's own weights through the same int8 export: what int8 alone costs
  MP8=$HOME/kseg-runs/selfie/export-int8/mediapipe-int8.tflite
  if [ ! -f "$MP8" ]; then
    mkdir -p "$(dirname "$MP8")"
    $PY -c "import sys; from kseg.models.selfie import SelfieSegmenter
SelfieSegmenter(num_classes=1, input_shape=(256, 256, 3), pretrained=True, logit_limit=8, hard_swish='$HSWISH').save(sys.argv[1])" \
      "$(dirname "$MP8")/mediapipe.keras"
    cp "$RUN/classes.json" "$(dirname "$MP8")/classes.json"
    $PY -m kseg export "$(dirname "$MP8")/mediapipe.keras" --quantization int8 --config configs/$CONFIG.yaml \
      --licence "MediaPipe selfie segmenter (Apache-2.0), unchanged weights" --parity 40 --out "$MP8"
  fi
  $PY benchmarks/vs_mediapipe.py "$RUN/export-qat/$NAME.tflite" "$RUN/export-float16/$NAME-float16.tflite" \
    "$RUN/export-int8/$NAME-int8.tflite" "$MP8" \
    exports/portrait.tflite exports/portrait-fast.tflite --rounds 5 --invokes 100 \
    --paired "MediaPipe selfie" --json "$RUN/vs_mediapipe.json"
fi
