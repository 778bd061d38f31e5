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
