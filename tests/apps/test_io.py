"""Sources and sinks with real files; error cases; the webcam CLI and kseg demo end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from apps.common.pipeline import Pipeline
from apps.common.refine import MaskEstimator
from apps.common.sinks import FrameDirSink, NullSink, VideoFileSink, VirtualCameraSink, WindowSink, display_available
from apps.common.sources import ArraySource, ImageFolderSource, Source, VideoSource, open_source
from apps.effects import Portrait
from kseg.errors import KsegError
from tests.apps.fakes import FakeSegmenter, ListSink

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "book.mkv"
SHIPPED = REPO / "exports" / "portrait.tflite"


def solid(rgb, shape=(48, 64)):
    f = np.empty(shape + (3,), np.uint8)
    f[:] = rgb
    return f


COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (240, 240, 240), (20, 20, 20)]


def write_video(path, frames, fps=10):
    with VideoFileSink(path, fps=fps) as sink:
        for f in frames:
            sink.write(f)
    return sink


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_sink_writes_a_playable_file_with_every_frame_in_rgb_order(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    sink = VideoFileSink(path, fps=10)
    for c in COLOURS:
        sink.write(solid(c))
        assert not path.exists()  # written under a temporary name until closed
    sink.close()
    sink.close()  # twice is harmless
    assert path.is_file() and not list(tmp_path.glob(".out*"))
    with VideoSource(path) as src:
        frames = list(src)
        assert src.shape == (48, 64) and src.fps == pytest.approx(10, abs=0.01)
    assert len(frames) == len(COLOURS)
    for f, c in zip(frames, COLOURS):
        assert np.abs(f.reshape(-1, 3).mean(0) - c).max() < 12  # lossy codec, right channel order


def test_video_sink_without_frames_leaves_no_file(tmp_path):
    VideoFileSink(tmp_path / "none.mp4").close()
    assert list(tmp_path.iterdir()) == []


def test_video_sink_rejects_unknown_suffix_and_size_change(tmp_path):
    with pytest.raises(KsegError, match="unknown suffix"):
        VideoFileSink(tmp_path / "x.gif")
    sink = VideoFileSink(tmp_path / "x.mp4")
    sink.write(solid((0, 0, 0)))
    with pytest.raises(KsegError, match="keeps one size"):
        sink.write(solid((0, 0, 0), (32, 32)))
    sink.close()


def test_video_source_loops_and_reopens(tmp_path):
    write_video(tmp_path / "c.avi", [solid(c) for c in COLOURS[:3]])
    src = VideoSource(tmp_path / "c.avi", loop=True)
    got = [src.read().reshape(-1, 3).mean(0).argmax() for _ in range(8)]
    src.close()
    assert got == [0, 1, 2, 0, 1, 2, 0, 1] and src.passes == 2


def test_frame_dir_sink_writes_lossless_pngs(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    with FrameDirSink(tmp_path / "frames") as sink:
        for f in frames:
            sink.write(f)
    files = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in files] == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    for p, f in zip(files, frames):
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), f)


def test_image_folder_source_sorted_resized_and_looped(tmp_path):
    for name, c, shape in (("b.png", COLOURS[1], (48, 64)), ("a.png", COLOURS[0], (48, 64)), ("c.jpg", COLOURS[2], (96, 128))):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(solid(c, shape), cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), loop=True)
    assert isinstance(src, ImageFolderSource) and src.frame_count == 3
    got = [src.read() for _ in range(4)]
    assert all(f.shape == (48, 64, 3) for f in got)
    assert [int(f.reshape(-1, 3).mean(0).argmax()) for f in got] == [0, 1, 2, 0]


def test_source_errors_are_one_line(tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    cases = [
        (lambda: open_source(str(tmp_path / "missing.mp4")), "not found"),
        (lambda: open_source(str(tmp_path / "garbage.mp4")), "garbage.mp4"),
        (lambda: open_source(str(tmp_path / "empty")), "no images"),
        (lambda: open_source(str(tmp_path / "bad.png")), "cannot read image"),
        (lambda: open_source("97"), "no camera at index 97"),
    ]
    for make, match in cases:
        with pytest.raises(KsegError, match=match) as e:
            make()
        assert "\n" not in str(e.value)


@pytest.mark.skipif(display_available(), reason="a display exists here")
def test_window_sink_without_display_says_what_to_do():
    with pytest.raises(KsegError, match="--out"):
        WindowSink()


def test_virtual_camera_without_pyvirtualcam_says_how_to_install():
    try:
        import pyvirtualcam  # noqa: F401

        pytest.skip("pyvirtualcam is installed")
    except ImportError:
        pass
    with pytest.raises(KsegError, match="pip install pyvirtualcam"):
        VirtualCameraSink()


class Unplugged(Source):
    """A camera that gives three frames, then disconnects."""

    live = True
    name = "camera 0"

    def __init__(self):
        super().__init__()
        self.shape = (48, 64)
        self.n = 0

    def read(self, out=None):
        self.n += 1
        if self.n > 3:
            raise KsegError("camera 0 stopped delivering frames (unplugged?); the output so far was saved")
        out = self.new_frame() if out is None else out
        out[:] = COLOURS[self.n - 1]
        return out


@pytest.mark.parametrize("threaded", [False, True])
def test_camera_lost_mid_stream_ends_with_the_error_and_a_playable_file(tmp_path, threaded):
    path = tmp_path / "live.mp4"
    est = MaskEstimator(FakeSegmenter(input_size=(12, 16)))
    pipe = Pipeline(Unplugged(), [VideoFileSink(path, fps=10)], Portrait(0.5), est, threaded=threaded)
    with pytest.raises(KsegError, match="stopped delivering"):
        pipe.run()
    with VideoSource(path) as src:
        assert len(list(src)) == pipe.stats.frames >= 1
    assert pipe.stats.frames + pipe.stats.dropped == 3  # every frame read before the loss: shown or dropped as stale


def test_live_source_drops_stale_frames_and_accounts_for_every_frame():
    import time

    class Slow(Portrait):
        def apply(self, frame, masks, out=None):
            time.sleep(0.01)
            return super().apply(frame, masks, out)

    frames = [np.full((48, 64, 3), i, np.uint8) for i in range(60)]
    est = MaskEstimator(FakeSegmenter(input_size=(12, 16)))
    sink = ListSink()
    stats = Pipeline(ArraySource(frames, live=True), [sink], Slow(0.5), est, threaded=True).run()
    assert stats.dropped > 0 and stats.frames + stats.dropped == 60
    seen = [int(f[0, 0, 0]) for f in sink.frames]
    assert seen == sorted(seen)  # order kept; only stale frames skipped


def test_max_frames_and_window_close_stop_the_run():
    est = MaskEstimator(FakeSegmenter(input_size=(12, 16)))
    frames = [np.zeros((48, 64, 3), np.uint8)] * 5
    stats = Pipeline(ArraySource(frames, loop=True), [NullSink()], Portrait(0.5), est, max_frames=7).run()
    assert stats.frames == 7 and stats.ended == "max frames"

    class ClosedAfterTwo(ListSink):
        def write(self, rgb):
            super().write(rgb)
            self.closed_by_user = len(self.frames) >= 2

    sink = ClosedAfterTwo()
    stats = Pipeline(ArraySource(frames, loop=True), [sink], Portrait(0.5), est).run()
    assert stats.frames == 2 and stats.ended == "window closed" and sink.closed


def _fake_app(monkeypatch, tmp_path):
    from apps import webcam

    model = tmp_path / "m.tflite"
    model.write_bytes(b"fake")
    monkeypatch.setattr(webcam.App, "_load", lambda self, p: FakeSegmenter(input_size=(24, 32)))
    return model


def test_webcam_cli_headless_on_a_video(tmp_path, monkeypatch, capsys):
    from apps.webcam import main

    model = _fake_app(monkeypatch, tmp_path)
    clip = tmp_path / "clip.avi"
    write_video(clip, [solid(c) for c in COLOURS])
    out = tmp_path / "o.mp4"
    code = main(["--source", str(clip), "--model", str(model), "--out", str(out), "--no-window",
                 "--effect", "swap", "--background", "black", "--frames", str(tmp_path / "png")])
    assert code == 0
    assert "5 frames" in capsys.readouterr().out
    with VideoSource(out) as src:
        assert len(list(src)) == 5
    assert len(list((tmp_path / "png").glob("*.png"))) == 5


def test_webcam_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from apps.webcam import main

    model = _fake_app(monkeypatch, tmp_path)
    cases = [
        (["--source", str(tmp_path / "nope.mp4"), "--model", str(model), "--out", "x.mp4"], "not found"),
        (["--source", str(CLIP), "--model", str(tmp_path / "none.tflite"), "--out", "x.mp4"], "model"),
        (["--source", str(CLIP), "--model", str(model), "--no-window"], "nothing to show"),
        (["--source", str(CLIP), "--model", str(model), "--effect", "tryon", "--parsing-model",
          str(tmp_path / "p.tflite"), "--out", "x.mp4"], "try-on needs the parsing model"),
        (["--source", str(CLIP), "--model", str(model), "--effect", "swap", "--background",
          str(tmp_path / "bg.jpg"), "--out", str(tmp_path / "x.mp4")], "background image"),
    ]
    for argv, match in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("webcam: error:") and match in err[-1], err
    assert not (tmp_path / "x.mp4").exists()


def test_webcam_bad_model_file_is_one_line(tmp_path, capsys):
    from apps.webcam import main

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    assert main(["--source", str(CLIP), "--model", str(bad), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "not a TFLite model" in capsys.readouterr().err


def test_app_keys_switch_effect_strength_and_model(tmp_path, monkeypatch):
    from apps.common.hud import Hud
    from apps.webcam import App

    model = _fake_app(monkeypatch, tmp_path)
    app = App(model=model, parsing_model=None, fast_model=None)
    pipe = app.bind(Pipeline(ArraySource([solid((0, 0, 0))]), [NullSink()], app.effect, app.estimator(), hud=Hud()))
    assert pipe.effect.name == "portrait" and pipe.effect.strength == pytest.approx(0.5)
    app.on_key(ord("+"))
    assert pipe.effect.strength == pytest.approx(0.6)
    app.on_key(ord("e"))
    assert pipe.effect.name == "swap"  # tryon skipped: no parsing model
    app.on_key(ord("e"))
    assert pipe.effect.name == "mask"
    app.on_key(ord("3"))  # tryon without a parsing model: reported, not switched
    assert pipe.effect.name == "mask"
    app.on_key(ord("s"))
    assert pipe.estimator.smoothing == 0.0
    assert app.on_key(ord("q")) is False


def test_app_keys_say_what_they_changed(tmp_path, monkeypatch, capsys):
    from apps.common.hud import Hud
    from apps.webcam import App

    model = _fake_app(monkeypatch, tmp_path)
    app = App(model=model, parsing_model=None, fast_model=None)
    app.bind(Pipeline(ArraySource([solid((0, 0, 0))]), [NullSink()], app.effect, app.estimator(), hud=Hud()))
    for ch in "2+3hrx":
        app.on_key(ord(ch))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "webcam: key '2': swap #00b140, m.tflite",
        "webcam: key '+': swap #00b140, m.tflite",
        "webcam: try-on needs the parsing model (upper_clothes, hair): exports/parsing.tflite was not found; "
        "give --parsing-model PATH",  # '3': reported, nothing changed
        "webcam: key 'h': HUD off",
        "webcam: key 'r': edge refinement off",
    ]  # 'x' is no key: nothing


def test_kseg_demo_reports_a_missing_model_in_one_line(tmp_path, capsys):
    from kseg.cli import main

    assert main(["demo", "--model", str(tmp_path / "none.tflite"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kseg: error: model") and "\n" not in err


@pytest.mark.skipif(not SHIPPED.is_file(), reason="exports/portrait.tflite not shipped yet")
def test_kseg_demo_keep_names_a_missing_instance_model(tmp_path, capsys):
    from kseg.cli import main

    missing = tmp_path / "people.tflite"
    assert main(["demo", "--keep", "largest", "--instance-model", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "people.tflite" in err and "\n" not in err
    assert not (tmp_path / "portrait.mp4").exists()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="exports/portrait.tflite not shipped yet")
def test_kseg_demo_with_the_shipped_model(tmp_path, capsys):
    from kseg.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert "frames/s" in capsys.readouterr().out
    with VideoSource(tmp_path / "portrait.mp4") as src:
        assert len(list(src)) == 109 and src.shape == (480, 640)
    png = cv2.imread(str(tmp_path / "before_after.png"))
    assert png.shape == (480, 640 * 2 + 8, 3)


def test_window_sink_shows_bgr_reads_keys_and_notices_a_closed_window(monkeypatch):
    from apps.common import sinks

    shown, keys = [], iter([ord("e"), -1, ord("q")])
    visible = iter([1.0, 1.0, 0.0])
    monkeypatch.setattr(sinks, "display_available", lambda: True)
    monkeypatch.setattr(cv2, "namedWindow", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(cv2, "imshow", lambda title, img: shown.append(img.copy()), raising=False)
    monkeypatch.setattr(cv2, "waitKey", lambda ms: next(keys, -1), raising=False)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: next(visible, 0.0), raising=False)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None, raising=False)
    win = sinks.WindowSink("t")
    got = []
    for _ in range(3):
        win.write(solid((250, 10, 10)))
        got.append(win.poll_key())
    win.close()
    assert tuple(shown[0][0, 0]) == (10, 10, 250)  # shown as BGR
    assert got == [ord("e"), -1, ord("q")]
    assert win.closed_by_user and win.frames == 3


@pytest.mark.skipif(not (REPO / "exports" / "parsing-fast.tflite").is_file(), reason="exports/parsing-fast.tflite not shipped")
def test_tryon_that_falls_behind_its_source_is_told_of_the_fast_parsing_model(monkeypatch):
    """After a try-on run under 90% of the source's rate with the model the slowest stage, one line names
    exports/parsing-fast.tflite with the sizes read from the two cards; no line when it kept up, when
    another stage was slower, on a short run, or already with the fast model."""
    from apps.common.pipeline import RunStats
    from apps.webcam import App

    monkeypatch.chdir(REPO)
    app = App(parsing_model="exports/parsing.tflite", effect="tryon", segmenter_factory=lambda p: None)
    slow = RunStats(frames=120, wall_s=120 / 16.4, stage_ms={"capture": 1.0, "infer": 38.0, "refine": 9.0})
    hint = app.speed_hint(slow, 30.0)
    assert hint == ("webcam: try-on ran at 16.4 frames/s, under the source's 30, the parsing model taking 38 ms a "
                    "frame; exports/parsing-fast.tflite (320×320 against 384×384, 0.69× the work) keeps up better: "
                    "--parsing-model exports/parsing-fast.tflite")
    kept_up = RunStats(frames=120, wall_s=120 / 28.0, stage_ms=slow.stage_ms)
    disk_bound = RunStats(frames=120, wall_s=120 / 16.4, stage_ms={"infer": 38.0, "output": 60.0})
    short = RunStats(frames=10, wall_s=10 / 16.4, stage_ms=slow.stage_ms)
    assert app.speed_hint(kept_up, 30.0) is None and app.speed_hint(disk_bound, 30.0) is None
    assert app.speed_hint(short, 30.0) is None
    fast = App(parsing_model="exports/parsing-fast.tflite", effect="tryon", segmenter_factory=lambda p: None)
    assert fast.speed_hint(slow, 30.0) is None
    portrait = App(parsing_model="exports/parsing.tflite", effect="portrait", segmenter_factory=lambda p: None)
    assert portrait.speed_hint(slow, 30.0) is None


def test_flip_option_reaches_the_segmenters(monkeypatch):
    """``--flip`` (App(flip=True)) opens every model with the runtime's test-time flip."""
    from apps.webcam import App, build_parser

    assert build_parser().parse_args(["--flip"]).flip is True
    assert build_parser().parse_args([]).flip is False
    for flip in (False, True):
        app = App(model="exports/portrait.tflite", parsing_model="exports/parsing.tflite", fast_model=None, flip=flip)
        assert app.segmenter(app.person_models[0]).flip is flip
        assert app.segmenter(app.parsing_model).flip is flip
