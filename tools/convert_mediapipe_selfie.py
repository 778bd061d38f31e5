"""Write kseg/weights/mediapipe_selfie_segmentation.npz from MediaPipe's selfie_segmentation.tflite.

The file (MediaPipe 0.10.21, ``mediapipe/modules/selfie_segmentation/``, Apache-2.0; a copy is in
``../shared/peers/``) stores every kernel and bias as float16 behind a DEQUANTIZE op. This reads
them by tensor name (``conv2d_5/Kernel``, ``depthwise_conv2d_3/Bias``, ``segment/Kernel``), puts
them in Keras layout (Conv2D ``(kh, kw, in, out)``, DepthwiseConv2D ``(kh, kw, C, 1)``,
Conv2DTranspose ``(kh, kw, out, in)``), checks each against ``kseg.models.selfie.SelfieSegmenter``'s
layer of that name, and writes them unchanged in float16. Then it checks the Keras model with these
weights against the ``.tflite`` file on real images and prints the largest difference.

    .venv/bin/python tools/convert_mediapipe_selfie.py ../shared/peers/selfie_segmentation.tflite \
        --check-images ../shared/data/portraits/images
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np


def read_tflite(path):
    """{layer name: (kernel in Keras layout, bias)} of MediaPipe's selfie segmenter file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {}
    for d in interp.get_tensor_details():
        name = d["name"]
        if name.endswith(("/Kernel", "/Bias")) and d["dtype"] in (np.float16, np.float32):
            tensors[name] = interp.get_tensor(d["index"])
    out = {}
    for name in sorted({n.rsplit("/", 1)[0] for n in tensors}):
        kernel, bias = tensors[f"{name}/Kernel"], tensors[f"{name}/Bias"]
        if name.startswith("depthwise"):
            kernel = kernel.reshape(kernel.shape[1], kernel.shape[2], -1, 1)  # (1, kh, kw, C) -> (kh, kw, C, 1)
        elif name == "segment":
            kernel = kernel.transpose(1, 2, 0, 3)  # (O, kh, kw, I) -> (kh, kw, O, I)
        else:
            kernel = kernel.transpose(1, 2, 3, 0)  # (O, kh, kw, I) -> (kh, kw, I, O)
        out[name] = (kernel, bias)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tflite", help="selfie_segmentation.tflite (MediaPipe 0.10.21)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "kseg" / "weights"
                                         / "mediapipe_selfie_segmentation.npz"))
    ap.add_argument("--check-images", help="a folder of images to compare the Keras model with the file on")
    args = ap.parse_args(argv)

    from kseg.models.selfie import SelfieSegmenter

    weights = read_tflite(args.tflite)
    model = SelfieSegmenter(num_classes=2, input_shape=(256, 256, 3))
    arrays = {}
    for name, (kernel, bias) in weights.items():
        layer = model.get_layer(name)
        want = [tuple(w.shape) for w in layer.get_weights()]
        if name == "segment":
            want = [(want[0][0], want[0][1], 1, want[0][3]), (1,)]
        if want != [kernel.shape, bias.shape]:
            sys.exit(f"{name}: the file has {kernel.shape}, {bias.shape}; SelfieSegmenter has {want}")
        arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = kernel, bias
    keras_layers = {l.name for l in model.layers if l.get_weights()}
    if keras_layers != set(weights):
        sys.exit(f"layers without weights in the file: {sorted(keras_layers - set(weights))}; "
                 f"in the file only: {sorted(set(weights) - keras_layers)}")
    out = Path(args.out)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    n = sum(int(np.prod(a.shape)) for a in arrays.values())
    print(f"wrote {out}: {len(weights)} layers, {n} weights (float16), "
          f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")

    if args.check_images:
        import cv2
        from ai_edge_litert.interpreter import Interpreter

        model = SelfieSegmenter(num_classes=2, input_shape=(256, 256, 3), weights=out)
        interp = Interpreter(model_path=str(args.tflite))
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        files = sorted(Path(args.check_images).glob("*.jpg"))[:32]
        worst, agree = 0.0, []
        for f in files:
            rgb = cv2.resize(cv2.imread(str(f))[:, :, ::-1], (256, 256), interpolation=cv2.INTER_AREA)
            interp.set_tensor(inp["index"], (rgb[None] / 255.0).astype(np.float32))
            interp.invoke()
            theirs = interp.get_tensor(outp["index"])[0, :, :, 0]
            logits = np.asarray(model(rgb[None].astype(np.float32)))[0]
            mine = 0.5 * (1.0 + np.tanh((logits[..., 1] - logits[..., 0]) / 2))  # softmax of two
            worst = max(worst, float(np.abs(mine - theirs).max()))
            agree.append(float(((mine > 0.5) == (theirs > 0.5)).mean()))
        print(f"{len(files)} images of {args.check_images}: max |probability difference| {worst:.2e}, "
              f"pixels on the same side of 0.5 {100 * np.mean(agree):.3f}%")


if __name__ == "__main__":
    main()
