"""benchmarks/eval_people.py's diagnostics: the labels' own resolution ceiling."""

import numpy as np
import pytest

from kseg.data.readers import open_dataset
from tests.conftest import load_benchmark
from tests.data import fixtures as F


@pytest.fixture(scope="module")
def ev():
    return load_benchmark("eval_people")


def test_label_ceiling_is_exact_at_the_label_size_and_loses_thin_parts_below_it(ev, tmp_path):
    root = tmp_path / "m"
    F.write_image(root / "images" / "0.jpg", 32, 32)
    m = np.zeros((32, 32), np.uint8)
    m[4:28, 6:26] = 1  # a body
    m[10:22, 15] = 2   # a strand one pixel wide
    F.write_mask(root / "masks" / "0.png", m)
    ds = open_dataset(root, "masks", class_names=("background", "person", "strand"))
    full = ev.label_ceiling(ds, (32, 32))
    np.testing.assert_allclose(full["per_class_iou"], 1.0)
    low = ev.label_ceiling(ds, (8, 8))
    assert low["per_class_iou"][1] > 0.8  # a large region survives
    assert low["per_class_iou"][2] < 0.5  # a 1-px strand at a quarter of the resolution does not


def test_trained_on_adds_the_training_split_under_its_own_name(ev, shared_data):
    held_out = ev.val_sets("parsing")
    both = ev.val_sets("parsing", trained_on=True)
    assert set(both) == set(held_out) | {"people-parsing (trained on)"}
    train, val = both["people-parsing (trained on)"], both["people-parsing"]
    assert len(train) + len(val) == 853 and not {s.image for s in train.samples} & {s.image for s in val.samples}


def test_as_person_scores_any_parsing_group_as_the_person(ev, tmp_path):
    from types import SimpleNamespace

    # a parsing model's answer: background, skin, upper clothes / accessories, background, hair
    parsing = np.array([[0, 1, 3, 3], [7, 0, 2, 0]], np.uint8)

    class Parsing:
        class_names = ("background", "skin", "hair", "upper_clothes", "dress", "lower_clothes", "footwear", "accessories")
        input_size = (2, 4)

        def segment(self, image):
            return SimpleNamespace(category_mask=parsing)

    seg = ev._AsPerson(Parsing())
    assert seg.class_names == ("background", "person") and seg.input_size == (2, 4)
    np.testing.assert_array_equal(seg.segment(None).category_mask, [[0, 1, 1, 1], [1, 0, 1, 0]])
    root = tmp_path / "m"
    F.write_image(root / "images" / "0.jpg", 2, 4)
    F.write_mask(root / "masks" / "0.png", np.array([[0, 1, 1, 0], [0, 0, 1, 1]], np.uint8))
    ds = open_dataset(root, "masks", class_names=("background", "person"))
    cm, per_image = ev.score(seg, ds, 2, person=1)
    assert cm[1, 1] == 3 and per_image == [pytest.approx(3 / 6)]  # 3 shared of 4 true + 5 called - 3
