"""kseg evaluate --panoptic: things + stuff merged and scored on COCO images, by hand-counted pixels."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from kseg.cli import main
from kseg.evaluate_panoptic import evaluate_panoptic
from kseg.runtime import InstanceModel
from tests.test_cli_instances import _rect_coco

A, B, DOG = [4, 6, 24, 40], [30, 2, 60, 20], [40, 30, 62, 46]  # image 1 (x1, y1, x2, y2); the dog is not a thing
C, C_SHORT = [10, 10, 50, 44], [10, 10, 50, 38]  # image 2: person C, detected 6 rows short


class _Detector:
    """A 64-px 'Mask R-CNN' returning given boxes with full masks (exact rectangles once pasted)."""

    image_shape = (64, 64, 3)

    def __init__(self, per_image):
        self.per_image = iter(per_image)

    def detect(self, boxed):
        boxes, scores = next(self.per_image)
        n = len(boxes)
        return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
                "classes": np.ones(n, np.int32), "masks": np.ones((n, 28, 28), np.float32),
                "num_detections": np.int32(n)}


class _Semantic:
    """A background/person 'segmenter' that says person on given rectangles."""

    class_names = ("background", "person")
    path = "semantic"

    def __init__(self, per_image):
        self.per_image = iter(per_image)

    def segment(self, rgb):
        mask = np.zeros(rgb.shape[:2], np.uint8)
        for x1, y1, x2, y2 in next(self.per_image):
            mask[y1:y2, x1:x2] = 1
        return SimpleNamespace(category_mask=mask)


def test_hand_counted_pq(tmp_path):
    """Image 1: A and B exact (IoU 1), a person detected on the dog (FP); the background loses
    the dog's 22×16 px: IoU (1852 − 352) / 1852. Image 2: C detected 6 rows short: IoU
    40·28 / 40·34; the semantic person pixels under the missing rows stay unlabeled, so the
    background is exact. Person: TP 3, FP 1, FN 0; background: TP 2, no FP/FN."""
    _rect_coco(tmp_path)
    det = _Detector([([A, B, DOG], [0.9, 0.9, 0.7]), ([C_SHORT], [0.8])])
    model = InstanceModel(det, ("background", "person"), tmp_path / "fake.tflite", "tflite")
    r = evaluate_panoptic(model, _Semantic([[A, B], [C]]), tmp_path, stuff_area_limit=0)
    person, bg = r["pq"]["per_class"]["person"], r["pq"]["per_class"]["background"]
    iou_c, iou_bg = 1120 / 1360, 1500 / 1852
    assert (person["tp"], person["fp"], person["fn"]) == (3, 1, 0)
    assert person["pq"] == pytest.approx((2 + iou_c) / 3.5) and person["sq"] == pytest.approx((2 + iou_c) / 3)
    assert person["rq"] == pytest.approx(3 / 3.5)
    assert (bg["tp"], bg["fp"], bg["fn"]) == (2, 0, 0) and bg["pq"] == pytest.approx((1 + iou_bg) / 2)
    assert r["pq"]["all"]["pq"] == pytest.approx(((2 + iou_c) / 3.5 + (1 + iou_bg) / 2) / 2)
    assert r["pq"]["things"]["n"] == 1 and r["pq"]["stuff"]["n"] == 1 and r["images"] == 2
    assert r["segments"] == {"predicted_things": 4, "predicted_stuff": 2, "true_things": 3, "true_crowds": 0,
                             "true_stuff": 2}


def test_stuff_area_limit_drops_small_stuff(tmp_path):
    _rect_coco(tmp_path)
    model = InstanceModel(_Detector([([A, B], [0.9, 0.9]), ([C], [0.8])]), ("background", "person"),
                          tmp_path / "fake.tflite", "tflite")
    r = evaluate_panoptic(model, _Semantic([[A, B], [C]]), tmp_path, stuff_area_limit=1800)
    bg = r["pq"]["per_class"]["background"]
    assert (bg["tp"], bg["fn"]) == (1, 1)  # image 2's 1712-px background dropped, image 1's 1852 kept
    assert r["pq"]["per_class"]["person"]["pq"] == 1.0


def test_cli_panoptic_errors_are_one_line(tmp_path, capsys):
    _rect_coco(tmp_path)
    for argv, expect in (
        (["exports/portrait.tflite", tmp_path, "--panoptic", "exports/portrait.tflite"], "is a semantic model"),
        (["exports/person-instances.tflite", tmp_path, "--panoptic", "exports/person-instances.tflite"],
         "give a semantic segmentation model"),
        (["exports/person-instances.tflite", tmp_path, "--panoptic", "exports/portrait.tflite", "--stuff-area", "-1"],
         "--stuff-area -1"),
    ):
        assert main(["evaluate", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err


@pytest.mark.shared_data
def test_cli_panoptic_on_coco_with_the_shipped_models(capsys):
    assert main(["evaluate", "exports/person-instances.tflite", "coco/coco-mini", "--panoptic",
                 "exports/portrait.tflite", "--limit", "2", "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert "panoptic evaluation: 2/2 images in " in captured.err  # progress, as a log sees it
    assert r["images"] == 2 and r["things"] == ["person"] and r["stuff"] == ["background"]
    for key in ("all", "things", "stuff"):
        assert 0 <= r["pq"][key]["pq"] <= r["pq"][key]["sq"] <= 1
    assert r["pq"]["per_class"]["background"]["tp"] == 2  # the background of both images is found
