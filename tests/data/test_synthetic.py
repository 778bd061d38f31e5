"""Synthetic shapes: deterministic, masks agree with images, instances agree with semantics."""

import numpy as np

from kseg.data.synthetic import make_instances, make_shapes, write_shapes_dataset


def test_shapes_are_deterministic_and_in_range():
    a = make_shapes(6, size=(40, 56), num_classes=4, seed=3)
    b = make_shapes(6, size=(40, 56), num_classes=4, seed=3)
    c = make_shapes(6, size=(40, 56), num_classes=4, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == (6, 40, 56, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (6, 40, 56) and set(np.unique(a[1])) <= {0, 1, 2, 3}
    assert (a[1] > 0).reshape(6, -1).any(axis=1).all()  # every image has a shape


def test_each_shape_is_one_flat_colour():
    images, masks = make_shapes(10, size=(64, 64), seed=1)
    inst = make_instances(10, size=(64, 64), seed=1)
    for i in range(10):
        for m in inst[i]["masks"]:
            colours = np.unique(images[i][m.astype(bool)], axis=0)
            assert len(colours) == 1


def test_instances_match_semantic_masks_and_boxes():
    images, masks = make_shapes(5, size=(48, 48), num_classes=3, seed=7)
    inst = make_instances(5, size=(48, 48), num_classes=3, seed=7)
    for i, d in enumerate(inst):
        np.testing.assert_array_equal(d["image"], images[i])
        np.testing.assert_array_equal(d["semantic"], masks[i])
        k = len(d["class_ids"])
        assert d["masks"].shape == (k, 48, 48) and d["boxes"].shape == (k, 4)
        # instances do not overlap, and their union with class ids rebuilds the semantic mask
        assert d["masks"].sum(axis=0).max() <= 1
        rebuilt = (d["masks"] * d["class_ids"][:, None, None]).sum(axis=0)
        covered = d["masks"].sum(axis=0) > 0
        np.testing.assert_array_equal(rebuilt[covered], masks[i][covered])
        for m, (x1, y1, x2, y2) in zip(d["masks"], d["boxes"]):
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_written_dataset_loads_back_exactly(tmp_path):
    ds = write_shapes_dataset(tmp_path, 3, size=(32, 40), num_classes=3, seed=2)
    images, masks = make_shapes(3, size=(32, 40), num_classes=3, seed=2)
    assert len(ds) == 3 and ds.class_names == ("background", "circle", "rectangle")
    for i in range(3):
        image, mask = ds.load(i)
        np.testing.assert_array_equal(image, images[i])  # PNG is lossless
        np.testing.assert_array_equal(mask, masks[i])
