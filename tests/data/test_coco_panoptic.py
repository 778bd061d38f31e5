"""Panoptic ground truth from COCO instance masks: crowds, overlaps as void, background stuff."""

import numpy as np

from kseg.data.readers import panoptic_from_instances


def test_crowd_overlap_void_and_background_by_hand():
    """6×6: person A rows 0-2 × cols 0-2 (9 px), person B rows 2-4 × cols 2-4 (9 px, 1 shared
    with A: void), a crowd of persons rows 4-5 × cols 0-5 (12 px; B keeps its 3 px on it), a
    car (category 3) at row 0 cols 4-5. Background: the 36 px minus 17 (A ∪ B) minus 9 (crowd
    left) minus 2 (car) = 8."""
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[0, 0:3, 0:3] = 1
    masks[1, 2:5, 2:5] = 1
    masks[2, 4:6, :] = 1
    masks[3, 0, 4:6] = 1
    ids, segs = panoptic_from_instances(masks, [1, 1, 1, 3], [False, False, True, False])
    assert segs == [
        {"id": 1, "category_id": 1, "iscrowd": 1, "area": 9},
        {"id": 2, "category_id": 1, "iscrowd": 0, "area": 8},
        {"id": 3, "category_id": 1, "iscrowd": 0, "area": 8},
        {"id": 4, "category_id": 3, "iscrowd": 0, "area": 2},
        {"id": 5, "category_id": 0, "iscrowd": 0, "area": 8},
    ]
    assert ids[2, 2] == 0 and ids[4, 3] == 3 and ids[5, 0] == 1 and ids[1, 5] == 5
    ids, segs = panoptic_from_instances(masks[:0], [], [], background=None)
    assert segs == [] and (ids == 0).all()
