#!/usr/bin/env bash
# The exact commands behind exports/parsing.tflite and the previous (224x224, replaced 2026-11-30)
# portrait models (docs/models.md); the current portrait models: tools/ship_portrait_small.sh.
# Each step resumes or is skipped when its output exists; run from the repository root:
#   bash tools/ship_people_models.sh [portrait|parsing|all]
# Training: configs/portrait.yaml, configs/parsing.yaml (kseg train resumes after a kill).
set -euo pipefail
cd "$(dirname "$0")/.."
K=".venv/bin/python -m kseg"
WHAT="${1:-all}"
PEOPLE_LICENCE="people-parsing: CCP, Apache-2.0; people-masks: Human-Segmentation-Dataset, no licence stated (research use); COCO: annotations CC BY 4.0, images Flickr terms"
PARSING_LICENCE="people-parsing: Clothing Co-Parsing (CCP), Apache-2.0"
QAT_EPOCHS="${QAT_EPOCHS:-2}"
# the shipped files were fine-tuned with plain cross-entropy (kseg quantize's only loss then);
# --loss ce reproduces them (the default now is the training config's loss)

step() { echo "=== $* ($(date -u +%H:%M:%S))"; }

if [[ $WHAT == portrait || $WHAT == all ]]; then
  [[ -f runs/portrait/best.keras ]] || { step train portrait; $K train --config configs/portrait.yaml; }
  for size in 224 160; do
    name=$([[ $size == 224 ]] && echo portrait || echo portrait-fast)
    [[ -f runs/portrait/qat$size/qat_model.h5 ]] || { step QAT $name;
      $K quantize runs/portrait/best.keras --config configs/portrait.yaml --size $size $size \
        --epochs "$QAT_EPOCHS" --lr 1e-5 --batch-size 16 --loss ce --out runs/portrait/qat$size; }
    step export $name
    $K export runs/portrait/qat$size --quantization qat --config configs/portrait.yaml --size $size $size \
      --keras-model runs/portrait/best.keras --licence "$PEOPLE_LICENCE" --parity 40 --out exports/$name.tflite
    # the other quantizations, for the comparison table (not shipped)
    for q in float32 float16 dynamic int8; do
      step export $name $q
      $K export runs/portrait/best.keras --quantization $q --config configs/portrait.yaml --size $size $size \
        --licence "$PEOPLE_LICENCE" --parity 40 --out runs/portrait/tflite/${name}_$q.tflite
    done
  done
fi

if [[ $WHAT == parsing || $WHAT == all ]]; then
  # two stages: configs/parsing.yaml, then configs/parsing_finetune.yaml (init_from the first)
  [[ -f runs/parsing/best.keras ]] || { step train parsing; $K train --config configs/parsing.yaml; }
  [[ -f runs/parsing_finetune/best.keras && -f runs/parsing_finetune/.done ]] || { step train parsing_finetune;
    $K train --config configs/parsing_finetune.yaml && touch runs/parsing_finetune/.done; }
  P=runs/parsing_finetune
  [[ -f $P/qat256/qat_model.h5 ]] || { step QAT parsing;
    $K quantize $P/best.keras --config configs/parsing_finetune.yaml --epochs "$QAT_EPOCHS" --lr 1e-5 \
      --batch-size 16 --loss ce --out $P/qat256; }
  step export parsing
  $K export $P/qat256 --quantization qat --config configs/parsing_finetune.yaml \
    --keras-model $P/best.keras --licence "$PARSING_LICENCE" --parity 40 --out exports/parsing.tflite
  for q in float32 float16 dynamic int8; do
    step export parsing $q
    $K export $P/best.keras --quantization $q --config configs/parsing_finetune.yaml \
      --licence "$PARSING_LICENCE" --parity 40 --out $P/tflite/parsing_$q.tflite
  done
fi
step done
