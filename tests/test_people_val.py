"""benchmarks/mask_rcnn_person.py's held-out people sets as instance ground truth (issue 13: the
instance model measured on the other people data)."""

import json

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def mrp():
    return load_benchmark("mask_rcnn_person")


@pytest.mark.parametrize("name", ["portraits", "people-parsing"])
def test_one_person_per_photo_is_one_instance_with_all_its_pixels(mrp, shared_data, tmp_path, name):
    from kseg.data.readers import open_ccp, open_masks

    gt, inst = mrp.people_val(tmp_path, limit=3, name=name)
    assert inst.name == f"{name}-val" and len(inst) == 3
    root = shared_data / name
    ds = open_ccp(root, groups="person") if name == "people-parsing" else open_masks(
        root, class_names=("background", "person"), binary=True)
    val = ds.split(0.1, 0)[1]  # the split every config and the composites hold out
    anns = json.loads(gt.read_text())["annotations"]
    for i in range(3):
        image, target = inst.load(i)
        _, person = val.load(i)
        assert len(target["masks"]) == 1  # one photo, one person, even where an arm is cut off
        np.testing.assert_array_equal(target["masks"][0], person == 1)
        assert [a["image_id"] for a in anns].count(i + 1) == 1
        assert sum(a["area"] for a in anns if a["image_id"] == i + 1) == (person == 1).sum()


def test_unknown_people_set_names_the_choices(mrp, tmp_path):
    with pytest.raises(SystemExit, match="portraits"):
        mrp.people_val(tmp_path, name="pets")
