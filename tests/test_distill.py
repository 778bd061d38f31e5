"""Distillation data: teacher probabilities become exact 0/1/255 masks in a masks dataset."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from kseg.distill import IGNORE, SelfieTeacher, label_frames, teacher_mask, video_frames
from kseg.errors import KsegError


def test_teacher_mask_thresholds():
    p = np.array([[0.0, 0.3, 0.31, 0.5, 0.69, 0.7, 1.0]], np.float32)
    np.testing.assert_array_equal(teacher_mask(p, 0.3, 0.7), [[0, 0, IGNORE, IGNORE, IGNORE, 1, 1]])
    np.testing.assert_array_equal(teacher_mask(p, 0.5, 0.5), [[0, 0, 0, 1, 1, 1, 1]])  # p = high: person
    with pytest.raises(KsegError, match="low <= high"):
        teacher_mask(p, 0.8, 0.2)


def _frames(n=3, h=24, w=32):
    # smooth frames (JPEG keeps them to a few levels): red ramps left to right, shifted per frame
    x = np.linspace(0, 255, w)[None, :, None]
    return [(f"f{i}", np.broadcast_to(np.concatenate([(x + 40 * i) % 256, np.full_like(x, 90), np.full_like(x, 160)], -1),
                                      (h, w, 3)).astype(np.uint8).copy()) for i in range(n)]


def test_label_frames_writes_a_masks_dataset(tmp_path):
    """A fake teacher whose probability is the red channel / 255: every written label is
    exactly teacher_mask of it, and the folder reads back as a 2-class dataset with ignore."""
    frames = _frames()
    ds = label_frames(lambda rgb: rgb[..., 0] / 255.0, frames, tmp_path / "out", low=0.3, high=0.7)
    assert ds.class_names == ("background", "person") and len(ds) == 3
    for i, (name, rgb) in enumerate(frames):
        image, label = ds.load(i)
        want = teacher_mask(rgb[..., 0] / 255.0, 0.3, 0.7)
        np.testing.assert_array_equal(label, want)
        assert np.abs(image.astype(int) - rgb).mean() < 8  # JPEG q95 (the ramp wraps: one sharp edge)
    meta = (tmp_path / "out" / "teacher.json").read_text()
    assert '"frames": 3' in meta


def test_label_frames_min_person_and_atomic_replace(tmp_path):
    out = tmp_path / "out"
    label_frames(lambda rgb: np.ones(rgb.shape[:2]), _frames(2), out)
    # all frames below min_person: an error, and the earlier dataset is untouched
    with pytest.raises(KsegError, match="no frames"):
        label_frames(lambda rgb: np.zeros(rgb.shape[:2]), _frames(4), out, min_person=0.1)
    assert len(list((out / "images").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a half-person teacher keeps frames with at least 40% person
    ds = label_frames(lambda rgb: np.tile(np.arange(rgb.shape[1]) < rgb.shape[1] // 2, (rgb.shape[0], 1)).astype(float),
                      _frames(4), out, min_person=0.4)
    assert len(ds) == 4 and len(list((out / "images").iterdir())) == 4


def test_video_frames_every_nth(tmp_path):
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        vw.write(np.full((48, 64, 3), i * 20, np.uint8))
    vw.release()
    got = list(video_frames([path], every=3))
    assert [n for n, _ in got] == ["clip_00000", "clip_00003", "clip_00006", "clip_00009"]
    assert got[1][1].shape == (48, 64, 3) and abs(int(got[1][1].mean()) - 60) <= 3
    with pytest.raises(KsegError, match="cannot open video"):
        list(video_frames([tmp_path / "missing.mp4"]))


@pytest.mark.shared_data
def test_selfie_teacher_on_a_real_portrait(shared_data):
    """MediaPipe's selfie model labels a real portrait: its confident person pixels overlap
    the ground-truth mask with IoU > 0.8."""
    peers = Path(shared_data).parent / "peers" / "selfie_segmentation.tflite"
    if not peers.is_file():
        pytest.skip(f"{peers} not found")
    teacher = SelfieTeacher(peers)
    img = sorted((Path(shared_data) / "portraits" / "images").iterdir())[0]
    rgb = cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB)
    gt = cv2.imread(str(Path(shared_data) / "portraits" / "masks" / f"{img.stem}.png"), 0) > 127
    mask = teacher_mask(teacher(rgb))
    person = mask == 1
    assert (person & gt).sum() / (person | gt).sum() > 0.8


@pytest.mark.shared_data
def test_kseg_data_distill_command(shared_data, tmp_path):
    """The CLI: MediaPipe's model labels every 20th frame of one webcam clip; the folder reads back."""
    import subprocess
    import sys

    peers = Path(shared_data).parent / "peers" / "selfie_segmentation.tflite"
    clip = Path(shared_data) / "videos" / "asl_gestures" / "yes.mkv"
    if not peers.is_file() or not clip.is_file():
        pytest.skip("teacher or clip missing")
    out = tmp_path / "teacher"
    r = subprocess.run([sys.executable, "-m", "kseg", "data", "distill", str(clip), "--teacher", str(peers),
                        "--out", str(out), "--every", "20"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "frames labelled by selfie_segmentation.tflite" in r.stdout
    from kseg.data.readers import open_masks

    ds = open_masks(out, class_names=("background", "person"), binary=False)
    assert len(ds) == len(list((out / "images").iterdir())) >= 3
    _, label = ds.load(0)
    assert set(np.unique(label).tolist()) <= {0, 1, IGNORE} and (label == 1).mean() > 0.1
    bad = subprocess.run([sys.executable, "-m", "kseg", "data", "distill", str(clip), "--teacher",
                          str(tmp_path / "none.tflite"), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "teacher" in bad.stderr and "Traceback" not in bad.stderr
