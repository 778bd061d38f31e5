"""combine_panoptic: stuff from a semantic map and things from detections, by hand-counted pixels."""

from __future__ import annotations

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.metrics import PanopticQuality
from kseg.runtime import combine_panoptic


def _scene():
    """10×10, semantic classes 0 background / 1 person. Detections (class 1):
    A 0.9 rows 0-4 × cols 0-4 (25 px); B 0.8 rows 3-6 × cols 3-6 (16 px, 4 on A: 25 % → kept
    with 12); C 0.7 rows 0-2 × cols 0-2 (inside A: dropped); D 0.4 (under the score threshold).
    The semantic map says person on A ∪ B and on rows 8-9 × cols 8-9 (no instance there:
    unlabeled); background elsewhere (100 − 25 − 12 − 4 = 59 px)."""
    masks = np.zeros((4, 10, 10), np.uint8)
    masks[0, 0:5, 0:5] = 1
    masks[1, 3:7, 3:7] = 1
    masks[2, 0:3, 0:3] = 1
    masks[3, 7:10, 0:3] = 1
    det = {"masks": masks, "scores": np.array([0.8, 0.9, 0.7, 0.4]), "classes": np.array([1, 1, 1, 1])}
    det["masks"] = masks[[1, 0, 2, 3]]  # given out of score order
    semantic = np.zeros((10, 10), np.uint8)
    semantic[(masks[0] | masks[1]).astype(bool)] = 1
    semantic[8:, 8:] = 1
    return semantic, det


def test_overlaps_by_score_hidden_and_weak_detections_dropped():
    semantic, det = _scene()
    pan = combine_panoptic(semantic, det, stuff={0: 0}, things={1: 1}, stuff_area_limit=10)
    assert [(s["id"], s["category_id"], s["isthing"], s["area"]) for s in pan.segments] == [
        (1, 1, True, 25), (2, 1, True, 12), (3, 0, False, 59)]
    assert [s["score"] for s in pan.segments[:2]] == [0.9, 0.8] and pan.segments[0]["instance"] == 1
    assert (pan.ids[0:5, 0:5] == 1).all() and pan.ids[5, 5] == 2 and pan.ids[4, 4] == 1
    assert (pan.ids[8:, 8:] == 0).all() and (pan.ids == 0).sum() == 4
    cats = pan.category_map()
    assert cats[0, 0] == 1 and cats[9, 0] == 0 and cats[9, 9] == 255


def test_area_limits_and_thresholds():
    semantic, det = _scene()
    assert len(combine_panoptic(semantic, det, stuff={0: 0}, stuff_area_limit=60).segments) == 2  # 59 < 60
    pan = combine_panoptic(semantic, det, stuff={0: 0}, stuff_area_limit=0, thing_area_limit=13)
    assert [s["area"] for s in pan.segments] == [25, 59]  # B (12 px left) dropped; its pixels stay unlabeled
    pan = combine_panoptic(semantic, det, stuff={0: 0}, stuff_area_limit=0, score_threshold=0.3)
    assert [s["area"] for s in pan.segments] == [25, 12, 9, 59 - 9]  # D now kept, on background pixels
    pan = combine_panoptic(semantic, det, stuff={0: 0}, stuff_area_limit=0, overlap_threshold=1.0)
    assert [s["area"] for s in pan.segments] == [25, 12, 59]  # C is no longer "hidden" but has no free pixel
    pan = combine_panoptic(semantic, det, stuff={0: 0}, things={2: 2}, stuff_area_limit=0)  # no class-2 detection
    assert [s["isthing"] for s in pan.segments] == [False]
    assert combine_panoptic(semantic, None, stuff={0: 0, 1: 1}, stuff_area_limit=0).segments[1]["area"] == 41


def test_exact_prediction_scores_pq_one():
    semantic, det = _scene()
    pan = combine_panoptic(semantic, det, stuff={0: 0}, things={1: 1}, stuff_area_limit=10)
    pq = PanopticQuality([{"id": 1, "name": "person", "isthing": 1}, {"id": 0, "name": "background", "isthing": 0}])
    pq.update(pan.ids, pan.segments, pan.ids, pan.segments)
    assert pq.result()["all"]["pq"] == 1.0


def test_mismatched_sizes_fail_in_one_line():
    semantic, det = _scene()
    with pytest.raises(KsegError, match="instance masks are 10×10 but the semantic map is 12×10"):
        combine_panoptic(np.zeros((10, 12), np.uint8), det, stuff={0: 0})
