"""Evaluation and prediction with a trained model (``kseg evaluate``, ``kseg predict``).

Evaluation streams the dataset (a few images in memory at a time), predicts at the model's
input size, upsamples the logits to each label's own resolution, and accumulates one
confusion matrix, from which every score is derived (``kseg.metrics.scores_from_confusion``).
A two-class (foreground/background) model, or one with a single sigmoid channel such as
U²-Net's saliency map, is also scored as a salient-object detector
(``kseg.metrics.SaliencyMetrics``: MAE, S-measure, E-measure, F-β, weighted F-β) on its
foreground probability. ``.keras`` models run through Keras in batches, ``.tflite`` files
through ``kseg.runtime.Segmenter``. Mask R-CNN models are scored on COCO by
``kseg.evaluate_instances``.

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


def open_model(path, num_threads: int = 2, flip: bool = False):
    """What ``evaluate`` takes: a Keras model for ``.keras``, a ``kseg.runtime.Segmenter`` for ``.tflite``
    (``flip``: with horizontal-flip test-time augmentation, see ``Segmenter``).

    Raises:
        KsegError: a missing file, another suffix, or a file that cannot be loaded.
    """
    p = Path(path)
    if p.suffix == ".tflite":
        from kseg.runtime import Segmenter

        if not p.is_file():
            raise KsegError(f"model file {p} not found; give the path of a .keras or .tflite file")
        return Segmenter(p, num_threads=num_threads, flip=flip)
    return load_model(p)


def class_probabilities(logits, kind: str = "logits") -> np.ndarray:
    """``(H, W, C)`` model output → ``(H, W, C)`` class probabilities (softmax over C).

    One channel is a sigmoid map (U²-Net with ``num_classes=1``): it becomes two,
    ``[1 - p, p]`` (background, foreground). ``kind="probabilities"``: the output already is.
    """
    y = np.asarray(logits, np.float32)
    if y.shape[-1] == 1:
        p = y if kind == "probabilities" else 0.5 * (1.0 + np.tanh(0.5 * y))  # sigmoid without overflow
        return np.concatenate([1.0 - p, p], axis=-1)
    if kind == "probabilities":
        return y
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def foreground_index(class_names) -> int | None:
    """The foreground class of a two-class dataset (``person``/``foreground``/… else 1); ``None`` otherwise."""
    if len(class_names) != 2:
        return None
    lowered = [str(n).lower() for n in class_names]
    for key in ("person", "foreground", "people", "human", "pet", "salient"):
        if key in lowered:
            return lowered.index(key)
    return 1


def saliency_maps(probs: np.ndarray, mask: np.ndarray, fg: int, ignore: int = 255):
    """(prediction, ground truth) uint8 0–255 maps as ``SaliencyMetrics.update`` takes them.

    The prediction is the foreground probability ×255, rounded; the ground truth 255 where the
    label is ``fg``. Salient-object metrics have no "ignore": pixels labelled ``ignore`` count
    as background in the ground truth.
    """
    pred = np.rint(np.clip(probs[..., fg], 0.0, 1.0) * 255).astype(np.uint8)
    gt = np.where(np.asarray(mask) == fg, 255, 0).astype(np.uint8)
    return pred, gt


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
    saliency: dict | None = None  # SaliencyMetrics.result() of the foreground class (binary models)
    foreground: str | None = None  # the class those are of
    per_image: np.ndarray | None = None  # (N, C, C) confusion matrix of each image (evaluate(per_image=True))
    per_image_index: list | None = None  # the dataset index of each of those images

    def to_dict(self) -> dict:
        s = self.scores
        out = {
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
        if self.saliency is not None:
            out["saliency"] = {"foreground_class": self.foreground, **{k: float(v) for k, v in self.saliency.items()}}
        return out

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
        if self.saliency is not None:
            v = self.saliency
            lines.append(
                f"salient object ({self.foreground}): MAE {v['mae']:.4f}  S-measure {v['s_measure']:.4f}  "
                f"weighted F-beta {v['weighted_f_beta']:.4f}"
            )
            lines.append(
                f"  F-beta max/mean/adaptive {v['max_f_beta']:.4f} / {v['mean_f_beta']:.4f} / "
                f"{v['adaptive_f_beta']:.4f}  E-measure max/mean/adaptive {v['max_e_measure']:.4f} / "
                f"{v['mean_e_measure']:.4f} / {v['adaptive_e_measure']:.4f}"
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


def check_classes(model, ds, label=None) -> None:
    """Fail in one line unless ``model`` (Keras or ``Segmenter``) predicts the classes of ``ds``;
    ``label`` names the model in the message (default: a ``Segmenter``'s file, else "the model")."""
    out_classes = model.num_classes if hasattr(model, "segment") else model.output_shape[-1]
    if out_classes == 1:  # a sigmoid map: background and foreground
        out_classes = 2
    if out_classes != ds.num_classes:
        name = label or getattr(model, "path", None) or "the model"
        raise KsegError(
            f"{name} predicts {out_classes} classes but the dataset has {ds.num_classes} "
            f"({', '.join(ds.class_names)}); evaluate on data with the classes it was trained on"
        )


def evaluate(model, ds, *, size=None, batch_size=4, out_dir=None, num_overlays=8, limit=None,
             saliency=None, flip=False, flip_pairs=None, per_image=False) -> EvalReport:
    """Score ``model`` on every sample of ``ds`` at label resolution.

    Args:
        model: a Keras model returning logits (B, H, W, C), or a ``kseg.runtime.Segmenter``
            (a ``.tflite`` file; see ``open_model``). One output channel is read as a sigmoid
            foreground map (background, foreground).
        ds: a ``kseg.data.readers.SegDataset``.
        size: (H, W) input size for models built with a free input size; default: the model's.
        batch_size: images per forward pass (Keras models).
        out_dir: if given, write ``confusion.png``, ``overlays/*.png`` and ``metrics.json`` there.
        num_overlays: how many overlay PNGs (prediction | truth) to write.
        limit: evaluate only the first ``limit`` samples.
        saliency: also score the foreground probability with ``SaliencyMetrics`` (MAE,
            S-measure, E-measure, F-β, weighted F-β); ``None`` (default): whenever the dataset
            has two classes.
        flip: horizontal-flip test-time augmentation for a Keras model (the mean of the class
            probabilities of each image and of its mirror image; ``flip_pairs``: ``[[LEFT, RIGHT], ...]``
            classes that trade places). A ``Segmenter`` flips when it was opened with ``flip=True``.
        per_image: keep each image's confusion matrix (``report.per_image``, ``(N, C, C)``, in
            the order of the samples read), for ``kseg.metrics.iou_bootstrap``.

    Returns:
        An ``EvalReport`` (``saliency`` set for binary models).

    Example:
        report = evaluate(open_model("exports/portrait.tflite"), open_dataset(path, "masks"))
        report.saliency["max_f_beta"]
    """
    from kseg.metrics import SaliencyMetrics, confusion_matrix, scores_from_confusion

    n_cls = ds.num_classes
    runtime = hasattr(model, "segment")  # a kseg.runtime.Segmenter
    if runtime and flip and not getattr(model, "flip", False):
        raise KsegError("evaluate(flip=True) flips Keras models; open the Segmenter with flip=True "
                        "(open_model(path, flip=True))")
    check_classes(model, ds)
    fg = foreground_index(ds.class_names)
    if saliency is None:
        saliency = fg is not None
    elif saliency and fg is None:
        raise KsegError(f"salient-object metrics need a two-class dataset (background, foreground); "
                        f"{ds.name} has {n_cls} classes")
    sod = SaliencyMetrics() if saliency else None
    perm = None
    if flip and not runtime:
        from kseg.runtime.segmenter import flip_average, flip_permutation

        perm = flip_permutation(n_cls, flip_pairs)
    if runtime:
        if size is not None and tuple(size) != tuple(model.input_size):
            raise KsegError(f"size {tuple(size)} (--size): {model.path} takes a fixed "
                            f"{model.input_size[0]}×{model.input_size[1]} input; leave --size out")
    else:
        size = input_size(model, size)
    cm = np.zeros((n_cls, n_cls), dtype=np.int64)
    per: list[np.ndarray] = []
    per_index: list[int] = []
    skipped: list[str] = []
    indices = list(range(len(ds)))[: limit or None]
    colors = palette(n_cls, getattr(ds, "colors", None))
    bar = _progress(len(indices), "images")
    written = 0
    buf = []

    def flush():
        nonlocal cm, written
        if runtime:
            probs = [model.segment(b[1]).confidence for b in buf]
        else:
            probs = [class_probabilities(lg) for lg in predict_logits(model, [b[1] for b in buf], size)]
            if flip:
                mirrored = predict_logits(model, [np.ascontiguousarray(b[1][:, ::-1]) for b in buf], size)
                probs = [flip_average(p, class_probabilities(m), perm) for p, m in zip(probs, mirrored)]
        for (i, image, mask), pr in zip(buf, probs):
            pred = pr.argmax(-1).astype(np.uint8)
            one = confusion_matrix(mask, pred, n_cls)
            cm += one
            if per_image:
                per.append(np.asarray(one, np.int64))
                per_index.append(int(i))
            if sod is not None:
                sod.update(*saliency_maps(pr, mask, fg))
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
            if len(buf) == (1 if runtime else batch_size):
                flush()
        if buf:
            flush()
    num = int(len(indices) - len(skipped))
    if num == 0:
        raise KsegError(f"no readable sample in dataset {ds.name}; run `kseg data check` on it")
    report = EvalReport(tuple(ds.class_names), cm, scores_from_confusion(cm), num, skipped,
                        saliency=sod.result() if sod is not None else None,
                        foreground=ds.class_names[fg] if sod is not None else None,
                        per_image=np.stack(per) if per_image else None,
                        per_image_index=per_index if per_image else None)
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

    Args:
        model: a Keras model, or a ``kseg.runtime.Segmenter`` (an exported ``.tflite``: its card's
            colours unless ``colors`` is given; the mask is its ``category_mask``, so a one-channel
            sigmoid model gives 0 and 1).

    Returns:
        The paths written.

    Raises:
        KsegError: a missing or undecodable image, or ``size`` other than a fixed-size model's input.
    """
    import cv2

    segmenter = hasattr(model, "segment")
    if segmenter:
        n_cls = model.num_classes
        colors = palette(n_cls, colors if colors is not None else model.colors)
        if size is not None and tuple(int(v) for v in size) != tuple(model.input_size):
            h, w = model.input_size
            raise KsegError(f"size {size[0]} {size[1]} (--size): {model.path} takes a fixed {h}×{w} input; "
                            f"leave --size out or give --size {h} {w}")
    else:
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
        if segmenter:
            pred = model.segment(rgb).category_mask
        else:
            pred = predict_logits(model, [rgb], size)[0].argmax(-1).astype(np.uint8)
        mask_path = out / f"{p.stem}_mask.png"
        with atomic_path(mask_path) as tmp:
            cv2.imwrite(str(tmp), pred)
        ov_path = out / f"{p.stem}_overlay.png"
        _write_png(ov_path, overlay(rgb, pred, colors))
        written += [mask_path, ov_path]
    return written
