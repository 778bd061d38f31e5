"""The apps writing a video: full disk, read-only folder, a corrupt frame, Ctrl-C, short clips
(apps/common/sinks.py, apps/common/pipeline.py, apps/webcam.py, apps/demo.py).

Never "wrote" for a file that is not complete: a video that cannot be finished is one line and a
non-zero exit; a failed or interrupted run over files leaves no partial video; a camera's
recording up to the interrupt is kept, finalized.
"""

import shutil

import numpy as np
import pytest

from .conftest import ROOT, kseg_lines

CLIP = ROOT / "assets" / "book.mkv"
MODEL = ROOT / "exports" / "portrait.tflite"
pytestmark = pytest.mark.skipif(not (CLIP.is_file() and MODEL.is_file()), reason="needs the shipped clip and model")


def webcam(*argv):
    from apps.webcam import main

    return main(["--model", str(MODEL), "--fast-model", "", "--parsing-model", "", "--no-window", "--no-hud",
                 *map(str, argv)])


def test_video_on_a_full_disk_is_an_error_not_a_success(full_dir, monkeypatch, capsys, fault):
    """Before: exit 0, "wrote out.mp4", a 100 kB file that does not play ("moov atom not found")."""
    folder, mounted = full_dir
    if not mounted:  # what FFmpeg does on ENOSPC: frames stop reaching the file, the index is lost
        import cv2

        real = cv2.VideoWriter

        class Full:
            def __init__(self, path, *a):
                self.w, self.n = real(path, *a), 0

            def isOpened(self):
                return self.w.isOpened()

            def write(self, f):
                self.n += 1
                if self.n <= 2:
                    self.w.write(f)

            def release(self):
                self.w.release()

        monkeypatch.setattr(cv2, "VideoWriter", Full)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    rc = webcam("--source", CLIP, "--out", folder / "out.mp4", "--max-frames", "40")
    out, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check(f"app --out on a full disk ({'tmpfs' if mounted else 'writer patched'})",
                "exit 2, 'cannot write video ... (no space left on device ...)', no file, no 'wrote'",
                f"exit {rc}: {lines}; files {sorted(p.name for p in folder.iterdir() if p.name != 'filler')}",
                rc == 2 and len(lines) == 1 and "cannot write video" in lines[0] and "no space left" in lines[0]
                and "wrote" not in out and not (folder / "out.mp4").exists()
                and not [p for p in folder.iterdir() if p.name.startswith(".out")])


def test_video_to_a_read_only_folder(readonly_dir, capsys, fault):
    """Before: a Python traceback (OSError Errno 30)."""
    rc = webcam("--source", CLIP, "--out", readonly_dir / "out.mp4", "--max-frames", "5")
    err = capsys.readouterr().err
    lines = kseg_lines(err)
    fault.check("app --out on a read-only folder", "exit 2, 'cannot write to DIR (read-only file system): ...'",
                f"exit {rc}: {lines}", rc == 2 and lines == [
                    f"webcam: error: cannot write to {readonly_dir} (read-only file system): choose another --out"]
                and "Traceback" not in err)


@pytest.fixture(scope="module")
def frames_with_a_corrupt_jpeg(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("frames")
    cap = cv2.VideoCapture(str(CLIP))
    for i in range(8):
        ok, bgr = cap.read()
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), bgr)
    cap.release()
    (folder / "004.jpg").write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).bytes(4000))
    return folder


def test_a_corrupt_frame_leaves_no_partial_video(frames_with_a_corrupt_jpeg, tmp_path, capsys, fault):
    """Before: the run stopped on the corrupt JPEG and left a short .mp4 at --out."""
    rc = webcam("--source", frames_with_a_corrupt_jpeg, "--out", tmp_path / "out.mp4", "--sequential")
    out, err = capsys.readouterr()
    lines = kseg_lines(err)
    left = sorted(p.name for p in tmp_path.iterdir())
    fault.check("app over an image folder with a corrupt JPEG", "exit 2, one line naming 004.jpg, no .mp4",
                f"exit {rc}: {lines}; files {left}",
                rc == 2 and len(lines) == 1 and "004.jpg" in lines[0] and not left and "wrote" not in out)


def test_sigint_during_an_app_run_over_a_file(tmp_path, capsys, sigint_at, fault):
    out_mp4 = tmp_path / "videos" / "out.mp4"
    with sigint_at("app-frame") as sent:
        rc = webcam("--source", CLIP, "--out", out_mp4, "--max-frames", "60")
    o, err = capsys.readouterr()
    lines = kseg_lines(err)
    fault.check("app: SIGINT mid-run over a video file", "exit 130, 'interrupted; ... not written', no .mp4",
                f"exit {rc}: {lines}", sent and rc == 130 and len(lines) == 1 and "not written" in lines[0]
                and not list(out_mp4.parent.iterdir()) and "Traceback" not in err)


def test_interrupting_a_camera_keeps_the_recording(tmp_path, fault):
    from apps.common.pipeline import Pipeline
    from apps.common.refine import MaskEstimator
    from apps.common.sinks import VideoFileSink
    from apps.common.sources import ArraySource, VideoSource
    from apps.effects import make_effect
    from tests.apps.fakes import FakeSegmenter

    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(30)]

    def stop(i, frame, out):
        if i == 9:
            raise KeyboardInterrupt

    path = tmp_path / "rec.mp4"
    sink = VideoFileSink(path, fps=10)
    pipe = Pipeline(ArraySource(frames, live=True, name="camera"), [sink], make_effect("portrait"),
                    MaskEstimator(FakeSegmenter(input_size=(12, 16))), threaded=False, on_frame=stop)
    with pytest.raises(KeyboardInterrupt):
        pipe.run()
    n = len(list(VideoSource(path))) if path.is_file() else 0
    fault.check("app: Ctrl-C on a camera recording", "the video so far, finalized and playable",
                f"{n} frames in {path.name if path.is_file() else 'no file'}", sink.written and n == 10)


def test_demo_on_a_clip_shorter_than_its_header(tmp_path, capsys, fault):
    """Before: "wrote demo_out/portrait.mp4 and demo_out/before_after.png", the PNG did not exist."""
    from kseg.cli import main

    clip = tmp_path / "cut.mkv"
    clip.write_bytes(CLIP.read_bytes()[:120_000])  # the header still says 110 frames
    out = tmp_path / "demo"
    rc = main(["demo", "--source", str(clip), "--out", str(out), "--model", str(MODEL)])
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("wrote")]
    fault.check("kseg demo on a truncated clip", "exit 0, before_after.png and the video exist as said",
                f"exit {rc}: {said}; files {sorted(p.name for p in out.iterdir())}",
                rc == 0 and (out / "before_after.png").is_file() and (out / "portrait.mp4").is_file()
                and len(said) == 1)
