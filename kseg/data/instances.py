"""Instance data for Mask R-CNN: letterboxing, fixed-size padded batches, COCO ground truth files.

A sample becomes ``(image (S, S, 3) uint8, {"boxes": (M, 4) float32 (x1, y1, x2, y2),
"classes": (M,) int32 (0 = padding), "masks": (M, S, S) uint8})``: the image is scaled so its
longer side is ``S`` and padded at the right/bottom (``letterbox``), so a detection maps back
to the original image by one division. Crowd annotations are left out of training targets.

Example:
    from kseg.data.readers import open_instances
    from kseg.data.instances import make_instance_dataset
    inst = open_instances("../shared/data/coco/coco-mini", "train", categories=("person",))
    ds = make_instance_dataset(inst, size=320, batch_size=2, max_instances=16)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path


def letterbox(image, size):
    """Scale ``image`` so its longer side is ``size`` and pad it to ``size × size`` (right/bottom, 0).

    Args:
        image: ``(H, W, 3)`` uint8.
        size: output side.

    Returns:
        ``(padded (size, size, 3) uint8, scale)``: original pixel ``p`` is at ``p · scale``.
    """
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out, scale


def letterbox_target(target, size, scale, max_instances, min_size=1.0):
    """Scale an instance target like its image and pack it into ``max_instances`` slots.

    Crowd instances and boxes smaller than ``min_size`` pixels after scaling are dropped; if
    more than ``max_instances`` remain the largest are kept.

    Args:
        target: dict with ``masks`` (N, H, W), ``boxes`` (N, 4) x1,y1,x2,y2, ``category_ids`` (N,)
            and optionally ``iscrowd`` (N,).
        size, scale: as returned by ``letterbox``.
        max_instances: slots M.
        min_size: smallest kept box side after scaling.

    Returns:
        dict ``boxes`` (M, 4) float32, ``classes`` (M,) int32, ``masks`` (M, size, size) uint8.
    """
    import cv2

    masks, boxes = target["masks"], np.asarray(target["boxes"], np.float32).reshape(-1, 4) * scale
    cls = np.asarray(target["category_ids"], np.int32)
    crowd = np.asarray(target.get("iscrowd", np.zeros(len(cls), bool)), bool)
    keep = ~crowd & (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
    order = [i for i in np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable") if keep[i]]
    order = order[:max_instances]
    out = {
        "boxes": np.zeros((max_instances, 4), np.float32),
        "classes": np.zeros((max_instances,), np.int32),
        "masks": np.zeros((max_instances, size, size), np.uint8),
    }
    if order:
        h, w = masks.shape[1:]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        for slot, i in enumerate(order):
            m = cv2.resize(masks[i].astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            out["masks"][slot, :nh, :nw] = m >= 0.5
        out["boxes"][: len(order)] = np.clip(boxes[order], 0, size)
        out["classes"][: len(order)] = cls[order]
    return out


def hflip(image, target):
    """Mirror a letterboxed sample left-right (boxes, masks and image together)."""
    size = image.shape[1]
    boxes = target["boxes"].copy()
    valid = target["classes"] > 0
    boxes[valid, 0], boxes[valid, 2] = size - target["boxes"][valid, 2], size - target["boxes"][valid, 0]
    return image[:, ::-1].copy(), {"boxes": boxes, "classes": target["classes"], "masks": target["masks"][:, :, ::-1].copy()}


def shrink(image, target, factor):
    """Scale a letterboxed sample down by ``factor`` (≤ 1) into the top-left corner of the
    same canvas: smaller people for the same input size (scale augmentation)."""
    import cv2

    size = image.shape[0]
    n = max(1, round(size * factor))
    if n >= size:
        return image, target
    f = n / size
    out = np.zeros_like(image)
    out[:n, :n] = cv2.resize(image, (n, n), interpolation=cv2.INTER_AREA)
    masks = np.zeros_like(target["masks"])
    classes = target["classes"].copy()
    boxes = target["boxes"] * f
    for k in range(len(classes)):
        if classes[k] > 0:
            masks[k, :n, :n] = cv2.resize(target["masks"][k].astype(np.float32), (n, n), interpolation=cv2.INTER_AREA) >= 0.5
            if boxes[k, 2] - boxes[k, 0] < 1.0 or boxes[k, 3] - boxes[k, 1] < 1.0 or not masks[k].any():
                classes[k], boxes[k], masks[k] = 0, 0.0, 0
    return out, {"boxes": boxes.astype(np.float32), "classes": classes, "masks": masks}


def zoom(image, target, factor, rng, min_area=16):
    """Scale a letterboxed sample up by ``factor`` (> 1) and cut a random ``size × size`` window
    out of it: larger people, partly out of frame (the upper half of large-scale jitter, Ghiasi et
    al. 2021). Boxes are clipped to the window; an instance with fewer than ``min_area`` mask
    pixels left in it is dropped."""
    import cv2

    size = image.shape[0]
    n = round(size * factor)
    if n <= size:
        return image, target
    f = n / size
    y0, x0 = int(rng.integers(0, n - size + 1)), int(rng.integers(0, n - size + 1))
    out = cv2.resize(image, (n, n), interpolation=cv2.INTER_LINEAR)[y0:y0 + size, x0:x0 + size].copy()
    masks = np.zeros_like(target["masks"])
    classes = target["classes"].copy()
    boxes = np.clip(target["boxes"] * f - np.array([x0, y0, x0, y0], np.float32), 0, size)
    for k in range(len(classes)):
        if classes[k] > 0:
            big = cv2.resize(target["masks"][k].astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR)
            masks[k] = big[y0:y0 + size, x0:x0 + size] >= 0.5
            if boxes[k, 2] - boxes[k, 0] < 1.0 or boxes[k, 3] - boxes[k, 1] < 1.0 or masks[k].sum() < min_area:
                classes[k], boxes[k], masks[k] = 0, 0.0, 0
    return out, {"boxes": boxes.astype(np.float32), "classes": classes, "masks": masks}


def _instance_samples(instances, size, max_instances, training, seed, cache, scale_range):
    """Letterboxed, padded ``(image, target)`` samples (numpy), forever in training; the body of
    ``make_instance_dataset`` and ``instance_batches``."""
    sources = instances if isinstance(instances, (list, tuple)) else [instances]
    items = [(d, i) for d in sources for i in range(len(d))]
    if not items:
        raise KsegError("make_instance_dataset got no images; check the dataset paths and categories")
    store = {}

    def sample(j):
        if cache and j in store:
            image, t = store[j]
        else:
            d, i = items[j]
            raw, target = d.load(i)
            image, scale = letterbox(raw, size)
            t = letterbox_target(target, size, scale, max_instances)
            if cache:  # keep only the filled slots
                n = int((t["classes"] > 0).sum())
                store[j] = (image, {k: v[:n] for k, v in t.items()})
        n = len(t["classes"])
        full = {
            "boxes": np.zeros((max_instances, 4), np.float32),
            "classes": np.zeros((max_instances,), np.int32),
            "masks": np.zeros((max_instances, size, size), np.uint8),
        }
        for k in full:
            full[k][:n] = t[k][:max_instances]
        return image, full

    def gen():
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(items)) if training else np.arange(len(items))
            for j in order:
                image, t = sample(int(j))
                if training and rng.random() < 0.5:
                    image, t = hflip(image, t)
                if training and (scale_range[0] < 1.0 or scale_range[1] > 1.0):
                    factor = rng.uniform(*scale_range)
                    image, t = shrink(image, t, factor) if factor < 1.0 else zoom(image, t, factor, rng)
                yield image, t
            if not training:
                return

    return gen


def make_instance_dataset(instances, size=320, batch_size=2, max_instances=16, training=True, seed=0, cache=True,
                          scale_range=(1.0, 1.0)):
    """A ``tf.data.Dataset`` of padded instance batches for ``MaskRCNN.fit``.

    Args:
        instances: an ``InstanceDataset`` or a list of them (concatenated; class ids as they are).
        size: letterbox side S.
        batch_size: images per batch (the last partial batch is dropped in training).
        max_instances: instance slots M per image.
        training: shuffle every epoch, flip left-right at random, repeat.
        seed: shuffle/flip seed.
        cache: letterbox every sample once and keep it in memory (compact: only real instances).
        scale_range: training only: each sample is rescaled by a factor drawn uniformly from this
            range: below 1 shrunk into the canvas (``shrink``), above 1 enlarged and cropped at a
            random place (``zoom``); e.g. ``(0.6, 1.0)``, or ``(0.5, 1.6)`` for large-scale jitter.

    Returns:
        ``tf.data.Dataset`` of ``(images (B, S, S, 3) uint8, {"boxes", "classes", "masks"})``.

    Example:
        ds = make_instance_dataset(open_instances(root, "train", categories=("person",)), size=320)
    """
    import tensorflow as tf

    gen = _instance_samples(instances, size, max_instances, training, seed, cache, scale_range)
    signature = (
        tf.TensorSpec((size, size, 3), tf.uint8),
        {
            "boxes": tf.TensorSpec((max_instances, 4), tf.float32),
            "classes": tf.TensorSpec((max_instances,), tf.int32),
            "masks": tf.TensorSpec((max_instances, size, size), tf.uint8),
        },
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
    return ds.batch(batch_size, drop_remainder=training).prefetch(2)


def instance_batches(instances, size=320, batch_size=2, max_instances=16, training=True, seed=0, cache=True,
                     scale_range=(1.0, 1.0)):
    """The batches of ``make_instance_dataset`` as a Python generator of NumPy arrays, without
    TensorFlow: for ``MaskRCNN.fit`` under JAX on a machine that has no TensorFlow (give
    ``steps_per_epoch``: in training it never ends). Same arguments and samples (same seed, same
    draws) as ``make_instance_dataset``.

    Example:
        model.fit(instance_batches(instances, size=320), steps_per_epoch=200, epochs=40)
    """
    samples = _instance_samples(instances, size, max_instances, training, seed, cache, scale_range)()
    while True:
        chunk = [s for _, s in zip(range(batch_size), samples)]
        if not chunk or (training and len(chunk) < batch_size):
            return
        yield (np.stack([c[0] for c in chunk]),
               {k: np.stack([c[1][k] for c in chunk]) for k in ("boxes", "classes", "masks")})


def rle_encode(mask):
    """A binary ``(H, W)`` mask as a COCO RLE dict with a ``str`` ``counts`` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_coco_gt(path, samples, class_names):
    """Write instance ground truth as a COCO instances JSON (for pycocotools evaluation).

    Args:
        path: output ``.json`` (written atomically).
        samples: list of dicts with ``image_id`` (int), ``masks`` ``(N, H, W)`` 0/1,
            ``category_ids`` ``(N,)`` (1..K), optional ``iscrowd`` ``(N,)``.
        class_names: ``("background", name_1, ...)``; category ``k`` is named ``class_names[k]``.

    Example:
        write_coco_gt("gt.json", [{"image_id": 1, "masks": m, "category_ids": [1]}], ("bg", "shape"))
    """
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for s in samples:
        masks = np.asarray(s["masks"], np.uint8)
        h, w = masks.shape[1:] if masks.ndim == 3 and len(masks) else s.get("size", (0, 0))
        images.append({"id": int(s["image_id"]), "height": int(h), "width": int(w), "file_name": f"{int(s['image_id'])}.png"})
        crowd = s.get("iscrowd", np.zeros(len(masks), bool))
        for m, c, cr in zip(masks, s["category_ids"], crowd):
            rle = rle_encode(m)
            anns.append({
                "id": len(anns) + 1, "image_id": int(s["image_id"]), "category_id": int(c),
                "segmentation": rle, "area": float(mask_utils.area(mask_utils.encode(np.asfortranarray(m)))),
                "bbox": [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))],
                "iscrowd": int(bool(cr)),
            })
    cats = [{"id": k, "name": n} for k, n in enumerate(class_names) if k > 0]
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return Path(path)


def subset_coco_json(src, dst, category_ids, image_ids=None):
    """Copy a COCO instances JSON keeping only some categories (and images).

    pycocotools averages AP over every category of the ground truth, so a person model is
    scored on a file that holds only the person category.

    Args:
        src: COCO instances JSON.
        dst: output path (written atomically).
        category_ids: COCO category ids to keep.
        image_ids: image ids to keep (``None``: images with at least one kept annotation).
    """
    data = json.loads(Path(src).read_text())
    cats = set(int(c) for c in category_ids)
    anns = [a for a in data["annotations"] if a["category_id"] in cats]
    keep = set(int(i) for i in image_ids) if image_ids is not None else {a["image_id"] for a in anns}
    out = {
        "images": [i for i in data["images"] if i["id"] in keep],
        "annotations": [a for a in anns if a["image_id"] in keep],
        "categories": [c for c in data["categories"] if c["id"] in cats],
    }
    for key in ("info", "licenses"):
        if key in data:
            out[key] = data[key]
    with atomic_path(dst) as tmp:
        Path(tmp).write_text(json.dumps(out))
    return Path(dst)
