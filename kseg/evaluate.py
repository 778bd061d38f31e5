"""Evaluation and prediction with a trained model (``kseg evaluate``, ``kseg predict``).

Evaluation streams the dataset (a few images in memory at a time), predicts at the model's
input size, upsamples the logits to each label's own resolution, and accumulates one
confusion matrix, from which every score is derived (``kseg.metrics.scores_from_confusion``).
Mask R-CNN models are scored on COCO by ``kseg.evaluate_instances``.

Example:
    from kseg.evaluate import evaluate, load_model
    from kseg.data.readers import open_dataset
    report = evaluate(load_model("runs/camvid_unet/best.keras"),
                      open_dataset("../shared/data/camvid", "camvid", split="test"))
    print(report.format_text())
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path


def load_model(path):
    """Load a ``.keras`` model saved by kseg (no custom_objects needed); see ``kseg.models.saving``."""
    from kseg.models.saving import load_model

    return load_model(path)


def model_input_size(model, fallback=(256, 256)):
    h, w = model.input_shape[1:3]
    if h is None or w is None:
        return tuple(fallback)
    return int(h), int(w)


def input_size(model, size=None) -> tuple[int, int]:
    """The size to run ``model`` at: ``size`` if the model takes it, else its own.

    Raises:
        KsegError: ``size`` is not positive, or differs from a fixed-size model's input.
    """
    if size is None:
        return model_input_size(model)
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise KsegError(f"size {size}: give (H, W), both at least 1 pixel")
    h, w = model.input_shape[1:3]
    if h is not None and w is not None and size != (int(h), int(w)):
        raise KsegError(
            f"size {size[0]} {size[1]} (--size): model {model.name} takes a fixed {h}×{w} input; "
            f"leave --size out or give --size {h} {w}"
        )
    return size


def predict_logits(model, images: list[np.ndarray], size) -> list[np.ndarray]:
    """Logits for each RGB uint8 image, upsampled back to that image's resolution."""
    import cv2

    h, w = size
    batch = np.stack(
        [cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images]
    ).astype("float32")
    logits = np.asarray(model.predict_on_batch(batch), dtype="float32")
    out = []
    for im, lg in zip(images, logits):
        H, W = im.shape[:2]
        if (H, W) != lg.shape[:2]:
            lg = cv2.resize(lg, (W, H), interpolation=cv2.INTER_LINEAR)
            if lg.ndim == 2:  # cv2 drops a single channel
                lg = lg[..., None]
        out.append(lg)
    return out


def palette(num_classes: int, colors=None) -> np.ndarray:
    if colors is not None and len(colors) >= num_classes:
        return np.asarray(colors, dtype=np.uint8)[:num_classes]
    rng = np.random.default_rng(7)
    pal = rng.integers(40, 255, size=(num_classes, 3)).astype(np.uint8)
    pal[0] = (0, 0, 0)
    return pal


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha=0.5) -> np.ndarray:
    """RGB image with class colours blended in; ignore (255) pixels are left as they are."""
    color = np.zeros_like(image)
    valid = mask != 255
    color[valid] = colors[np.clip(mask[valid], 0, len(colors) - 1)]
    out = image.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * color[valid]
    return out.astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if rgb.ndim == 3:
            rgb = rgb[..., ::-1]
        if not cv2.imwrite(str(tmp), rgb):
            raise KsegError(f"could not write {path}; check the folder is writable")


@dataclass
class EvalReport:
    class_names: tuple
    confusion: np.ndarray
    scores: dict
    num_images: int
    skipped: list = field(default_factory=list)

    def to_dict(self) -> dict:
        s = self.scores
        return {
            "num_images": self.num_images,
            "skipped": self.skipped,
            "pixel_accuracy": float(s["pixel_accuracy"]),
            "class_accuracy": float(s["class_accuracy"]),
            "miou": float(s["miou"]),
            "mean_dice": float(s["mean_dice"]),
            "per_class_iou": {
                n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, s["per_class_iou"])
            },
            "per_class_dice": {
                n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, s["per_class_dice"])
            },
            "confusion_matrix": self.confusion.astype(int).tolist(),
        }

    def format_text(self) -> str:
        s = self.scores
        width = max(len(n) for n in self.class_names)
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}"]
        for n, iou, dice in zip(self.class_names, s["per_class_iou"], s["per_class_dice"]):
            fmt = lambda v: "   n/a" if np.isnan(v) else f"{100 * v:6.2f}"  # noqa: E731
            lines.append(f"{n:<{width}}  {fmt(iou)}  {fmt(dice)}")
        lines.append(
            f"mIoU {100 * s['miou']:.2f}  pixel accuracy {100 * s['pixel_accuracy']:.2f}  "
            f"class accuracy {100 * s['class_accuracy']:.2f}  mean Dice {100 * s['mean_dice']:.2f}  "
            f"({self.num_images} images" + (f", {len(self.skipped)} skipped)" if self.skipped else ")")
        )
        return "\n".join(lines)


def _progress(total, label):
    """A bar on a terminal, plain lines in a log (``kseg.progress``)."""
    from kseg.progress import Progress

    return Progress(total, "evaluation", label)


def iter_loaded(ds, indices, skipped, workers=2, ahead=4):
    """Yield ``(i, image, mask)`` reading ahead in threads; bad samples go to ``skipped``.

    At most ``ahead`` samples are decoded and waiting at any time, so a dataset of any size
    streams through in bounded memory however slow the consumer is.
    """
    from collections import deque

    def load(i):
        try:
            return i, *ds.load(i), None
        except KsegError as e:
            return i, None, None, str(e)

    indices = iter(indices)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(load, i) for _, i in zip(range(max(1, ahead)), indices))
        while pending:
            i, image, mask, err = pending.popleft().result()
            nxt = next(indices, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            if err:
                skipped.append(err)
                continue
            yield i, image, mask


def evaluate(model, ds, *, size=None, batch_size=4, out_dir=None, num_overlays=8, limit=None) -> EvalReport:
    """Score ``model`` on every sample of ``ds`` at label resolution.

    Args:
        model: a Keras model returning logits (B, H, W, C).
        ds: a ``kseg.data.readers.SegDataset``.
        size: (H, W) input size for models built with a free input size; default: the model's.
        batch_size: images per forward pass.
        out_dir: if given, write ``confusion.png``, ``overlays/*.png`` and ``metrics.json`` there.
        num_overlays: how many overlay PNGs (prediction | truth) to write.
        limit: evaluate only the first ``limit`` samples.

    Returns:
        An ``EvalReport``.
    """
    from kseg.metrics import confusion_matrix, scores_from_confusion

    n_cls = ds.num_classes
    out_classes = model.output_shape[-1]
    if out_classes != n_cls:
        raise KsegError(
            f"the model predicts {out_classes} classes but the dataset has {n_cls} "
            f"({', '.join(ds.class_names)}); evaluate on data with the classes it was trained on"
        )
    size = input_size(model, size)
    cm = np.zeros((n_cls, n_cls), dtype=np.int64)
    skipped: list[str] = []
    indices = list(range(len(ds)))[: limit or None]
    colors = palette(n_cls, getattr(ds, "colors", None))
    bar = _progress(len(indices), "images")
    written = 0
    buf = []

    def flush():
        nonlocal cm, written
        logits = predict_logits(model, [b[1] for b in buf], size)
        for (i, image, mask), lg in zip(buf, logits):
            pred = lg.argmax(-1).astype(np.uint8)
            cm += confusion_matrix(mask, pred, n_cls)
            if out_dir is not None and written < num_overlays:
                stem = Path(str(ds.samples[i].image)).stem
                _write_png(
                    Path(out_dir) / "overlays" / f"{stem}.png",
                    np.concatenate([overlay(image, pred, colors), overlay(image, mask, colors)], axis=1),
                )
                written += 1
        bar.update(len(buf))
        buf.clear()

    with bar:
        for item in iter_loaded(ds, indices, skipped):
            buf.append(item)
            if len(buf) == batch_size:
                flush()
        if buf:
            flush()
    num = int(len(indices) - len(skipped))
    if num == 0:
        raise KsegError(f"no readable sample in dataset {ds.name}; run `kseg data check` on it")
    report = EvalReport(tuple(ds.class_names), cm, scores_from_confusion(cm), num, skipped)
    if out_dir is not None:
        out = Path(out_dir)
        plot_confusion(cm, ds.class_names, out / "confusion.png")
        with atomic_path(out / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def plot_confusion(cm: np.ndarray, class_names, out_png) -> None:
    """Row-normalised confusion matrix (rows: truth) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 16:
        for r in range(n):
            for c in range(n):
                ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[r, c] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def predict(model, image_paths, out_dir, *, class_names=None, colors=None, size=None) -> list[Path]:
    """Write ``STEM_mask.png`` (class ids) and ``STEM_overlay.png`` for each image.

    Returns:
        The paths written.
    """
    import cv2

    n_cls = model.output_shape[-1]
    colors = palette(n_cls, colors)
    size = input_size(model, size)
    out = Path(out_dir)
    written = []
    for p in image_paths:
        p = Path(p)
        if not p.is_file():
            raise KsegError(f"image {p} not found; give paths of existing image files")
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise KsegError(f"image {p} cannot be decoded; is it a complete JPEG/PNG file?")
        rgb = bgr[..., ::-1].copy()
        pred = predict_logits(model, [rgb], size)[0].argmax(-1).astype(np.uint8)
        mask_path = out / f"{p.stem}_mask.png"
        with atomic_path(mask_path) as tmp:
            cv2.imwrite(str(tmp), pred)
        ov_path = out / f"{p.stem}_overlay.png"
        _write_png(ov_path, overlay(rgb, pred, colors))
        written += [mask_path, ov_path]
    return written
