"""``kseg data preview``: a PNG grid of augmented training samples with their masks.

Each cell shows the augmented image next to the same image with the mask overlaid in the
dataset's colours (ignore pixels hatched grey), with a legend of class names underneath, so
that one look tells whether masks sit on their objects after augmentation.

Example:
    from kseg.data import open_dataset
    from kseg.data.pipeline import Augment
    from kseg.data.preview import write_preview
    ds = open_dataset("../shared/data/people-parsing", "ccp", groups="person")
    write_preview(ds, "preview.png", n=8, augment=Augment(portrait=1.0))
"""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path

IGNORE = 255
GREY = np.array([128, 128, 128], np.float32)


def overlay(image, mask, colors, alpha=0.5):
    """Blend class colours onto an RGB uint8 image; class 0 is left as is, 255 is hatched grey.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` class ids, 255 = ignore.
        colors: ``(num_classes, 3)`` uint8 palette.
        alpha: weight of the class colour.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    out = image.astype(np.float32)
    mask = np.asarray(mask)
    colors = np.asarray(colors, np.float32)
    valid = (mask != IGNORE) & (mask > 0) & (mask < len(colors))
    out[valid] = (1 - alpha) * out[valid] + alpha * colors[mask[valid]]
    ignore = mask == IGNORE
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    stripe = ((yy + xx) // 3) % 2 == 0
    out[ignore & stripe] = GREY
    out[ignore & ~stripe] = 0.6 * out[ignore & ~stripe] + 0.4 * GREY
    return np.clip(out, 0, 255).astype(np.uint8)


def _legend(names, colors, width):
    import cv2

    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    items = [(n, tuple(int(c) for c in col)) for n, col in zip(names, colors)] + [("ignore", None)]
    rows, x, row = [[]], 8, 0
    for name, col in items:
        tw = cv2.getTextSize(name, font, scale, thick)[0][0] + 30
        if x + tw > width and rows[-1]:
            rows.append([])
            x = 8
        rows[-1].append((x, name, col))
        x += tw
    strip = np.full((22 * len(rows) + 6, width, 3), 255, np.uint8)
    for r, entries in enumerate(rows):
        y = 6 + 22 * r
        for x, name, col in entries:
            if col is None:
                sw = overlay(np.full((14, 14, 3), 255, np.uint8), np.full((14, 14), IGNORE, np.uint8), [[0, 0, 0]])
            else:
                sw = np.empty((14, 14, 3), np.uint8)
                sw[:] = col
            strip[y:y + 14, x:x + 14] = sw
            cv2.rectangle(strip, (x, y), (x + 13, y + 13), (0, 0, 0), 1)
            cv2.putText(strip, name, (x + 19, y + 12), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip


def preview_grid(images, masks, class_names, colors, cols=4, gap=4):
    """Arrange samples as ``image | overlay`` cells, ``cols`` per row, with a legend below.

    Args:
        images: ``(N, H, W, 3)`` float or uint8 RGB in 0..255.
        masks: ``(N, H, W)`` class ids, 255 = ignore.
        class_names: names of the classes (legend).
        colors: ``(num_classes, 3)`` uint8 palette.
        cols: cells per row.
        gap: white pixels between cells.

    Returns:
        ``(rows·(H+gap)+legend, cols·(2W+gap), 3)`` uint8 RGB.
    """
    images = np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)
    masks = np.asarray(masks)
    n, h, w = masks.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    cw = 2 * w + gap
    grid = np.full((rows * (h + gap), cols * cw, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * cw
        grid[y:y + h, x:x + w] = images[i]
        grid[y:y + h, x + w:x + 2 * w] = overlay(images[i], masks[i], colors)
    return np.concatenate([grid, _legend(class_names, colors, grid.shape[1])], axis=0)


def write_preview(ds, out_png, n=16, size=(256, 256), seed=0, augment=None, cols=4, training=True):
    """Write a PNG grid of ``n`` augmented samples of ``ds`` (atomically).

    Args:
        ds: a ``SegDataset``.
        out_png: output path.
        n: number of samples (drawn at random by ``seed``).
        size: ``(H, W)`` of each sample.
        seed: which samples and which augmentation.
        augment: a ``kseg.data.pipeline.Augment`` (default ``Augment()``).
        cols: cells per row.
        training: ``False`` shows the validation resize instead of augmentation.

    Returns:
        ``(images float32 (n, H, W, 3), masks int32 (n, H, W))`` that were drawn.
    """
    import cv2

    from kseg.data.pipeline import make_dataset

    if len(ds) == 0:
        raise KsegError(f"dataset {ds.name} has no samples; nothing to preview")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
    sub = ds.subset(sorted(int(i) for i in pick))
    data = make_dataset(sub, size=size, batch_size=len(sub), training=training, augment=augment, seed=seed,
                        shuffle=False, drop_remainder=False)
    images, masks = [], []
    for x, y in data:
        images.append(x.numpy())
        masks.append(y.numpy())
    if not images:
        raise KsegError(f"every sample of {ds.name} was skipped; run `kseg data check` on it")
    images, masks = np.concatenate(images), np.concatenate(masks)
    grid = preview_grid(images, masks, ds.class_names, ds.colors, cols=cols)
    with atomic_path(out_png, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise KsegError(f"cannot write {out_png}; check the folder is writable")
    return images, masks
