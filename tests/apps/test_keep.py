"""Portrait --keep: choosing people, following the choice, restricting the semantic mask."""

from __future__ import annotations

import time

import numpy as np
import pytest

from apps.common.keep import PersonKeeper, PersonTracker, choose, group_detections
from apps.effects import Portrait
from kseg.errors import KsegError

H, W = 120, 160
# two people, x1, y1, x2, y2 in frame pixels: A left and large, B right, smaller, reaching lower
A = (10, 10, 70, 100)
B = (100, 40, 140, 118)


def rect_mask(box, shape=(H, W)):
    m = np.zeros(shape, np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1
    return m


def dets(*boxes, shape=(H, W)):
    """A detector result at ``shape`` for rectangles given in full-frame pixels."""
    sy, sx = shape[0] / H, shape[1] / W
    scaled = [(round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)) for x1, y1, x2, y2 in boxes]
    return {"boxes": np.array(scaled, np.float32).reshape(-1, 4), "scores": np.full(len(boxes), 0.9, np.float32),
            "masks": np.stack([rect_mask(b, shape) for b in scaled]) if boxes else np.zeros((0, *shape), np.uint8)}


class ScriptedDetector:
    """Returns the scripted detections (given in full-frame pixels) one call after the other."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def __call__(self, rgb):
        boxes = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return dets(*boxes, shape=rgb.shape[:2])


def semantic(*boxes):
    alpha = np.zeros((H, W), np.float32)
    for b in boxes:
        alpha = np.maximum(alpha, rect_mask(b).astype(np.float32))
    return alpha


def test_choose_rules_by_hand():
    boxes = [A, B, (60, 50, 100, 90)]  # third: in the centre, small
    areas = [60 * 90, 40 * 78, 40 * 40]
    assert choose(boxes, areas, "largest", (H, W)) == 0
    assert choose(boxes, areas, "nearest", (H, W)) == 1  # bottom 118 > 100
    assert choose(boxes, areas, "center", (H, W)) == 2  # centre (80, 70) vs frame centre (80, 60)
    # bottoms within 3 % of the height: a tie, the larger mask wins
    assert choose([(0, 0, 10, 117), (20, 0, 60, 115)], [10, 400], "nearest", (H, W)) == 1
    assert choose([], [], "largest", (H, W)) is None
    with pytest.raises(KsegError, match="keep='biggest'"):
        choose(boxes, areas, "biggest", (H, W))


def test_tracker_keeps_its_choice_then_lets_go():
    t = PersonTracker("largest", min_iou=0.3, hold=3)
    assert t.update([A, B], [5400, 3120], (H, W)) == 0  # A is larger
    # B comes closer and grows past A; A moved 4 px: still A (IoU with the last box 0.87)
    a2 = (14, 10, 74, 100)
    assert t.update([(60, 0, 160, 120), a2], [12000, 5400], (H, W)) == 1
    np.testing.assert_array_equal(t.box, a2)
    # A is missed: held for hold - 1 = 2 detections, then let go and B chosen by the rule
    assert t.update([B], [3120], (H, W)) is None and t.box is not None
    assert t.update([B], [3120], (H, W)) is None
    assert t.update([B], [3120], (H, W)) == 0 and tuple(t.box) == B


def test_group_box_is_not_a_person():
    both = (10, 10, 140, 118)
    m = np.stack([rect_mask(A), rect_mask(B), rect_mask(both)])
    assert group_detections(m).tolist() == [False, False, True]
    assert group_detections(m[[2, 0, 1]]).tolist() == [False, True, True]  # the best-scoring one stays
    # a box around A's upper half (shares all of its mask with A) repeats A; touching B does not
    m2 = np.stack([rect_mask(A), rect_mask((10, 10, 70, 55)), rect_mask((70, 10, 100, 100))])
    assert group_detections(m2).tolist() == [False, True, False]


def test_keeper_keeps_only_the_chosen_person():
    frame = np.zeros((H, W, 3), np.uint8)
    alpha = semantic(A, B)
    for keep, sharp, blurred in (("largest", A, B), ("nearest", B, A)):
        k = PersonKeeper(ScriptedDetector([[A, B]]), keep=keep, threaded=False)
        out = k(frame, alpha)
        sx1, sy1, sx2, sy2 = sharp
        bx1, by1, bx2, by2 = blurred
        assert out[sy1:sy2, sx1:sx2].min() == pytest.approx(1.0, abs=1e-6)  # the semantic mask, untouched
        assert out[by1:by2, bx1:bx2].max() == 0.0
        assert k.state == "chosen" and tuple(k.chosen_box) == sharp
        np.testing.assert_array_equal(alpha, semantic(A, B))  # the input is not modified


def test_semantic_edges_are_kept_not_the_instance_mask():
    # the instance mask is a rough, smaller box inside A; the kept region is all of A's semantic region
    rough = (15, 20, 65, 95)
    k = PersonKeeper(ScriptedDetector([[rough, B]]), keep="largest", threaded=False)
    out = k(np.zeros((H, W, 3), np.uint8), semantic(A, B))
    np.testing.assert_array_equal(out[10:100, 10:70], 1.0)
    assert out[40:118, 100:140].max() == 0.0


def test_touching_people_split_by_their_instance_masks():
    left, right = (20, 10, 80, 110), (80, 10, 140, 110)  # one connected semantic region
    k = PersonKeeper(ScriptedDetector([[left, right]]), keep="center", threaded=False)
    k.tracker.keep = "largest"
    out = k(np.zeros((H, W, 3), np.uint8), semantic(left, right))
    assert out[15:105, 25:70].min() == pytest.approx(1.0, abs=1e-6)  # inside the left person
    assert out[15:105, 95:140].max() == 0.0  # the right person, beyond the feathered seam
    assert 0.0 < out[60, 80] <= 1.0


def test_choice_is_stable_and_detections_vanishing_fall_back_to_everyone():
    frame = np.zeros((H, W, 3), np.uint8)
    alpha = semantic(A, B)
    grown_b = (90, 0, 160, 120)
    script = [[A, B], [A, grown_b], [A, grown_b], [], [], []]
    k = PersonKeeper(ScriptedDetector(script), keep="largest", threaded=False, hold=3)
    seen = []
    for _ in range(3):  # B grows larger than A: the choice stays A
        out = k(frame, semantic(A, grown_b))
        seen.append((k.state, out[50, 40], out[60, 120]))
    assert seen == [("chosen", 1.0, 0.0)] * 3
    # nobody detected: the last choice is held for two detections, then everybody is sharp again
    states = []
    for _ in range(3):
        out = k(frame, alpha)
        states.append((k.state, float(out[50, 40]), float(out[60, 120])))
    assert states == [("holding", 1.0, 0.0), ("holding", 1.0, 0.0), ("nobody", 1.0, 1.0)]
    assert k(frame, alpha) is alpha


def test_threaded_detection_runs_beside_the_caller():
    calls = []

    def slow(rgb):
        calls.append(rgb.shape)
        time.sleep(0.05)
        return dets(A, B, shape=rgb.shape[:2])

    k = PersonKeeper(slow, keep="nearest", threaded=True)
    frame = np.zeros((H, W, 3), np.uint8)
    alpha = semantic(A, B)
    try:
        first = k(frame, alpha)  # that the caller never waits: the gated test below, without timing
        assert first is alpha and k.state == "waiting"
        deadline = time.time() + 5
        out = first
        while k.detections == 0 and time.time() < deadline:
            time.sleep(0.01)
            out = k(frame, alpha)
        assert out[60, 120] == pytest.approx(1.0) and out[50, 40] == 0.0  # B (nearest) kept, A not
        assert calls[0] == (H // 2, W // 2, 3)  # detected at half resolution
    finally:
        k.close()
    assert k._thread is None


def test_portrait_blurs_the_other_person_only():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    alpha = semantic(A, B)[..., None]
    k = PersonKeeper(ScriptedDetector([[A, B]]), keep="largest", threaded=False)
    out = Portrait(strength=0.6, keeper=k).apply(frame, alpha)
    everyone = Portrait(strength=0.6).apply(frame, alpha)
    np.testing.assert_array_equal(out[12:98, 12:68], frame[12:98, 12:68])  # A sharp
    grad = lambda im: np.abs(np.diff(im.astype(np.float32).mean(-1), axis=1)).mean()  # noqa: E731
    assert grad(out[45:115, 105:135]) < 0.3 * grad(frame[45:115, 105:135])  # B blurred
    np.testing.assert_array_equal(everyone[45:115, 105:135], frame[45:115, 105:135])
    assert "keep largest" in Portrait(keeper=k).describe()


def test_app_without_the_instance_model_says_how_to_get_it(tmp_path, capsys):
    from apps.webcam import App, main

    with pytest.raises(KsegError, match="person-instances.tflite") as e:
        App(model="exports/portrait.tflite", parsing_model=None, fast_model=None, keep="largest",
            instance_model=tmp_path / "missing.tflite")
    assert "missing.tflite not found" in str(e.value) and "kseg export" in str(e.value)
    rc = main(["--source", str(tmp_path), "--keep", "nearest", "--instance-model", str(tmp_path / "none.tflite"),
               "--no-window", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "none.tflite not found" in err


def test_app_rejects_a_semantic_model_as_instance_model():
    from apps.webcam import App

    with pytest.raises(KsegError, match="semantic segmentation model"):
        App(model="exports/portrait.tflite", parsing_model=None, fast_model=None, keep="largest",
            instance_model="exports/portrait.tflite")


def test_app_passes_the_keeper_to_portrait():
    from apps.webcam import App
    from tests.apps.fakes import FakeSegmenter

    made = []

    def factory(path, keep):
        made.append((str(path), keep))
        return PersonKeeper(ScriptedDetector([[A, B]]), keep=keep, threaded=False)

    app = App(model="exports/portrait.tflite", parsing_model=None, fast_model=None, keep="center",
              instance_model="x.tflite", keeper_factory=factory, segmenter_factory=lambda p: FakeSegmenter())
    try:
        assert made == [("x.tflite", "center")] and app.effect.keeper is app.keeper
        assert app.get_effect("swap") is not None  # the other effects ignore it
    finally:
        app.close()


def test_real_two_people_only_the_largest_stays_sharp(shared_data):
    """COCO val 192699 (two people side by side) with the shipped portrait and person-instance models."""
    import cv2

    from apps.common.keep import load_instance_detector
    from apps.common.refine import MaskEstimator
    from kseg.data.readers import open_instances
    from kseg.runtime import Segmenter

    REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
    if not (REPO / "exports" / "person-instances.tflite").is_file():
        pytest.skip("exports/person-instances.tflite not shipped")
    inst = open_instances(shared_data / "coco" / "coco-mini", "val", categories=("person",))
    image, target = inst.load([k for k, p in enumerate(inst.image_paths) if p.endswith("000000192699.jpg")][0])
    alpha = MaskEstimator(Segmenter(REPO / "exports" / "portrait.tflite", num_threads=2), smoothing=0.0)(image)

    def sharpness(im, m):  # mean Sobel gradient magnitude inside a person's (eroded) GT mask
        g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))[m].mean()

    cores = [cv2.erode(m, np.ones((9, 9), np.uint8)).astype(bool) for m in target["masks"]]
    assert len(cores) == 2 and cores[1].sum() > cores[0].sum()  # person 1 (right) is the larger
    keeper = PersonKeeper(load_instance_detector(REPO / "exports" / "person-instances.tflite", num_threads=2),
                          keep="largest", threaded=False)
    out = Portrait(strength=0.6, keeper=keeper).apply(image, alpha)
    plain = Portrait(strength=0.6).apply(image, alpha)
    kept = [sharpness(out, c) / sharpness(image, c) for c in cores]
    everyone = [sharpness(plain, c) / sharpness(image, c) for c in cores]
    # measured: kept [0.163, 0.958], plain portrait [0.918, 0.958]
    assert kept[1] > 0.9 and kept[0] < 0.3
    assert min(everyone) > 0.85
    x1, y1, x2, y2 = keeper.chosen_box
    ys, xs = np.nonzero(target["masks"][1])
    assert abs(x1 - xs.min()) < 60 and abs(x2 - xs.max()) < 60  # the chosen box is the right person's


def test_app_with_keep_on_an_instance_tflite_imports_no_keras(tmp_path):
    """A headless app run with --keep and the shipped instance .tflite, then one synchronous
    detection: neither Keras nor TensorFlow is imported (the runtime alone runs both models)."""
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
from apps.common.keep import load_instance_detector
from apps.common.sources import open_source
from apps.webcam import main
rc = main(["--source", "assets/book.mkv", "--keep", "largest", "--instance-model", "exports/person-instances.tflite",
           "--no-window", "--no-hud", "--max-frames", "12", "--out", {str(tmp_path / "keep.mp4")!r}])
with open_source("assets/book.mkv") as src:
    frame = next(iter(src))
people = load_instance_detector("exports/person-instances.tflite")(frame)
print(rc, len(people["masks"]) > 0, sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 True []"
    assert (tmp_path / "keep.mp4").is_file()


def test_frames_go_on_with_the_last_choice_while_a_detection_is_in_flight():
    """Threaded, with a detector the test holds: no frame waits for it; between detections the
    last choice is kept, on the semantic mask of each frame (the people move 6 px meanwhile)."""
    from tests.apps.fakes import GatedDetector

    det = GatedDetector(lambda rgb: dets(A, B, shape=rgb.shape[:2]))
    k = PersonKeeper(det, keep="largest", threaded=True, max_rate=None)
    frame = np.zeros((H, W, 3), np.uint8)
    try:
        for _ in range(3):  # the first detection is held: everyone sharp, nobody waits
            assert k(frame, semantic(A, B)) is not None and k.state == "waiting"
        assert det.waiting.wait(30) and det.calls == 1
        det.release()
        assert k.runner.wait(30)
        out = k(frame, semantic(A, B))  # takes the detection (A, the largest) and hands this frame over
        assert k.state == "chosen" and out[50, 40] == pytest.approx(1.0) and out[60, 120] == 0.0
        assert det.waiting.wait(30) and det.calls == 2  # the second detection is in flight, held
        a2, b2 = (16, 10, 76, 100), (106, 40, 146, 118)
        for _ in range(3):
            out = k(frame, semantic(a2, b2))
            assert det.waiting.is_set() and k.detections == 1
            assert out[50, 73] == pytest.approx(1.0) and out[60, 140] == 0.0  # A where it is now; B still not
    finally:
        det.release(5)
        k.close()


def test_rate_cap_in_the_frame_path_is_counted_on_the_clock():
    """Unthreaded keeper with max_rate 4: detections only on frames ≥ 0.25 s after the last one."""
    from tests.apps.fakes import FakeClock

    clock = FakeClock()
    det = ScriptedDetector([[A, B]])
    k = PersonKeeper(det, keep="largest", threaded=False, max_rate=4.0)
    k.runner.clock = clock
    frame = np.zeros((H, W, 3), np.uint8)
    for t in (0.0, 0.125, 0.25, 0.3125, 0.5):
        clock.t = t
        out = k(frame, semantic(A, B))
        assert out[60, 120] == 0.0  # the choice holds on the frames without a detection
    assert det.calls == 3 and k.detections == 3
