"""Preview grid: layout by hand, overlay colours, ignore hatching, atomic PNG output."""

import argparse

import cv2
import numpy as np

from kseg.data import preview
from kseg.data.synthetic import write_shapes_dataset


def test_overlay_colours_and_hatching():
    image = np.full((6, 6, 3), 100, np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[0, :] = 1
    mask[5, :] = 255
    colors = np.array([[0, 0, 0], [200, 0, 50]], np.uint8)
    out = preview.overlay(image, mask, colors, alpha=0.5)
    np.testing.assert_array_equal(out[2], image[2])          # background untouched
    np.testing.assert_array_equal(out[0, 0], [150, 50, 75])  # (100 + colour) / 2
    row = out[5]
    # row y=5, stripes ((y + x) // 3) % 2 == 0 -> grey 128 (x = 1, 2, 3);
    # otherwise 0.6*100 + 0.4*128 = 111.2 -> 111 (x = 0, 4, 5)
    np.testing.assert_array_equal(row[:, 0], [111, 128, 128, 128, 111, 111])


def test_grid_layout():
    images = np.zeros((5, 8, 10, 3), np.float32)
    images[3] = 255.0
    masks = np.zeros((5, 8, 10), np.int32)
    grid = preview.preview_grid(images, masks, ("a", "b"), np.array([[0, 0, 0], [255, 0, 0]], np.uint8), cols=2, gap=4)
    # 3 rows of (8 + 4) px, then the legend; 2 cells of (2*10 + 4) px
    assert grid.shape[1] == 2 * 24 and grid.shape[0] > 36
    # sample 3 is row 1, col 1: image at y 12..20, x 24..34 and its overlay at x 34..44
    assert (grid[12:20, 24:44] == 255).all()
    assert (grid[0:8, 0:20] == 0).all() and (grid[8:12, :] == 255).all()


def test_write_preview_from_cli(tmp_path):
    from kseg.cli.data import add_preview

    write_shapes_dataset(tmp_path / "shapes", 6, size=(40, 40), seed=0)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_preview(sub)
    out = tmp_path / "p.png"
    args = parser.parse_args(["preview", str(tmp_path / "shapes"), "--format", "masks", "--out", str(out),
                              "--n", "4", "--size", "32", "--seed", "1"])
    assert args.func(args) == 0
    grid = cv2.imread(str(out))
    assert grid.shape[1] == 4 * (2 * 32 + 4)  # 4 cells in one row
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_preview_masks_match_the_pipeline(tmp_path):
    ds = write_shapes_dataset(tmp_path / "s", 5, size=(32, 32), seed=3)
    images, masks = preview.write_preview(ds, tmp_path / "v.png", n=3, size=(32, 32), training=False)
    picked = sorted(np.random.default_rng(0).choice(5, 3, replace=False))
    np.testing.assert_array_equal(masks, np.stack([ds.load(int(i))[1] for i in picked]))
