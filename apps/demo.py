"""``kseg demo`` / ``make demo``: portrait mode, headless, on the bundled clip.

Writes ``demo_out/portrait.mp4`` (the whole clip with the effect) and
``demo_out/before_after.png`` (one frame, original beside result) and prints frames/s.
"""

from __future__ import annotations

import sys

import numpy as np

from apps.webcam import DEFAULT_CLIP, DEFAULT_MODEL, App, resolve
from kseg.errors import KsegError
from kseg.paths import atomic_path


def before_after(before: np.ndarray, after: np.ndarray, labels=("before", "after")) -> np.ndarray:
    """Two RGB frames side by side with a label on each, separated by a white bar."""
    import cv2

    h = before.shape[0]
    bar = np.full((h, 8, 3), 255, np.uint8)
    panel = np.hstack([before, bar, after])
    for x, text in ((0, labels[0]), (before.shape[1] + 8, labels[1])):
        cv2.rectangle(panel, (x, 0), (x + 14 + 12 * len(text), 34), (0, 0, 0), -1)
        cv2.putText(panel, text, (x + 8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return panel


def run_demo(out_dir="demo_out", model=DEFAULT_MODEL, source=DEFAULT_CLIP, effect="portrait",
             strength: float = 0.6, threads: int = 1, frame_index: int | None = None, segmenter_factory=None,
             keep: str = "all", instance_model=None, keeper_factory=None, instances: bool = False,
             detector_factory=None):
    """Run ``effect`` over ``source`` headless; write the video and the before/after PNG.

    Args:
        out_dir: output folder (``portrait.mp4``, ``before_after.png``).
        model: the person model (default ``exports/portrait.tflite``).
        source: the clip (default ``assets/book.mkv``).
        effect: ``portrait``, ``swap`` or ``mask``.
        strength: effect strength.
        threads: interpreter threads.
        frame_index: the frame shown in the PNG (default: the middle of the clip).
        keep: portrait: which people stay sharp (``all``, ``largest``, ``nearest``, ``center``;
            see ``apps.common.keep``).
        instance_model: the person instance model for ``keep`` and ``instances`` (default
            ``exports/person-instances.tflite``).
        instances: mask effect: each person in a colour of their own (``MaskOverlay``).

    Returns:
        ``(RunStats, video_path, png_path)``.

    Example:
        stats, video, png = run_demo()
        print(stats.fps)
    """
    import cv2

    from apps.common.pipeline import Pipeline
    from apps.common.sinks import VideoFileSink
    from apps.common.sources import open_source

    from pathlib import Path

    out = Path(out_dir)
    clip = resolve(source)
    if not clip.exists():
        raise KsegError(f"demo clip {source} not found; it ships in assets/ — is this a complete checkout?")
    app = App(model=model, parsing_model=None, fast_model=None, threads=threads, effect=effect,
              effect_args={"strength": strength}, segmenter_factory=segmenter_factory, keep=keep,
              instance_model=instance_model, keeper_factory=keeper_factory, instances=instances,
              detector_factory=detector_factory)
    if app.model_choice:
        print(app.model_choice, file=sys.stderr)
    src = open_source(clip)
    pick = frame_index if frame_index is not None else (src.frame_count or 2) // 2
    kept = {}

    def keep(i, frame, result):
        # up to the chosen frame; a clip shorter than its header says still gets the last one
        if i <= pick:
            if "before" not in kept or kept["before"].shape != frame.shape:
                kept["before"], kept["after"] = frame.copy(), result.copy()
            else:
                np.copyto(kept["before"], frame)
                np.copyto(kept["after"], result)

    video = out / f"{effect}.mp4"
    try:
        pipe = app.bind(Pipeline(src, [VideoFileSink(video, fps=src.fps)], app.effect, app.estimator(),
                                 hud=None, on_frame=keep))
        stats = pipe.run()
    finally:
        app.close()
    if stats.frames == 0:
        raise KsegError(f"no frame could be read from {source}; is it a complete video OpenCV can decode?")
    png = out / "before_after.png"
    panel = before_after(kept["before"], kept["after"], ("before", f"after: kseg {effect}"))
    with atomic_path(png, option="--out") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    return stats, video, png


def main(out_dir="demo_out", model=DEFAULT_MODEL, source=DEFAULT_CLIP, effect="portrait", strength=0.6,
         threads=1, keep="all", instance_model=None, instances=False) -> int:
    """Run the demo and print what it wrote and its frames/s; the ``kseg demo`` command."""
    stats, video, png = run_demo(out_dir, model, source, effect, strength, threads, keep=keep,
                                 instance_model=instance_model, instances=instances)
    print(f"{effect} on {source}: {stats.format_line()}")
    print(f"frames/s (decode + segment + refine + effect + mp4 encode, 3 threads): {stats.fps:.1f}")
    written = [str(p) for p in (video, png) if p.is_file()]
    if len(written) < 2:  # run_demo raises before this; a last guard against claiming a missing file
        raise KsegError(f"the demo did not write {' and '.join(str(p) for p in (video, png) if not p.is_file())}")
    print(f"wrote {' and '.join(written)}")
    return 0
