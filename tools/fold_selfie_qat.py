"""Re-quantize a quantization-aware trained SelfieSegmenter in the folded hard-swish form.

QAT of the ``hard_swish="folded"`` form trains convolutions whose stored weights are divided by 6
(the stem's by 1,530): Adam's steps, the same size in parameter space, are then 6 to 1,530 times
larger relative to them, and the int8 file of a 224×224 fine-tune lost 0.9 validation mIoU to its
float model (the "split" form: 0.2). So QAT runs in the "split" form, and this copies its
fine-tuned float weights into the folded form — the same function, and per channel the same
int8 weight grid — and quantizes that again without training, activation ranges from training
images (``calibrate_ranges``), the head's fixed at the LogitLimit bound.

    python tools/fold_selfie_qat.py RUN/qat RUN/qat_src.keras --config configs/CONFIG.yaml --out RUN/qat-folded
    kseg export RUN/qat-folded --quantization qat --config configs/CONFIG.yaml --keras-model RUN/qat-folded/folded.keras ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qat", help="folder kseg quantize wrote (the split form's QAT model)")
    ap.add_argument("source", help="the .keras model kseg quantize started from (split form)")
    ap.add_argument("--config", required=True, help="the training config: calibration images")
    ap.add_argument("--batches", type=int, default=16, help="calibration batches of the config's batch size")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from kseg.cli.common import config_data
    from kseg.models.saving import load_keras_file
    from kseg.models.selfie import reform
    from kseg.paths import atomic_path
    from kseg.quantize.qat import calibrate_ranges, float_weights_from_qat, load_qat_model, quantize_aware, \
        save_qat_model
    from kseg.quantize.twin import to_tf_keras

    source = load_keras_file(args.source)
    n = float_weights_from_qat(load_qat_model(args.qat), source)
    folded = reform(source, hard_swish="folded")
    size = tuple(source.input_shape[1:3])
    _, train_ds, _, _ = config_data(args.config, size, training=True)
    qat = quantize_aware(folded)
    calibrate_ranges(qat, to_tf_keras(folded), train_ds, max_batches=args.batches)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # qat_model.h5 last: its presence says the folder is complete (tools/ship_portrait_selfie.sh skips on it)
    with atomic_path(out / "folded.keras") as tmp:
        folded.save(tmp)
    if (Path(args.qat) / "qat.json").is_file():
        with atomic_path(out / "qat.json") as tmp:
            shutil.copy(Path(args.qat) / "qat.json", tmp)
    save_qat_model(qat, out)
    print(f"{n} layers' QAT weights in the folded form: {out} (kseg export {out} --quantization qat "
          f"--keras-model {out / 'folded.keras'} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
