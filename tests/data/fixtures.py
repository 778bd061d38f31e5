"""Tiny datasets written by tests, in each format kseg reads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, h=16, w=24, seed=0, ext=None):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def write_mask(path: Path, mask: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask.astype(np.uint8))
    return path


def masks_folder(root: Path, n=3, binary=True, h=16, w=24):
    for i in range(n):
        write_image(root / "images" / f"{i}.jpg", h, w, seed=i)
        m = np.zeros((h, w), np.uint8)
        m[4:10, 5:15] = 255 if binary else (i % 3)
        write_mask(root / "masks" / f"{i}.png", m)
    return root


def ccp_folder(root: Path, n=3, h=16, w=24):
    labels = ["background", "hair", "skin", "jeans", "t-shirt", "shoes", "bag"]
    groups = {"background": ["background"], "hair": ["hair"], "skin": ["skin"],
              "upper_clothes": ["t-shirt"], "lower_clothes": ["jeans"], "footwear": ["shoes"], "accessories": ["bag"]}
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({"labels": labels, "suggested_groups": repr(groups)}))
    for i in range(n):
        write_image(root / "images" / f"{i:04d}.jpg", h, w, seed=i)
        m = np.zeros((h, w), np.uint8)
        m[0:4] = 1      # hair
        m[4:8] = 4      # t-shirt
        m[8:12] = 3     # jeans
        m[12:16, :4] = 5  # shoes
        write_mask(root / "labels" / f"{i:04d}.png", m)
    return root


def camvid_folder(root: Path, n=2, h=12, w=16):
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({"classes": [f"c{k}" for k in range(11)], "void_label": 11}))
    for split in ("train", "val", "test"):
        for i in range(n):
            write_image(root / split / f"f{i}.jpg", h, w, seed=i)
            m = np.arange(h * w).reshape(h, w) % 12
            write_mask(root / f"{split}annot" / f"f{i}.png", m)
    return root


def pets_folder(root: Path, h=12, w=16):
    for breed in ("Abyssinian", "american_bulldog"):
        for i in (1, 2):
            write_image(root / "images" / f"{breed}_{i}.jpg", h, w, seed=i)
            m = np.full((h, w), 2, np.uint8)
            m[3:9, 4:12] = 3
            m[4:8, 5:11] = 1
            write_mask(root / "trimaps" / f"{breed}_{i}.png", m)
    return root


def coco_folder(root: Path, h=20, w=30, missing_image=False):
    """Two images: one with a polygon person and a crowd RLE person, one with only a dog."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for i in (1, 2):
        if not (missing_image and i == 2):
            write_image(root / "val2017" / f"{i:012d}.jpg", h, w, seed=i)
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[12:16, 20:28] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    uncompressed = {"size": [h, w], "counts": _rle_counts(crowd)}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 48.0, "bbox": [2, 2, 8, 6],
         "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 32.0, "bbox": [20, 12, 8, 4],
         "segmentation": uncompressed},
        {"id": 3, "image_id": 2, "category_id": 18, "iscrowd": 0, "area": 16.0, "bbox": [0, 0, 4, 4],
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
    ]
    _ = rle
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i in (1, 2)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


def _rle_counts(mask):
    """Uncompressed COCO RLE counts (column-major runs starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return counts


def two_blob_folder(root: Path, h=16, w=24):
    """One image whose mask has two separate person regions: 3×4 at (1, 2) and 5×6 at (8, 14)."""
    write_image(root / "images" / "a.png", h, w)
    m = np.zeros((h, w), np.uint8)
    m[1:4, 2:6] = 255
    m[8:13, 14:20] = 255
    write_mask(root / "masks" / "a.png", m)
    return root
