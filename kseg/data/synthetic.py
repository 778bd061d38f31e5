"""Synthetic shapes data for tests and demos: known geometry, no downloads, no TF.

Circles, rectangles and triangles of random colour on textured backgrounds (noise or
stripes). Class ``k`` (1..num_classes-1) is one shape kind (1 circle, 2 rectangle,
3 triangle, then repeating); 0 is background. Everything is deterministic by ``seed``.

Example:
    from kseg.data.synthetic import make_shapes, write_shapes_dataset
    images, masks = make_shapes(8, size=(64, 64), num_classes=3, seed=0)
    ds = write_shapes_dataset("/tmp/shapes", 32)          # a SegDataset over PNG files
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

SHAPES = ("circle", "rectangle", "triangle")


def _background(rng, h, w):
    base = rng.integers(40, 200, size=3).astype(np.float32)
    if rng.random() < 0.5:
        tex = rng.normal(0.0, 18.0, size=(h, w, 1))
    else:
        period = rng.uniform(4.0, 12.0)
        angle = rng.uniform(0.0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        tex = 25.0 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    return np.clip(base + tex, 0, 255)


def _shape_mask(rng, kind, h, w):
    """A boolean HxW mask of one shape of ``kind`` at a random place (at least ~6 px)."""
    yy, xx = np.mgrid[0:h, 0:w]
    lo = max(3, min(h, w) // 10)
    hi = max(lo + 1, min(h, w) // 3)
    if kind == "circle":
        r = rng.integers(lo, hi)
        cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == "rectangle":
        bh, bw = rng.integers(2 * lo, 2 * hi), rng.integers(2 * lo, 2 * hi)
        bh, bw = min(bh, h - 1), min(bw, w - 1)
        y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
        return (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
    # triangle: apex up, base down
    s = rng.integers(2 * lo, 2 * hi)
    s = min(s, h - 1, w - 1)
    y0, x0 = rng.integers(0, h - s), rng.integers(0, w - s)
    dy = yy - y0
    half = dy * 0.5
    cx = x0 + s / 2.0
    return (dy >= 0) & (dy < s) & (np.abs(xx + 0.5 - cx) <= half + 0.5)


def _sample(rng, h, w, num_classes, max_shapes):
    image = _background(rng, h, w)
    semantic = np.zeros((h, w), np.uint8)
    inst_masks, inst_classes = [], []
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, num_classes))
        kind = SHAPES[(cls - 1) % len(SHAPES)]
        m = _shape_mask(rng, kind, h, w)
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        image[m] = colour
        semantic[m] = cls
        # later shapes occlude earlier ones
        inst_masks = [im & ~m for im in inst_masks]
        inst_masks.append(m)
        inst_classes.append(cls)
    keep = [i for i, m in enumerate(inst_masks) if m.sum() >= 4]
    inst = np.stack([inst_masks[i] for i in keep]).astype(np.uint8) if keep else np.zeros((0, h, w), np.uint8)
    return image.astype(np.uint8), semantic, inst, np.array([inst_classes[i] for i in keep], np.int32)


def _boxes(masks):
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def make_shapes(n, size=(64, 64), num_classes=3, seed=0, max_shapes=3):
    """``n`` images with semantic masks.

    Args:
        n: number of samples.
        size: ``(H, W)``.
        num_classes: classes including background (>= 2).
        seed: random seed; the same seed gives the same arrays.
        max_shapes: at most this many shapes per image (at least one).

    Returns:
        ``(images (n, H, W, 3) uint8, masks (n, H, W) uint8 in 0..num_classes-1)``.
    """
    if num_classes < 2:
        raise KsegError(f"num_classes={num_classes}: synthetic shapes need at least 2 (background + one shape)")
    rng = np.random.default_rng(seed)
    h, w = int(size[0]), int(size[1])
    images = np.zeros((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        images[i], masks[i], _, _ = _sample(rng, h, w, num_classes, max_shapes)
    return images, masks


def make_instances(n, size=(64, 64), num_classes=3, seed=0, max_shapes=3):
    """``n`` images with instance annotations (for Mask R-CNN tests).

    Returns:
        A list of dicts with ``image`` (H, W, 3) uint8, ``masks`` (K, H, W) uint8 0/1 (visible
        part of each shape), ``boxes`` (K, 4) float32 ``(x1, y1, x2, y2)`` in pixels (x2, y2
        exclusive), ``class_ids`` (K,) int32 in 1..num_classes-1, and ``semantic`` (H, W) uint8.
        Arrays are identical to ``make_shapes`` with the same arguments.
    """
    rng = np.random.default_rng(seed)
    h, w = int(size[0]), int(size[1])
    out = []
    for _ in range(n):
        image, semantic, inst, classes = _sample(rng, h, w, num_classes, max_shapes)
        out.append({"image": image, "masks": inst, "boxes": _boxes(inst), "class_ids": classes, "semantic": semantic})
    return out


def write_shapes_dataset(root, n, size=(64, 64), num_classes=3, seed=0, image_format="png"):
    """Write ``n`` shapes samples as ``root/images/*.{png,jpg}`` + ``root/masks/*.png``.

    Args:
        root: output folder (created).
        n: number of samples.
        size, num_classes, seed: as for ``make_shapes``.
        image_format: ``"png"`` (lossless) or ``"jpg"``.

    Also writes ``root/classes.json`` so that ``open_dataset(root, "masks")`` reads it back.

    Returns:
        A ``SegDataset`` over the written files (class names ``background, circle, ...``).
    """
    import cv2

    from kseg.data.readers import SegDataset, SegSample, identity_lut

    images, masks = make_shapes(n, size, num_classes, seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        ip = root / "images" / f"{i:04d}.{image_format}"
        mp = root / "masks" / f"{i:04d}.png"
        cv2.imwrite(str(ip), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(mp), masks[i])
        samples.append(SegSample(str(ip), str(mp), 0))
    names = ("background",) + tuple(SHAPES[(k - 1) % len(SHAPES)] + ("" if k <= 3 else str(k)) for k in range(1, num_classes))
    # so that ``open_dataset(root, "masks")`` (and ``kseg data preview``) reads it back
    (root / "classes.json").write_text(json.dumps({"classes": list(names)}))
    return SegDataset("shapes", names, samples, identity_lut(num_classes)[None], ("shapes",))
