"""Transforms move masks exactly with their images (known geometry, hand-computed positions)."""

import numpy as np
import pytest
import tensorflow as tf

from kseg.data import transforms as T

# label k is drawn in colour PALETTE[k], so after any geometric transform the colour of a pixel
# inside a region must still encode the mask's label there
PALETTE = np.array([[10, 20, 30], [200, 40, 60], [30, 220, 90], [90, 60, 250]], np.float32)


def blocks(h=64, w=64, block=8, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 4, size=(h // block, w // block)).astype(np.uint8)
    mask = np.kron(small, np.ones((block, block), np.uint8))
    return PALETTE[mask], mask


def interior(m, r=2):
    """Pixels whose (2r+1)² neighbourhood has a single value."""
    h, w = m.shape
    p = np.pad(m.astype(np.int32), r, constant_values=-1)
    same = np.ones_like(m, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= p[dy:dy + h, dx:dx + w] == m
    return same


def assert_consistent(img, m, min_interior=100, r=2):
    img, m = np.asarray(img), np.asarray(m)
    assert set(np.unique(m)) <= {0, 1, 2, 3, 255}
    inside = interior(m, r)
    labelled = inside & (m != 255)
    assert labelled.sum() >= min_interior
    np.testing.assert_allclose(img[labelled], PALETTE[m[labelled]], atol=1e-3)
    padded = inside & (m == 255)
    np.testing.assert_allclose(img[padded], 0.0, atol=1e-3)


def test_integer_crop_is_exact_slice_and_padding_is_255():
    img, m = blocks()
    out_i, out_m = T.crop_box(tf.constant(img), tf.constant(m), [3.0, 5.0, 19.0, 21.0], (16, 16))
    np.testing.assert_array_equal(out_m.numpy(), m[3:19, 5:21])
    np.testing.assert_allclose(out_i.numpy(), img[3:19, 5:21], atol=1e-3)
    # 4 rows above the image: mask 255, image 0; the rest is rows 0..11
    out_i, out_m = T.crop_box(tf.constant(img), tf.constant(m), [-4.0, 0.0, 12.0, 16.0], (16, 16))
    assert (out_m.numpy()[:4] == 255).all() and (out_i.numpy()[:4] == 0).all()
    np.testing.assert_array_equal(out_m.numpy()[4:], m[0:12, 0:16])


def test_flip_matches_numpy_and_twice_is_identity():
    img, m = blocks(seed=1)
    flip = [0.0, 64.0, 64.0, 0.0]  # x1 > x2: left-right flip
    i1, m1 = T.crop_box(tf.constant(img), tf.constant(m), flip, (64, 64))
    np.testing.assert_array_equal(m1.numpy(), m[:, ::-1])
    np.testing.assert_allclose(i1.numpy(), img[:, ::-1], atol=1e-3)
    i2, m2 = T.crop_box(i1, m1, flip, (64, 64))
    np.testing.assert_array_equal(m2.numpy(), m)
    np.testing.assert_allclose(i2.numpy(), img, atol=1e-3)


def test_square_position_after_2x_upscale():
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 4:12] = 1
    out_i, out_m = T.crop_box(tf.constant(PALETTE[m]), tf.constant(m), [0.0, 0.0, 40.0, 40.0], (80, 80))
    ys, xs = np.nonzero(out_m.numpy() == 1)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (20, 40, 8, 24)
    assert (out_m.numpy() == 1).sum() == 20 * 16


def test_resize_halves_square():
    m = np.zeros((64, 64), np.uint8)
    m[16:32, 8:40] = 2
    _, out_m = T.resize(tf.constant(PALETTE[m]), tf.constant(m), (32, 32))
    ys, xs = np.nonzero(out_m.numpy() == 2)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (8, 16, 4, 20)


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_crop_flip_keeps_labels_on_their_colours(seed):
    # 64 -> 32 at zoom 0.5..2: 1..4 source pixels per output pixel, so a pixel whose 3x3
    # neighbourhood has one label is sampled (bilinearly) from that label's pixels only
    img, m = blocks(block=16, seed=seed)
    out_i, out_m = T.random_scale_crop_flip(tf.constant(img), tf.constant(m), (32, 32), tf.constant([seed, 7]))
    assert out_i.shape == (32, 32, 3) and out_m.dtype == tf.uint8
    assert_consistent(out_i, out_m, min_interior=20, r=1)


@pytest.mark.parametrize("seed", range(4))
def test_rotation_keeps_labels_on_their_colours(seed):
    img, m = blocks(seed=seed)
    out_i, out_m = T.rotate(tf.constant(img), tf.constant(m), tf.constant([seed, 3]), max_degrees=10.0)
    assert_consistent(out_i, out_m, min_interior=500)
    # nearest-neighbour: no label that was not there before (255 only from the fill)
    assert set(np.unique(out_m.numpy())) <= set(np.unique(m)) | {255}


def test_rotation_fill_is_ignore_in_the_corners():
    img, m = blocks()
    for s in range(20):
        out_i, out_m = T.rotate(tf.constant(img), tf.constant(m), tf.constant([s, 0]), max_degrees=10.0)
        angle = tf.random.stateless_uniform([], tf.constant([s, 0]), -10.0, 10.0).numpy()
        if abs(angle) > 3:
            # a corner of the output reads from outside the source after a >3° turn about the centre
            assert 255 in (out_m.numpy()[0, 0], out_m.numpy()[0, -1])
            break
    else:
        pytest.fail("no seed gave an angle above 3°")


def test_photometric_changes_image_only_and_is_seeded():
    img, _ = blocks()
    a = T.photometric(tf.constant(img), tf.constant([1, 2])).numpy()
    b = T.photometric(tf.constant(img), tf.constant([1, 2])).numpy()
    c = T.photometric(tf.constant(img), tf.constant([1, 3])).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0
    assert a.min() >= 0.0 and a.max() <= 255.0 and a.shape == img.shape


def person(h=200, w=100):
    """A tall 'body' rectangle with a round 'head' on top, label 1 on background 0."""
    m = np.zeros((h, w), np.uint8)
    m[40:190, 35:65] = 1
    yy, xx = np.mgrid[0:h, 0:w]
    m[(yy - 25) ** 2 + (xx - 50) ** 2 <= 15 ** 2] = 1
    return m


@pytest.mark.parametrize("seed", range(8))
def test_portrait_box_frames_the_head(seed):
    m = person()
    box, has = T.portrait_box(tf.constant(m), (64, 64), tf.constant([seed, 1]))
    y1, x1, y2, x2 = box.numpy()
    assert bool(has)
    # person spans rows 10..190 (height 180): window 0.35..0.6 of it, top 3..15% of window above 10
    assert 0.35 * 180 - 1e-3 <= y2 - y1 <= 0.6 * 180 + 1e-3
    assert 10 - 0.15 * (y2 - y1) - 1e-3 <= y1 <= 10 - 0.03 * (y2 - y1) + 1e-3
    assert abs((x2 - x1) - (y2 - y1)) < 1e-3  # square output -> square window
    # the whole head (rows 10..40, cols 35..65) is inside
    assert y1 <= 10 and y2 >= 41 and x1 <= 35 and x2 >= 65


def test_portrait_crop_shows_head_at_top_and_falls_back_without_person():
    m = person()
    img = PALETTE[m]
    out_i, out_m = T.portrait_crop(tf.constant(img), tf.constant(m), (64, 64), tf.constant([0, 1]))
    om = out_m.numpy()
    rows = np.nonzero((om == 1).any(axis=1))[0]
    assert rows.min() <= 64 * 0.15 + 1  # the head starts near the top of the frame
    assert (om == 1).mean() > 0.15
    assert_consistent(out_i, out_m, min_interior=50)
    empty = np.zeros_like(m)
    out_i, out_m = T.portrait_crop(tf.constant(img), tf.constant(empty), (64, 64), tf.constant([0, 1]))
    assert out_m.shape == (64, 64) and set(np.unique(out_m.numpy())) <= {0, 255}
