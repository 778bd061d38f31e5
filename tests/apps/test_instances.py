"""Instance colours in the mask overlay: people followed by mask IoU, the semantic mask split among them.

Fake detectors return known rectangles; colours are checked pixel by pixel against the blend
``round(0.5 · frame + 0.5 · colour)`` (``instance_strength`` 0.5, the semantic mask 1 inside the
person, so the background tint does not reach it).
"""

from __future__ import annotations

import numpy as np
import pytest

from apps.common.instances import InstanceTracks, mask_iou, nearest_seed, split_people
from apps.effects import MaskOverlay
from kseg.errors import KsegError
from kseg.runtime import instance_colors
from tests.apps.fakes import FakeClock, GatedDetector

H, W = 120, 160
LEFT = (20, 10, 75, 110)  # x1, y1, x2, y2: two people touching at x = 75..80
RIGHT = (80, 20, 140, 110)
C0, C1, C2 = (tuple(int(v) for v in c) for c in instance_colors(3))


def rect(box, shape=(H, W)):
    m = np.zeros(shape, bool)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = True
    return m


def detections(*boxes, scores=None):
    """A detector: these rectangles (frame pixels) at whatever size it is handed, best score first."""
    scores = list(scores or np.linspace(0.9, 0.6, len(boxes)))

    def detect(rgb):
        h, w = rgb.shape[:2]
        sy, sx = h / H, w / W
        b = np.array([[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for x1, y1, x2, y2 in boxes], np.float32).reshape(-1, 4)
        masks = np.stack([rect(tuple(int(round(v)) for v in bb), (h, w)) for bb in b]).astype(np.uint8) if boxes \
            else np.zeros((0, h, w), np.uint8)
        return {"boxes": b, "scores": np.array(scores, np.float32), "masks": masks}

    return detect


def scripted(*script):
    """A detector that returns the scripted detectors' answers one call after the other (then the last)."""
    calls = []

    def detect(rgb):
        calls.append(1)
        return script[min(len(calls), len(script)) - 1](rgb)

    return detect


def noise(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def semantic(*boxes):
    a = np.zeros((H, W, 1), np.float32)
    for b in boxes:
        a[rect(b)] = 1.0
    return a


def blend(frame, color):
    return np.rint(0.5 * frame.astype(np.float64) + 0.5 * np.array(color, np.float64))


def colour_of(out, frame, box, margin=4):
    """Which of C0, C1, C2 (or None) every pixel of ``box`` shrunk by ``margin`` is blended with."""
    x1, y1, x2, y2 = box
    ys, xs = slice(y1 + margin, y2 - margin), slice(x1 + margin, x2 - margin)
    for name, c in (("C0", C0), ("C1", C1), ("C2", C2)):
        if np.abs(out[ys, xs].astype(np.float64) - blend(frame[ys, xs], c)).max() <= 1:
            return name
    return None


# ------------------------------------------------------------------ people across detections


def test_mask_iou_by_hand():
    a = np.stack([rect((0, 0, 10, 10)), rect((20, 0, 30, 10))])
    b = np.stack([rect((5, 0, 15, 10))])
    np.testing.assert_allclose(mask_iou(a, b), [[50 / 150], [0.0]])


def test_tracks_keep_ids_and_colour_slots_then_let_go():
    t = InstanceTracks(min_iou=0.3, hold=2)
    people = t.update(np.stack([rect(LEFT), rect(RIGHT)]), [0.9, 0.8])
    assert [(p.id, p.slot) for p in people] == [(1, 0), (2, 1)]
    # next detection: order swapped (right now scores higher), both moved 4 px: same ids and slots
    moved_l, moved_r = (24, 10, 79, 110), (84, 20, 144, 110)
    people = t.update(np.stack([rect(moved_r), rect(moved_l)]), [0.95, 0.7])
    assert [(p.id, p.slot, p.score) for p in people] == [(1, 0, pytest.approx(0.7)), (2, 1, pytest.approx(0.95))]
    assert rect(moved_l)[people[0].mask].all()
    # the right person is missed once: held with its last mask; a second time: let go
    people = t.update(np.stack([rect(moved_l)]), [0.9])
    assert [(p.id, p.missed) for p in people] == [(1, 0), (2, 1)]
    seeds = t.seeds((H, W))
    assert seeds[50, 30] == 1 and seeds[50, 110] == 2
    people = t.update(np.stack([rect(moved_l)]), [0.9])
    assert [p.id for p in people] == [1]
    # a newcomer gets a new id and the first free colour slot (the one person 2 had)
    people = t.update(np.stack([rect(moved_l), rect((120, 0, 160, 60))]), [0.9, 0.8])
    assert [(p.id, p.slot) for p in people] == [(1, 0), (3, 1)]


def test_split_people_nearest_person_within_claimed_regions():
    fg = rect(LEFT) | rect((75, 10, 80, 110)) | rect(RIGHT) | rect((145, 0, 160, 20))  # a stray region top right
    seeds = np.zeros((H, W), np.int32)
    seeds[rect((30, 30, 60, 90))] = 1  # coarse instance masks inside each person
    seeds[rect((95, 40, 130, 100))] = 2
    labels = split_people(fg, seeds)
    assert (labels[fg & (np.arange(W) < 60)[None, :]] == 1).all()
    assert (labels[fg & (np.arange(W) >= 95)[None, :] & ~rect((145, 0, 160, 20))] == 2).all()
    assert (labels[~fg] == 0).all() and (labels[rect((145, 0, 160, 20))] == 0).all()  # nobody's region
    # on row 50 the seam lies halfway between the seeds' nearest columns (59 and 95)
    row = labels[50, 60:95]
    seam = 60 + int(np.argmax(row == 2))
    assert 76 <= seam <= 78 and (row[: seam - 60] == 1).all() and (row[seam - 60:] == 2).all()
    np.testing.assert_array_equal(split_people(fg, seeds, nearest=nearest_seed(seeds)), labels)
    assert not split_people(fg, np.zeros((H, W), np.int32)).any()


# ------------------------------------------------------------------ the overlay


def test_each_person_in_a_colour_of_their_own():
    frame = noise()
    effect = MaskOverlay(strength=0.6, color="#ff0000", instances=detections(LEFT, RIGHT), threaded=False)
    out = effect.apply(frame, semantic(LEFT, RIGHT))
    assert colour_of(out, frame, LEFT) == "C0" and colour_of(out, frame, RIGHT) == "C1"
    assert np.abs(np.subtract(C0, C1)).sum() > 100  # far apart colours
    plain = MaskOverlay(strength=0.6, color="#ff0000").apply(frame, semantic(LEFT, RIGHT))
    away = ~(rect((16, 6, 144, 114)))
    np.testing.assert_array_equal(out[away], plain[away])  # the background as without instances
    assert [p["id"] for p in effect.people] == [1, 2] and effect.describe().endswith("2 people")
    assert [p["color"] for p in effect.people] == [C0, C1]


def test_colours_stay_with_people_when_the_detector_reorders_them():
    frame = noise(1)
    # the detector's order (and scores) flip every call; the colours must not
    effect = MaskOverlay(instances=scripted(detections(LEFT, RIGHT), detections(RIGHT, LEFT), detections(LEFT, RIGHT)),
                         threaded=False)
    seen = []
    for _ in range(3):
        out = effect.apply(frame, semantic(LEFT, RIGHT))
        seen.append((colour_of(out, frame, LEFT), colour_of(out, frame, RIGHT)))
    assert seen == [("C0", "C1")] * 3
    assert [p["id"] for p in effect.people] == [1, 2]


def test_a_person_the_detector_missed_keeps_the_plain_overlay():
    frame = noise(2)
    alone = (145, 10, 158, 60)  # a third semantic region no detection touches
    effect = MaskOverlay(instances=detections(LEFT, RIGHT), threaded=False)
    out = effect.apply(frame, semantic(LEFT, RIGHT, alone))
    plain = MaskOverlay().apply(frame, semantic(LEFT, RIGHT, alone))
    x1, y1, x2, y2 = alone
    np.testing.assert_array_equal(out[y1 + 3:y2 - 3, x1 + 3:x2 - 3], plain[y1 + 3:y2 - 3, x1 + 3:x2 - 3])
    assert len(effect.people) == 2


def test_between_detections_the_colours_follow_the_semantic_mask():
    """One detection, then the people move 12 px right: the colour is where the semantic mask is now."""
    frame = noise(3)
    clock = FakeClock()
    effect = MaskOverlay(instances=detections(LEFT, RIGHT), threaded=False, max_rate=1.0)
    effect.runner.clock = clock
    effect.apply(frame, semantic(LEFT, RIGHT))
    clock.t = 0.5  # not due: no new detection
    l2, r2 = (32, 10, 87, 110), (92, 20, 152, 110)
    out = effect.apply(frame, semantic(l2, r2))
    assert effect.runner.detections == 1
    assert colour_of(out, frame, l2) == "C0" and colour_of(out, frame, r2) == "C1"
    plain = MaskOverlay().apply(frame, semantic(l2, r2))
    np.testing.assert_array_equal(out[10:110, 20:28], plain[10:110, 20:28])  # left behind: background now


def test_frames_go_on_while_a_detection_is_in_flight():
    frame = noise(4)
    det = GatedDetector(detections(LEFT, RIGHT))
    effect = MaskOverlay(instances=det, max_rate=None)
    plain = MaskOverlay()
    alpha = semantic(LEFT, RIGHT)
    try:
        first = effect.apply(frame, alpha)
        assert det.waiting.wait(30)
        for _ in range(3):  # the detection is held: frames are drawn without instance colours meanwhile
            np.testing.assert_array_equal(effect.apply(frame, alpha), plain.apply(frame, alpha))
            assert det.waiting.is_set() and effect.people == []
        np.testing.assert_array_equal(first, plain.apply(frame, alpha))
        det.release()
        assert effect.runner.wait(30)
        out = effect.apply(frame, alpha)  # takes the finished detection (and hands over this frame)
        assert colour_of(out, frame, LEFT) == "C0" and colour_of(out, frame, RIGHT) == "C1"
        assert det.waiting.wait(30) and det.calls == 2  # this frame went to the detector
    finally:
        det.release(5)
        effect.close()


# ------------------------------------------------------------------ the app and its command line


def test_app_builds_the_overlay_with_the_detector(tmp_path):
    from apps.webcam import App
    from tests.apps.fakes import FakeSegmenter

    made = []

    def factory(path):
        made.append(str(path))
        return detections(LEFT, RIGHT)

    app = App(model="exports/portrait.tflite", parsing_model=None, fast_model=None, effect="mask", instances=True,
              instance_model="x.tflite", detector_factory=factory, segmenter_factory=lambda p: FakeSegmenter())
    try:
        assert made == ["x.tflite"] and app.effect.runner is not None and app.effect.runner.max_rate == 5.0
        assert app.effect.runner.threaded
        assert app.get_effect("portrait") is not None  # the other effects ignore the detector
    finally:
        app.close()
    assert app.effect.runner._thread is None


def test_cli_instances_without_the_model_and_a_negative_rate_are_one_line(tmp_path, capsys):
    from apps.webcam import App, build_parser, main

    rc = main(["--source", str(tmp_path), "--instances", "--instance-model", str(tmp_path / "none.tflite"),
               "--no-window", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "none.tflite not found; --instances needs a person instance model" in err and "leave out --instances" in err
    rc = main(["--source", str(tmp_path), "--keep", "largest", "--detect-rate", "-2", "--no-window",
               "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--detect-rate -2" in err
    args = build_parser().parse_args(["--instances", "--keep-rate", "0"])
    assert args.effect is None and args.detect_rate == 0.0  # --keep-rate is the old name; effect: mask (run)
    with pytest.raises(KsegError, match="semantic segmentation model"):
        App(model="exports/portrait.tflite", parsing_model=None, fast_model=None, instances=True,
            instance_model="exports/portrait.tflite")


# ------------------------------------------------------------------ the shipped models


def test_real_two_people_get_two_colours(shared_data):
    """COCO val 192699 (two people side by side), the shipped portrait and person-instances models."""
    from pathlib import Path

    import cv2

    from apps.common.keep import load_instance_detector
    from apps.common.refine import MaskEstimator
    from kseg.data.readers import open_instances
    from kseg.runtime import Segmenter

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "exports" / "person-instances.tflite").is_file():
        pytest.skip("exports/person-instances.tflite not shipped")
    inst = open_instances(shared_data / "coco" / "coco-mini", "val", categories=("person",))
    image, target = inst.load([k for k, p in enumerate(inst.image_paths) if p.endswith("000000192699.jpg")][0])
    alpha = MaskEstimator(Segmenter(repo / "exports" / "portrait.tflite", num_threads=2), smoothing=0.0)(image)
    effect = MaskOverlay(instances=load_instance_detector(repo / "exports" / "person-instances.tflite", num_threads=2),
                         threaded=False)
    out = effect.apply(image, alpha)
    assert len(effect.people) == 2
    colors = [np.array(p["color"], np.float64) for p in effect.people]
    owners = []
    for m in target["masks"]:  # each ground-truth person: which instance colour their pixels are blended with
        core = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & (alpha[..., 0] > 0.5)
        err = np.stack([np.abs(out[core] - (0.5 * image[core] + 0.5 * c)).sum(-1) for c in colors])
        share = np.bincount(err.argmin(0), minlength=2) / core.sum()
        owners.append((int(np.argmax(share)), float(share.max())))
    # measured: 0.93 and 1.0 of each person's pixels nearest their own colour
    assert owners[0][0] != owners[1][0] and min(s for _, s in owners) > 0.85


def test_app_with_instances_on_the_shipped_tflite_imports_no_keras(tmp_path):
    """``python -m apps.webcam --instances`` headless on the bundled clip: rc 0, the mask effect
    with the detector's thread, and neither Keras nor TensorFlow imported."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for name in ("portrait.tflite", "person-instances.tflite"):
        if not (repo / "exports" / name).is_file():
            pytest.skip(f"exports/{name} not shipped")
    code = f"""
import sys
from apps.webcam import main
rc = main(["--source", "assets/book.mkv", "--instances", "--no-window", "--no-hud", "--max-frames", "12",
           "--out", {str(tmp_path / "people.mp4")!r}])
print(rc, sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert "mask 0.60, " in out.stderr  # the effect line names the people count
    assert (tmp_path / "people.mp4").is_file()
