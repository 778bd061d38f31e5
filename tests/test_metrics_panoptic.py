"""PanopticQuality: hand-computed cases, and agreement with COCO's panopticapi on random maps.

The reference is ``pq_compute`` of cocodataset/panopticapi, as packaged on PyPI by
``panopticapi-lite`` (it pins numpy < 2, which kseg's lock does not allow); it lives in its own
venv under ``~/.cache/kseg/venvs/`` (made on first use with pip) and runs in a subprocess on
PNG/JSON files written here in the COCO panoptic format; the comparison skips when that venv
cannot be made (no network).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.metrics import PanopticQuality

REFERENCE = "panopticapi-lite==0.2.0"
VENV = Path.home() / ".cache" / "kseg" / "venvs" / "panopticapi-lite-0.2.0"

PERSON, CAR, BACKGROUND, SKY = 1, 3, 0, 187
CATEGORIES = [{"id": PERSON, "name": "person", "isthing": 1}, {"id": BACKGROUND, "name": "background", "isthing": 0}]


def _pq(*images, categories=CATEGORIES):
    pq = PanopticQuality(categories)
    for image in images:
        pq.update(*image)
    return pq.result()


# --- hand-computed -----------------------------------------------------------------------


def _image_a():
    """10×10: a 10-pixel person (column 0), the rest background.

    Prediction: the person shifted down by two pixels (8 of its 10 pixels, plus 2 background
    ones): IoU 8 / 12; background: the other 90 pixels, 88 of them right: IoU 88 / 92.
    """
    gt = np.full((10, 10), 2)
    gt[:, 0] = 1
    pred = np.full((10, 10), 2)
    pred[2:, 0] = 1
    pred[:2, 1] = 1
    return pred, {1: PERSON, 2: BACKGROUND}, gt, [{"id": 1, "category_id": PERSON}, {"id": 2, "category_id": BACKGROUND}]


def test_two_true_positives():
    r = _pq(_image_a())
    assert r["per_class"][PERSON]["pq"] == pytest.approx(8 / 12)
    assert r["per_class"][PERSON]["sq"] == pytest.approx(8 / 12)
    assert r["per_class"][PERSON]["rq"] == 1.0
    assert r["per_class"][BACKGROUND]["pq"] == pytest.approx(88 / 92)
    assert r["all"]["pq"] == pytest.approx((8 / 12 + 88 / 92) / 2)
    assert r["things"]["pq"] == pytest.approx(8 / 12) and r["stuff"]["pq"] == pytest.approx(88 / 92)
    assert r["all"]["n"] == 2 and r["num_images"] == 1


def _image_b():
    """1×20 with every case: pixels 0-5 person A, 6-9 person B, 10-13 a crowd of persons,
    14-15 void, 16-19 background.

    Prediction: p1 = 1-6 (5 pixels of A, 1 of B): IoU 5/7, TP; B left unlabeled: FN;
    p3 = 10-14 (crowd and void only): ignored; p4 = 16-17 person on background: FP;
    p5 background = {0, 15, 18, 19}: 2 of the 4 background pixels, one void pixel left out of
    the union: IoU 2 / (4 + 4 - 2 - 1) = 0.4, so the background is an FN and p5 an FP (1 of
    its 4 pixels on void: not ignored).
    """
    gt = np.array([[1] * 6 + [2] * 4 + [3] * 4 + [0] * 2 + [4] * 4])
    pred = np.zeros((1, 20), int)
    pred[0, 1:7] = 1
    pred[0, 10:15] = 3
    pred[0, 16:18] = 4
    pred[0, [0, 15, 18, 19]] = 5
    gt_segs = [{"id": 1, "category_id": PERSON}, {"id": 2, "category_id": PERSON},
               {"id": 3, "category_id": PERSON, "iscrowd": 1}, {"id": 4, "category_id": BACKGROUND}]
    return pred, {1: PERSON, 3: PERSON, 4: PERSON, 5: BACKGROUND}, gt, gt_segs


def test_false_positives_negatives_crowd_and_void():
    r = _pq(_image_b())
    person, bg = r["per_class"][PERSON], r["per_class"][BACKGROUND]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 1, 1)  # p3 on the crowd is not an FP
    assert person["pq"] == pytest.approx((5 / 7) / 2) and person["sq"] == pytest.approx(5 / 7)
    assert person["rq"] == 0.5
    assert (bg["tp"], bg["fp"], bg["fn"]) == (0, 1, 1) and bg["pq"] == 0 and bg["sq"] == 0
    assert r["all"]["pq"] == pytest.approx((5 / 7) / 4)


def test_stream_sums_counts_not_scores():
    r = _pq(_image_a(), _image_b())
    person = r["per_class"][PERSON]
    assert (person["tp"], person["fp"], person["fn"]) == (2, 1, 1)
    assert person["pq"] == pytest.approx((8 / 12 + 5 / 7) / 3)
    assert r["per_class"][BACKGROUND]["pq"] == pytest.approx((88 / 92) / 2)
    assert r["num_images"] == 2


def test_void_pixels_leave_the_union():
    """A 4-pixel person predicted with 4 void pixels around it: IoU 4 / (8 + 4 - 4 - 4) = 1
    (0.5 if void counted, and 0.5 is no match)."""
    gt = np.array([[0, 0, 1, 1, 1, 1, 0, 0]])
    pred = np.ones((1, 8), int)
    r = _pq((pred, {1: PERSON}, gt, {1: PERSON}))
    assert r["per_class"][PERSON]["pq"] == 1.0
    gt2 = np.array([[2, 2, 1, 1, 1, 1, 2, 2]])  # the same pixels labelled background instead
    r = _pq((pred, {1: PERSON}, gt2, {1: PERSON, 2: BACKGROUND}))
    assert r["per_class"][PERSON]["tp"] == 0  # IoU exactly 0.5: no match
    assert r["per_class"][PERSON]["fp"] == 1 and r["per_class"][PERSON]["fn"] == 1


def test_other_category_never_matches_and_absent_classes_are_left_out():
    gt = np.ones((2, 2), int)
    r = _pq((gt, {1: CAR}, gt, {1: PERSON}),
            categories=CATEGORIES + [{"id": CAR, "name": "car", "isthing": 1}])
    assert r["per_class"][PERSON]["fn"] == 1 and r["per_class"][CAR]["fp"] == 1
    assert np.isnan(r["per_class"][BACKGROUND]["pq"])  # no segment of it anywhere
    assert r["all"]["n"] == 2 and r["all"]["pq"] == 0 and np.isnan(r["stuff"]["pq"])


def test_errors_say_what_is_wrong():
    pq = PanopticQuality(CATEGORIES)
    ids = np.ones((2, 2), int)
    with pytest.raises(KsegError, match="segment ids \\[1\\]"):
        pq.update(ids, {}, ids, {1: PERSON})
    with pytest.raises(KsegError, match="category ids \\[99\\]"):
        pq.update(ids, {1: 99}, ids, {1: PERSON})
    with pytest.raises(KsegError, match="same image size"):
        pq.update(ids, {1: PERSON}, np.ones((3, 2), int), {1: PERSON})


# --- against panopticapi -------------------------------------------------------------------

REFERENCE_SCRIPT = r"""
import contextlib, io, json, sys
from panopticapi.evaluation import pq_compute
folder = sys.argv[1]
with contextlib.redirect_stdout(io.StringIO()):
    r = pq_compute(folder + "/gt.json", folder + "/pred.json", folder + "/gt", folder + "/pred")
print(json.dumps({k: r[k] for k in ("All", "Things", "Stuff")} | {"per_class": {str(k): v for k, v in r["per_class"].items()}}))
"""


def _reference_python():
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import panopticapi.evaluation"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=120)
        # evaluation.py needs only numpy and Pillow (the package's other pins are for its converters)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", REFERENCE], check=True,
                       capture_output=True, timeout=600)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy<2", "pillow"], check=True,
                       capture_output=True, timeout=600)
        subprocess.run(probe, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"cannot make the {REFERENCE} venv at {VENV}: {err}")
    return py


def _random_image(rng, h=48, w=64):
    """A ground truth of rectangles (things of 3 categories, stuff of 2, one crowd per thing
    category at most, some void) and a prediction made from it by shifting, growing, dropping,
    relabelling and adding segments, so that IoUs fall on both sides of 0.5."""
    cats = [(PERSON, True), (CAR, True), (5, True), (BACKGROUND, False), (SKY, False)]
    gt = np.zeros((h, w), np.int64)
    gt_segs, nid = [], 1
    for cat, _ in cats[3:]:  # stuff first, bands that later segments cover in part
        y0, y1 = sorted(rng.integers(0, h, 2))
        gt[y0:y1 + 8] = nid
        gt_segs.append({"id": nid, "category_id": cat, "iscrowd": 0})
        nid += 1
    crowd_done = set()
    for _ in range(rng.integers(3, 9)):
        cat = cats[rng.integers(0, 3)][0]
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        gt[y:y + rng.integers(3, 20), x:x + rng.integers(3, 20)] = nid
        crowd = cat not in crowd_done and rng.random() < 0.25
        crowd_done |= {cat} if crowd else set()
        gt_segs.append({"id": nid, "category_id": cat, "iscrowd": int(crowd)})
        nid += 1
    if rng.random() < 0.7:  # void
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        gt[y:y + rng.integers(2, 15), x:x + rng.integers(2, 15)] = 0
    present = set(np.unique(gt).tolist())
    gt_segs = [s for s in gt_segs if s["id"] in present]

    pred = np.zeros((h, w), np.int64)
    pred_segs, pid = [], 1
    for s in gt_segs:
        if rng.random() < 0.15:
            continue  # missed
        ys, xs = np.nonzero(gt == s["id"])
        dy, dx = rng.integers(-3, 4, 2)
        grow = rng.integers(0, 3)
        y0, y1 = max(ys.min() + dy - grow, 0), min(ys.max() + dy + grow + 1, h)
        x0, x1 = max(xs.min() + dx - grow, 0), min(xs.max() + dx + grow + 1, w)
        pred[y0:y1, x0:x1] = pid
        cat = s["category_id"] if rng.random() > 0.1 else cats[rng.integers(0, 5)][0]
        pred_segs.append({"id": pid, "category_id": cat})
        pid += 1
    for _ in range(rng.integers(0, 3)):  # false positives
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        pred[y:y + rng.integers(2, 12), x:x + rng.integers(2, 12)] = pid
        pred_segs.append({"id": pid, "category_id": cats[rng.integers(0, 5)][0]})
        pid += 1
    if rng.random() < 0.5:
        pred[rng.integers(0, h), :] = 0  # an unlabeled line
    present = set(np.unique(pred).tolist())
    pred_segs = [s for s in pred_segs if s["id"] in present]
    return pred, pred_segs, gt, gt_segs


def _write_coco_panoptic(folder: Path, images, categories):
    from PIL import Image

    def rgb(ids):  # panopticapi's id2rgb: id = R + 256 G + 256² B
        return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)

    for side in ("gt", "pred"):
        (folder / side).mkdir()
    gt_anns, pred_anns, infos = [], [], []
    for i, (pred, pred_segs, gt, gt_segs) in enumerate(images):
        name = f"{i:04d}.png"
        Image.fromarray(rgb(gt)).save(folder / "gt" / name)
        Image.fromarray(rgb(pred)).save(folder / "pred" / name)
        areas = dict(zip(*np.unique(gt, return_counts=True)))
        gt_anns.append({"image_id": i, "file_name": name,
                        "segments_info": [{**s, "area": int(areas[s["id"]])} for s in gt_segs]})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segs})
        infos.append({"id": i, "file_name": name, "height": gt.shape[0], "width": gt.shape[1]})
    (folder / "gt.json").write_text(json.dumps({"images": infos, "annotations": gt_anns, "categories": categories}))
    (folder / "pred.json").write_text(json.dumps({"images": infos, "annotations": pred_anns}))


def test_agrees_with_panopticapi_on_random_maps(tmp_path):
    py = _reference_python()
    rng = np.random.default_rng(2024)
    categories = [{"id": PERSON, "name": "person", "isthing": 1}, {"id": CAR, "name": "car", "isthing": 1},
                  {"id": 5, "name": "airplane", "isthing": 1}, {"id": BACKGROUND, "name": "background", "isthing": 0},
                  {"id": SKY, "name": "sky", "isthing": 0}]
    images = [_random_image(rng) for _ in range(60)]
    _write_coco_panoptic(tmp_path, images, categories)
    (tmp_path / "reference.py").write_text(REFERENCE_SCRIPT)
    done = subprocess.run([str(py), str(tmp_path / "reference.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    want = json.loads(done.stdout.strip().splitlines()[-1])

    got = _pq(*images, categories=categories)
    counts = {c: got["per_class"][c] for c in got["per_class"]}
    assert sum(c["tp"] for c in counts.values()) > 50 and sum(c["fp"] + c["fn"] for c in counts.values()) > 50
    for ours, theirs in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        for k in ("pq", "sq", "rq"):
            assert got[ours][k] == pytest.approx(want[theirs][k], abs=1e-12), (ours, k)
        assert got[ours]["n"] == want[theirs]["n"]
    for c, scores in want["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert got["per_class"][int(c)][k] == pytest.approx(scores[k], abs=1e-12), (c, k)
