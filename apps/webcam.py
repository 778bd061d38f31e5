"""Live effects from a webcam, a video or an image folder: ``python -m apps.webcam``.

Examples:
    python -m apps.webcam                                  # webcam 0, portrait blur, window
    python -m apps.webcam --effect swap --background beach.jpg
    python -m apps.webcam --effect tryon --color "#d62839" --hair-color "#e8c07d"
    python -m apps.webcam --effect tryon --texture tartan.jpg
    python -m apps.webcam --source assets/book.mkv --out out.mp4 --no-window
    python -m apps.webcam --virtual-cam                    # use it in a video call
    python -m apps.webcam --keep largest                   # portrait: only the largest person sharp
    python -m apps.webcam --effect mask --instances        # each person in a colour of their own

``--keep`` and ``--instances`` run the person instance model on a thread of its own, on the
latest frame, at most ``--detect-rate`` (default 5) times a second: the frames never wait for it.

Keys (in the window): ``e``/Tab next effect, ``1``–``4`` portrait/swap/tryon/mask, ``m`` next
model, ``+``/``-`` strength, ``c``/``v`` garment/hair colour (try-on), ``s`` temporal smoothing
on/off, ``r`` edge refinement on/off, ``h`` HUD on/off, ``q``/Esc quit. Each key that changes
something says what on stderr (``webcam: key '2': swap #00b140, portrait.tflite``), and the last
line says why the run stopped (``webcam: stopped (window closed)``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from apps.common.detect import DEFAULT_RATE
from apps.common.sources import resolve
from kseg.errors import Interrupted, KsegError, forget_escaped_interrupt
from kseg.paths import check_writable, write_errno, write_failure

DEFAULT_MODEL = "exports/portrait.tflite"
DEFAULT_FAST_MODEL = "exports/portrait-fast.tflite"
DEFAULT_PARSING_MODEL = "exports/parsing.tflite"
FAST_PARSING_MODEL = "exports/parsing-fast.tflite"  # the same weights at 320×320, for slower CPUs
DEFAULT_CLIP = "assets/book.mkv"
EFFECT_ORDER = ("portrait", "swap", "tryon", "mask")


class App:
    """The live state: models (loaded once), one estimator per model × mask set, the effects.

    Args:
        model: the person/background model (``.tflite``/``.keras``); a string of several files
            separated by commas (exports of one model, e.g. int8 and float16) keeps the fastest
            on this CPU, timed at start (``Segmenter.fastest``; ``model_choice`` says which).
        parsing_model: the clothes/hair model for try-on (may be missing).
        fast_model: an optional faster person model (key ``m`` cycles through the models).
        threads: interpreter threads (1: the threaded pipeline already keeps both cores busy;
            on 2 cores a second interpreter thread competed with capture and rendering and
            lowered frames/s, see docs/results.md).
        effect: the effect to start with.
        effect_args: keyword arguments for ``make_effect`` (strength, background, color, ...).
        smoothing: temporal smoothing strength; refine: guided-filter edges.
        keep: portrait mode keeps only these people sharp: ``all`` (default), ``largest``,
            ``nearest`` or ``center`` (``apps.common.keep``; the last three need the instance
            model).
        instance_model: the person instance model for ``keep`` (default
            ``exports/person-instances.tflite``).
        keeper_factory: ``(instance_model, keep) -> PersonKeeper`` (tests: a fake detector).
        keep_rate: at most this many instance detections per second, for ``keep`` and
            ``instances`` (default 5, ``apps.common.detect.DEFAULT_RATE``; ``None`` or 0: back
            to back). The detector runs on its own thread either way; the cap keeps it from
            taking the pipeline's CPU.
        instances: the mask effect colours each person the instance model finds in a colour of
            their own (``apps.effects.MaskOverlay``; needs the instance model).
        detector_factory: ``instance_model -> detector`` for ``instances`` (tests: a fake).
        flip: run the segmentation models on each frame and its mirror image and average them
            (``Segmenter(flip=True)``: twice the model time; try-on's hair +1.6 IoU on held-out
            people, README "Test-time flip").

    Raises:
        KsegError: the model cannot be loaded, try-on is asked for without a parsing model,
            ``keep`` or ``instances`` is asked for without the instance model, or a negative
            ``keep_rate``.
    """

    def __init__(self, model=DEFAULT_MODEL, parsing_model=DEFAULT_PARSING_MODEL, fast_model=DEFAULT_FAST_MODEL,
                 threads: int | None = 1, effect: str = "portrait", effect_args: dict | None = None,
                 smoothing: float = 0.6, refine: bool = True, work_scale: float = 0.5, segmenter_factory=None,
                 keep: str = "all", instance_model=None, keeper_factory=None, keep_rate: float | None = DEFAULT_RATE,
                 instances: bool = False, detector_factory=None, flip: bool = False):
        from apps.common.keep import DEFAULT_INSTANCE_MODEL, KEEP_CHOICES

        from apps.effects import make_effect

        self.threads = threads
        self.flip = bool(flip)
        self.smoothing = smoothing
        self.refine = refine
        self.work_scale = work_scale
        self.effect_args = dict(effect_args or {})
        self._factory = segmenter_factory or self._load
        self._segmenters = {}
        self._estimators = {}
        self.person_models = []
        self.model_choice = None
        model_p = self._choose(model) if isinstance(model, str) and "," in model else resolve(model)
        if not model_p.exists() and effect != "tryon":
            raise KsegError(
                f"model {model} not found; train and export the portrait model "
                "(see README: kseg export ... --out exports/portrait.tflite) or give --model PATH"
            )
        for p in (model_p, resolve(fast_model) if fast_model else None):
            if p is not None and p.exists() and p not in self.person_models:
                self.person_models.append(p)
        self.parsing_model = resolve(parsing_model) if parsing_model else None
        if self.parsing_model is not None and not self.parsing_model.exists():
            self.parsing_model = None
        if self.parsing_model is not None:
            self.person_models.append(self.parsing_model)  # its 1 - P(background) is a person mask too
        if not self.person_models:
            raise KsegError(f"no model found ({model}); give --model PATH")
        self.model_i = 0
        if keep not in KEEP_CHOICES:
            raise KsegError(f"--keep {keep}: choose one of {', '.join(KEEP_CHOICES)}")
        self.keep = keep
        if keep_rate is not None and not keep_rate >= 0:
            raise KsegError(f"--detect-rate {keep_rate:g}: give instance detections per second, ≥ 0 (0: no cap)")
        self.keep_rate = keep_rate or None
        self.keeper = None
        self.instances = bool(instances)
        if self.instances:  # loaded now: a missing model is one line at the start, not on key 4
            detector = (detector_factory or self._detector)(instance_model or DEFAULT_INSTANCE_MODEL)
            self.effect_args["instances"] = detector
            self.effect_args["max_rate"] = self.keep_rate  # the mask effect takes them; the others ignore them
        if keep != "all":
            self.keeper = (keeper_factory or self._keeper)(instance_model or DEFAULT_INSTANCE_MODEL, keep)
            self.effect_args["keeper"] = self.keeper  # portrait takes it; the other effects ignore it
        self.effects = {}
        self.make_effect = make_effect
        self.effect = self.get_effect(effect)

    def _choose(self, models: str) -> Path:
        """``--model A,B``: the fastest of these exports of one model on this CPU (measured at start,
        ``Segmenter.fastest``; the first given wins a close call); ``model_choice`` says why."""
        from kseg.runtime import Segmenter

        paths = [resolve(m.strip()) for m in models.split(",") if m.strip()]
        for p in paths:
            if not p.is_file():
                raise KsegError(f"model {p} not found (--model {models}); give existing files, separated by commas")
        if len(paths) == 1:
            return paths[0]
        seg = Segmenter.fastest(paths, num_threads=self.threads, flip=self.flip)
        if self._factory == self._load:
            self._segmenters[seg.path] = seg
        times = ", ".join(f"{p.name} {t:.2f} ms" for p, t in seg.timings_ms.items())
        threads = "the interpreter's default threads" if self.threads is None else f"{self.threads} thread{'s' * (self.threads != 1)}"
        self.model_choice = f"model: {seg.path.name}, the fastest here ({times} per invoke, {threads})"
        return seg.path

    def _detector(self, instance_model):
        from apps.common.keep import load_instance_detector

        return load_instance_detector(instance_model, num_threads=1, option="--instances")

    def _keeper(self, instance_model, keep):
        from apps.common.keep import PersonKeeper, load_instance_detector

        return PersonKeeper(load_instance_detector(instance_model, num_threads=1), keep=keep, max_rate=self.keep_rate)

    def _load(self, path):
        from kseg.runtime import Segmenter

        return Segmenter(path, num_threads=self.threads, flip=self.flip)

    def segmenter(self, path):
        """The loaded model at ``path`` (loaded on first use)."""
        if path not in self._segmenters:
            self._segmenters[path] = self._factory(path)
        return self._segmenters[path]

    def get_effect(self, name):
        """The effect called ``name`` (built on first use, then kept with its settings)."""
        if name not in self.effects:
            if name == "tryon" and self.parsing_model is None:
                raise KsegError(
                    "try-on needs the parsing model (upper_clothes, hair): exports/parsing.tflite was not "
                    "found; give --parsing-model PATH"
                )
            self.effects[name] = self.make_effect(name, **self.effect_args)
        return self.effects[name]

    def model_for(self, effect) -> Path:
        """Which model serves ``effect``: the parsing model for try-on, else the current person model."""
        return self.parsing_model if effect.model == "parsing" else self.person_models[self.model_i]

    def estimator(self, effect=None):
        """The ``MaskEstimator`` for ``effect`` (the current effect by default)."""
        from apps.common.refine import MaskEstimator

        effect = effect or self.effect
        path = self.model_for(effect)
        # try-on: the parsing masks are kept only where the person model sees a person
        gate_path = self.person_models[self.model_i] if effect.model == "parsing" else None
        if gate_path == path or (gate_path is not None and self.segmenter(gate_path).person_index is None):
            gate_path = None  # no separate person model: the parsing model alone
        key = (path, tuple(effect.needs), gate_path)
        if key not in self._estimators:
            self._estimators[key] = MaskEstimator(
                self.segmenter(path), names=effect.needs, work_scale=self.work_scale, refine=self.refine,
                smoothing=self.smoothing, gate=self.segmenter(gate_path) if gate_path is not None else None,
            )
        est = self._estimators[key]
        est.smoothing = self.smoothing
        est.refine = self.refine
        return est

    def speed_hint(self, stats, source_fps: float) -> str | None:
        """One line after a try-on run that fell behind its source with the full-size parsing model:
        the smaller input of ``exports/parsing-fast.tflite`` and the option that picks it; else None.

        Behind: under 90% of the source's frame rate over at least 30 frames, the model being the
        slowest stage (a slow disk or display is not the model's fault)."""
        fast = resolve(FAST_PARSING_MODEL)
        if (self.effect.model != "parsing" or self.parsing_model is None or not fast.is_file()
                or self.parsing_model.resolve() == fast.resolve() or stats.frames < 30
                or not source_fps or stats.fps >= 0.9 * source_fps):
            return None
        stages = dict(stats.stage_ms)
        infer = stages.get("infer", 0.0)
        if not stages or infer < max(stages.values()):
            return None
        try:
            from kseg.runtime.cards import read_card

            now, then = (read_card(p)["input"]["shape"][1:3] for p in (self.parsing_model, fast))
        except Exception:  # no card or no input in it: no hint rather than a wrong one
            return None
        work = then[0] * then[1] / (now[0] * now[1])
        if work >= 0.95:
            return None
        return (f"webcam: try-on ran at {stats.fps:.1f} frames/s, under the source's {source_fps:.0f}, the parsing model "
                f"taking {infer:.0f} ms a frame; {FAST_PARSING_MODEL} ({then[0]}×{then[1]} against "
                f"{now[0]}×{now[1]}, {work:.2f}× the work) keeps up better: --parsing-model {FAST_PARSING_MODEL}")

    def model_label(self) -> str:
        """The current model's file name (HUD)."""
        return self.model_for(self.effect).name

    def close(self):
        """Close the effects (a background video) and the keeper's detection thread."""
        for e in self.effects.values():
            e.close()
        if self.keeper is not None:
            self.keeper.close()

    # ------------------------------------------------------------ keys

    def bind(self, pipeline):
        """Make ``pipeline`` follow this app's effect and model; returns ``pipeline``."""
        self.pipeline = pipeline
        pipeline.on_key = self.on_key
        self._sync()
        return pipeline

    def _sync(self):
        p = getattr(self, "pipeline", None)
        if p is not None:
            est = self.estimator()
            est.reset()
            p.estimator = est
            p.effect = self.effect
            p.model_label = self.model_label()

    def select(self, name) -> bool:
        """Switch to effect ``name``; a missing model is reported and the switch skipped (``False``)."""
        try:
            self.effect = self.get_effect(name)
        except KsegError as e:
            print(f"webcam: {e}", file=sys.stderr)
            return False
        self._sync()
        return True

    def on_key(self, key: int) -> bool:
        """Handle one key; ``False`` means quit. What a key changed is one line on stderr."""
        ch = chr(key) if 0 <= key < 256 else ""
        if key in (27,) or ch == "q":
            return False
        said = self._apply_key(ch)
        if said:
            print(f"webcam: key {ch!r}: {said}", file=sys.stderr, flush=True)
        return True

    def _apply_key(self, ch: str) -> str | None:
        """Apply one key; returns what it changed (``None``: nothing)."""
        if ch in ("e", "\t"):
            i = EFFECT_ORDER.index(self.effect.name) if self.effect.name in EFFECT_ORDER else -1
            for j in range(1, len(EFFECT_ORDER) + 1):
                name = EFFECT_ORDER[(i + j) % len(EFFECT_ORDER)]
                if name != "tryon" or self.parsing_model is not None:
                    self.select(name)
                    break
        elif ch in "1234" and ch:
            if not self.select(EFFECT_ORDER[int(ch) - 1]):
                return None
        elif ch == "m":
            self.model_i = (self.model_i + 1) % len(self.person_models)
            self._sync()
        elif ch in ("+", "=", "]"):
            self.effect.adjust(0.1)
        elif ch in ("-", "_", "["):
            self.effect.adjust(-0.1)
        elif ch == "c" and hasattr(self.effect, "next_color"):
            self.effect.next_color()
        elif ch == "v" and hasattr(self.effect, "next_hair_color"):
            self.effect.next_hair_color()
        elif ch == "s":
            self.smoothing = 0.0 if self.smoothing > 0 else 0.6
            self._sync()
        elif ch == "r":
            self.refine = not self.refine
            self._sync()
        elif ch == "h" and self.pipeline.hud is not None:
            self.pipeline.hud.enabled = not self.pipeline.hud.enabled
            return f"HUD {'on' if self.pipeline.hud.enabled else 'off'}"
        else:
            return None
        if ch == "s":
            return f"temporal smoothing {'on' if self.smoothing > 0 else 'off'}"
        if ch == "r":
            return f"edge refinement {'on' if self.refine else 'off'}"
        return f"{self.effect.describe()}, {self.model_label()}"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m apps.webcam`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m apps.webcam",
        description="Portrait blur, background swap, virtual try-on and a mask overlay, live from a "
        "webcam, a video file or an image folder.",
        epilog="Keys: e/Tab next effect, 1-4 portrait/swap/tryon/mask, m next model, +/- strength, "
        "c/v garment/hair colour, s smoothing, r edge refinement, h HUD, q/Esc quit.",
    )
    p.add_argument("--source", default="0", help="camera index, video file, or image folder (default 0)")
    p.add_argument("--loop", action="store_true", help="loop a video or image folder")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(640, 480),
                   help="camera resolution to ask for (default 640 480)")
    p.add_argument("--effect", choices=EFFECT_ORDER, help="the effect to start with (default portrait; "
                   "mask with --instances)")
    p.add_argument("--strength", type=float, help="effect strength 0..1 (portrait: blur radius)")
    p.add_argument("--background", default="green",
                   help="swap: a colour (green, #00b140, 0,177,64), an image or a video (default green)")
    p.add_argument("--color", help="tryon: garment colour (default #2a6fdb)")
    p.add_argument("--hair-color", help="tryon: hair colour (default: hair unchanged)")
    p.add_argument("--texture", help="tryon: an image to re-dress the garment in (instead of --color)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"person model (default {DEFAULT_MODEL}); several exports of one model separated by "
                   "commas: the fastest on this CPU, timed at start (e.g. exports/portrait-selfie-fast.tflite,"
                   "exports/portrait-selfie-fast-float16.tflite)")
    p.add_argument("--fast-model", default=DEFAULT_FAST_MODEL, help="second person model for key m, if present")
    p.add_argument("--parsing-model", default=DEFAULT_PARSING_MODEL,
                   help=f"clothes/hair model for tryon (default {DEFAULT_PARSING_MODEL})")
    p.add_argument("--threads", type=int, default=1,
                   help="interpreter threads (default 1: the pipeline's threads already use both cores)")
    from apps.common.keep import DEFAULT_INSTANCE_MODEL, KEEP_CHOICES, KEEP_HELP

    p.add_argument("--keep", choices=KEEP_CHOICES, default="all",
                   help=f"portrait: which people stay sharp (default all). {KEEP_HELP}")
    p.add_argument("--instances", action="store_true",
                   help="mask effect: each person the instance model finds in a colour of their own, kept "
                   "from frame to frame (panoptic: background stuff, people as instances)")
    p.add_argument("--detect-rate", "--keep-rate", dest="detect_rate", type=float, default=DEFAULT_RATE,
                   help=f"--keep/--instances: at most this many instance detections per second, on their own "
                   f"thread (default {DEFAULT_RATE:g}; 0: as fast as they run)")
    p.add_argument("--instance-model", default=DEFAULT_INSTANCE_MODEL,
                   help=f"person instance model for --keep and --instances (default {DEFAULT_INSTANCE_MODEL})")
    p.add_argument("--out", help="write the result to a video file (.mp4 or .avi)")
    p.add_argument("--frames", help="write every result frame as PNG into this folder")
    p.add_argument("--virtual-cam", action="store_true", help="send the result to a virtual camera (pyvirtualcam)")
    win = p.add_mutually_exclusive_group()
    win.add_argument("--window", dest="window", action="store_true", default=None, help="show a window (default: when a display exists)")
    win.add_argument("--no-window", dest="window", action="store_false", help="no window (headless)")
    p.add_argument("--no-hud", action="store_true", help="no frames/s overlay")
    p.add_argument("--smoothing", type=float, default=0.6, help="temporal smoothing 0 (off)..0.95 (default 0.6)")
    p.add_argument("--no-refine", action="store_true", help="skip guided-filter edge refinement")
    p.add_argument("--flip", action="store_true",
                   help="test-time flip: run the models on each frame and its mirror image and average "
                        "(twice the model time; better hair in try-on)")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--sequential", action="store_true", help="one thread instead of the capture/infer/render pipeline")
    return p


def open_sinks(args, fps):
    """The sinks the arguments ask for; a window when a display exists unless ``--no-window``."""
    from apps.common.sinks import FrameDirSink, VideoFileSink, VirtualCameraSink, WindowSink, display_available

    sinks = []
    try:
        if args.out:
            sinks.append(VideoFileSink(args.out, fps=fps))
        if args.frames:
            sinks.append(FrameDirSink(args.frames))
        if args.virtual_cam:
            sinks.append(VirtualCameraSink(fps=fps))
        want_window = args.window if args.window is not None else display_available()
        if want_window:
            sinks.append(WindowSink("kseg " + args.effect))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    if not sinks:
        raise KsegError(
            "nothing to show or write: no display here (or --no-window); give --out out.mp4, --frames DIR "
            "or --virtual-cam"
        )
    return sinks


def run(args) -> int:
    """Run the app for parsed ``args``; returns the exit status."""
    from apps.common.hud import Hud
    from apps.common.pipeline import Pipeline
    from apps.common.sources import open_source

    effect_args = {"strength": args.strength, "background": args.background, "color": args.color,
                   "hair_color": args.hair_color, "texture": args.texture}
    # before loading any model: an output that cannot be written is one line, not a traceback later
    if args.out:
        check_writable(Path(args.out).parent, "--out")
    if args.frames:
        check_writable(args.frames, "--frames")
    args.effect = args.effect or ("mask" if args.instances else "portrait")
    app = App(model=args.model, parsing_model=args.parsing_model, fast_model=args.fast_model,
              threads=args.threads, effect=args.effect, effect_args=effect_args,
              smoothing=args.smoothing, refine=not args.no_refine, keep=args.keep,
              instance_model=args.instance_model, keep_rate=args.detect_rate, instances=args.instances,
              flip=args.flip)
    try:
        source = open_source(args.source, loop=args.loop, size=tuple(args.size))
        try:
            sinks = open_sinks(args, source.fps)
        except BaseException:
            source.close()
            raise
        pipe = Pipeline(source, sinks, app.effect, app.estimator(), hud=None if args.no_hud else Hud(),
                        threaded=not args.sequential, max_frames=args.max_frames, model_label=app.model_label())
        app.bind(pipe)
        if app.model_choice:
            print(app.model_choice, file=sys.stderr)
        print(f"{source.name} {source.shape[1]}×{source.shape[0]} → {', '.join(s.name for s in sinks)} "
              f"({app.effect.describe()}, {app.model_label()})", file=sys.stderr)
        try:
            stats = pipe.run()
        except KeyboardInterrupt:
            kept = [f"wrote {s.path} ({s.frames} frames, up to the interrupt)" for s in sinks if getattr(s, "written", False)]
            lost = [f"{s.path} not written (run it again for the whole video)" for s in sinks
                    if getattr(s, "path", None) is not None and s.frames and not getattr(s, "written", False)]
            raise Interrupted("; ".join(kept + lost)) from None
    finally:
        app.close()
    print(stats.format_line())
    print(f"webcam: stopped ({stats.ended})", file=sys.stderr)
    hint = app.speed_hint(stats, source.fps)
    if hint:
        print(hint, file=sys.stderr)
    for s in sinks:
        if getattr(s, "written", False):
            print(f"wrote {s.path}")
        elif isinstance(getattr(s, "folder", None), Path) and s.frames:
            print(f"wrote {s.frames} frames to {s.folder}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m apps.webcam``; a user error is one line on stderr, exit status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)

    def terminate(signum, frame):  # SIGTERM ends the app as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return run(args)
    except KsegError as e:
        print(f"webcam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        hint = str(e).strip()
        print(f"webcam: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        if argv is None:  # this process's command line: exit 130, not a SIGINT death (LiteRT's import)
            forget_escaped_interrupt()
        return 130
    except OSError as e:  # a write the machine refused (full disk, read-only) that nothing above named
        if write_errno(e) is None:
            raise
        print(f"webcam: error: {write_failure(e.filename or args.out or args.frames, e, '--out')}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
