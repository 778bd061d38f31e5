"""Distillation data: a teacher model labels unlabeled frames, written as a ``masks`` dataset.

A teacher (MediaPipe's selfie segmenter, Apache-2.0, in ``../shared/peers/``; or any kseg
person export) runs on frames that have no ground truth (the shared webcam clips, say) and its
person probability becomes a label mask: ``1`` where it is confident of a person (p ≥ ``high``),
``0`` where it is confident of background (p ≤ ``low``), ``255`` (ignore) in between, so the
student learns the teacher's confident decisions and nothing from its doubtful edges. The
folder is an ordinary ``masks`` dataset (``images/``, ``masks/``, ``classes.json``,
``teacher.json``) that a config lists next to the real data; ground truth stays ground truth
(frames with labels are never relabelled). This module sits at the runtime layer (it runs
``.tflite`` teachers on LiteRT) and imports neither Keras nor TensorFlow.

Example:
    teacher = SelfieTeacher("../shared/peers/selfie_segmentation.tflite")
    frames = video_frames(sorted(Path("../shared/data/videos/asl_gestures").glob("*.mkv")), every=4)
    ds = label_frames(teacher, frames, "~/kseg-runs/data/selfie-teacher-asl")
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

IGNORE = 255


class SelfieTeacher:
    """MediaPipe's selfie segmenter (float32 RGB in [0, 1], one sigmoid output) on LiteRT.

    Args:
        path: the ``.tflite`` file (``selfie_segmentation.tflite``, 256×256, or the 144×256
            landscape one).
        num_threads: interpreter threads.

    Example:
        p = SelfieTeacher("../shared/peers/selfie_segmentation.tflite")(rgb)   # (H, W) in [0, 1]
    """

    def __init__(self, path, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise KsegError(f"teacher model {self.path} not found; MediaPipe's selfie segmenter is in ../shared/peers/")
        self.it = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        if self.inp["dtype"] != np.float32 or self.out["shape"][-1] != 1:
            raise KsegError(f"{self.path} is not a selfie-style teacher (float32 input, one probability output)")
        self.size = (int(self.inp["shape"][1]), int(self.inp["shape"][2]))
        self.name = self.path.name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, self.size[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        self.it.set_tensor(self.inp["index"], x[None])
        self.it.invoke()
        p = self.it.get_tensor(self.out["index"])[0, ..., 0]
        return cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)


class SegmenterTeacher:
    """A kseg person export (class 1 = person) as a teacher: its softmax person probability."""

    def __init__(self, path, num_threads: int = 2):
        from kseg.runtime import Segmenter

        self.seg = Segmenter(str(path), num_threads=num_threads)
        self.name = Path(path).name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.seg.segment(rgb).confidence[..., 1]


def video_frames(paths, every: int = 4, max_side: int | None = 640):
    """Yield ``(name, rgb uint8)`` for every ``every``-th frame of each video.

    Args:
        paths: video files (anything OpenCV reads).
        every: keep one frame in ``every`` (consecutive webcam frames are near copies).
        max_side: shrink frames whose longer side exceeds this (``None``: keep).
    """
    import cv2

    for path in paths:
        path = Path(path)
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise KsegError(f"cannot open video {path}; give a file OpenCV can read (mp4, mkv, avi)")
        i = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if i % every == 0:
                    if max_side and max(bgr.shape[:2]) > max_side:
                        s = max_side / max(bgr.shape[:2])
                        bgr = cv2.resize(bgr, (round(bgr.shape[1] * s), round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
                    yield f"{path.stem}_{i:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()


def teacher_mask(prob: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """Probability → label: 1 where ``p >= high``, 0 where ``p <= low``, 255 (ignore) between.

    Example:
        teacher_mask(np.array([[0.1, 0.5, 0.9]]))   # [[0, 255, 1]]
    """
    if not 0.0 <= low <= high <= 1.0:
        raise KsegError(f"teacher thresholds need 0 <= low <= high <= 1, got low={low}, high={high}")
    out = np.full(prob.shape, IGNORE, np.uint8)
    out[prob <= low] = 0
    out[prob >= high] = 1
    return out


def label_frames(teacher, frames, out_dir, low: float = 0.3, high: float = 0.7, min_person: float = 0.0,
                 jpeg_quality: int = 95):
    """Label ``frames`` with ``teacher`` and write a ``masks`` dataset to ``out_dir``, atomically.

    Args:
        teacher: callable ``rgb (H, W, 3) uint8 -> person probability (H, W)``
            (``SelfieTeacher``, ``SegmenterTeacher``).
        frames: iterable of ``(name, rgb)`` (e.g. ``video_frames(...)``).
        out_dir: the dataset folder to create; an existing one is replaced only when the new
            one is complete.
        low, high: probability thresholds (see ``teacher_mask``).
        min_person: leave out frames whose confident person area is below this fraction
            (0: keep person-free frames too, as background examples).
        jpeg_quality: quality of the written frames.

    Returns:
        The written dataset (``kseg.data.readers.open_masks``), classes background/person.
    """
    import cv2

    from kseg.data.readers import open_masks
    from kseg.progress import progress

    out = Path(out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        kept = skipped = 0
        ignored = 0.0
        for name, rgb in progress(frames, "teacher labels", "frames"):
            mask = teacher_mask(teacher(rgb), low, high)
            if min_person and (mask == 1).mean() < min_person:
                skipped += 1
                continue
            ignored += float((mask == IGNORE).mean())
            if not cv2.imwrite(str(tmp / "images" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                raise KsegError(f"could not write {tmp / 'images' / name}.jpg; check free space in {out.parent}")
            if not cv2.imwrite(str(tmp / "masks" / f"{name}.png"), mask):
                raise KsegError(f"could not write {tmp / 'masks' / name}.png; check free space in {out.parent}")
            kept += 1
        if kept == 0:
            raise KsegError("the teacher labelled no frames (none given, or all below min_person)")
        (tmp / "classes.json").write_text(json.dumps({"classes": ["background", "person"]}))
        (tmp / "teacher.json").write_text(json.dumps({
            "teacher": getattr(teacher, "name", type(teacher).__name__), "low": low, "high": high,
            "min_person": min_person, "frames": kept, "left_out": skipped,
            "mean_ignored_fraction": round(ignored / kept, 4),
            "labels": "0 background, 1 person (teacher p >= high), 255 ignore (low < p < high)",
        }, indent=1))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_masks(out, class_names=("background", "person"), binary=False)
