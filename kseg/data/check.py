"""``kseg data check``: read every sample and report counts, classes, sizes and every bad sample.

Example:
    report = check_dataset("../shared/data/camvid", "camvid", split="train")
    print(report.format_text()); assert report.ok
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.data.readers import IGNORE, UNKNOWN, missing_pairs, open_dataset
from kseg.errors import KsegError
from kseg.progress import Progress


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    Attributes:
        name, format: the dataset's name and reader.
        class_names: names of classes ``0..C-1``.
        num_samples: samples the reader listed (pairs found; missing pairs are in ``bad``).
        pixel_counts: ``(C,)`` int64 pixels per class over the readable samples.
        image_counts: ``(C,)`` int64 readable samples in which each class appears.
        ignored_pixels: pixels labelled 255 (ignore) after the label map.
        sizes: ``Counter`` of image sizes ``(height, width)``.
        bad: one line per bad sample or missing pair, naming the file and the fix.
        seconds: wall time of the check.
    """

    name: str
    format: str
    class_names: tuple
    num_samples: int
    pixel_counts: np.ndarray
    image_counts: np.ndarray
    ignored_pixels: int
    sizes: Counter
    bad: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict:
        """A JSON-ready dict (what ``kseg data check --json`` prints); sizes in pixels."""
        total = max(int(self.pixel_counts.sum()), 1)
        hs = [h for (h, w), n in self.sizes.items() for _ in range(n)]
        ws = [w for (h, w), n in self.sizes.items() for _ in range(n)]
        return {
            "name": self.name,
            "format": self.format,
            "samples": self.num_samples,
            "readable": self.num_samples - len(self.bad),
            "classes": [
                {"id": i, "name": n, "pixels": int(p), "fraction": float(p) / total, "images": int(c)}
                for i, (n, p, c) in enumerate(zip(self.class_names, self.pixel_counts, self.image_counts))
            ],
            "ignored_pixels": int(self.ignored_pixels),
            # min, median and max are taken per axis (the median width and the median height)
            "sizes": {
                "min": {"width": int(min(ws)), "height": int(min(hs))} if hs else None,
                "median": {"width": int(np.median(ws)), "height": int(np.median(hs))} if hs else None,
                "max": {"width": int(max(ws)), "height": int(max(hs))} if hs else None,
                "most_common": [{"width": w, "height": h, "images": n} for (h, w), n in _most_common(self.sizes, 5)],
            },
            "bad": self.bad,
            "seconds": round(self.seconds, 2),
        }

    def format_text(self) -> str:
        """A human-readable summary: counts, class histogram, sizes and every bad sample."""
        d = self.to_dict()
        lines = [f"{self.name} ({self.format}): {d['samples']} samples, {d['readable']} readable, "
                 f"{len(self.class_names)} classes ({self.seconds:.1f} s)"]
        width = max(len(n) for n in self.class_names)
        lines.append(f"  {'class':<{width}}  {'pixels':>7}  {'images':>6}")
        for c in d["classes"]:
            lines.append(f"  {c['name']:<{width}}  {100 * c['fraction']:6.2f}%  {c['images']:>6}")
        all_px = int(self.pixel_counts.sum()) + self.ignored_pixels
        if all_px:
            lines.append(f"  ignored (255): {100 * self.ignored_pixels / all_px:.2f}% of pixels")
        s = d["sizes"]
        if s["min"]:
            def wh(x):
                return f"{x['width']}×{x['height']}"

            common = ", ".join(f"{wh(c)} ({c['images']})" for c in s["most_common"][:3])
            lines.append(f"  sizes (W×H): min {wh(s['min'])}, median {wh(s['median'])}, max {wh(s['max'])} "
                         f"(per axis); most common {common}")
        if self.bad:
            lines.append(f"  {len(self.bad)} bad sample(s):")
            lines += [f"    {b}" for b in self.bad]
        else:
            lines.append("  no bad samples")
        return "\n".join(lines)


def _most_common(sizes: Counter, n: int):
    # ties broken by size so that the report does not depend on thread completion order
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _structural_problems(root: Path, fmt: str, options: dict) -> list[str]:
    """Missing pairs (images without masks and masks without images) for folder formats."""
    pairs = {"masks": [("images", "masks"), ("images", "labels")], "ccp": [("images", "labels")],
             "pets": [("images", "trimaps")]}
    if fmt == "camvid":
        split = options.get("split", "train")
        pairs["camvid"] = [(split, f"{split}annot")]
    for im, m in pairs.get(fmt, []):
        if (root / im).is_dir() and (root / m).is_dir():
            return missing_pairs(root / im, root / m)
    return []


def check_dataset(path, format="auto", workers=4, progress=None, **options) -> CheckReport:
    """Read every sample of a dataset and report what is there and what is wrong.

    Args:
        path: the dataset folder.
        format: as for ``open_dataset``.
        workers: reader threads (OpenCV decodes without holding the GIL).
        progress: show progress on stderr (``kseg.progress``: a bar on a terminal, plain lines
            in a log); ``False``: not at all.
        **options: reader options (``split``, ``groups``, ``border``, ``categories``...).

    Returns:
        A ``CheckReport``; ``report.ok`` is False when any sample is bad.
    """
    from kseg.data.readers import detect_format

    t0 = time.perf_counter()
    root = Path(path)
    fmt = detect_format(root) if format in (None, "auto") else format
    bad = _structural_problems(root, fmt, options)
    if fmt in ("masks", "ccp", "pets", "camvid"):
        options = {**options, "strict": False}  # missing pairs are reported above, not fatal
    ds = open_dataset(root, fmt, **options)
    n_cls = ds.num_classes
    pixels = np.zeros(n_cls, np.int64)
    images = np.zeros(n_cls, np.int64)
    ignored = 0
    sizes: Counter = Counter()
    bar = Progress(len(ds), "check", "samples", mode=None if progress in (None, True) else "off")

    def one(i):
        try:
            image, mask = ds.load(i)
        except KsegError as e:
            return None, str(e)
        counts = np.bincount(mask.reshape(-1), minlength=256)
        return (image.shape[:2], counts), None

    with ThreadPoolExecutor(workers) as pool, bar:
        for res, err in pool.map(one, range(len(ds))):
            if err:
                bad.append(err)
            else:
                shape, counts = res
                sizes[shape] += 1
                pixels += counts[:n_cls]
                images += counts[:n_cls] > 0
                ignored += int(counts[IGNORE]) + int(counts[UNKNOWN])
            bar.update()
    return CheckReport(ds.name, fmt, ds.class_names, len(ds), pixels, images, ignored, sizes, bad,
                       time.perf_counter() - t0)
