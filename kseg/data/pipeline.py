"""tf.data pipeline: decode → LUT → joint geometry → colour → normalise → batch → prefetch.

Example:
    from kseg.data import open_dataset
    from kseg.data.pipeline import Augment, make_dataset
    ds = open_dataset("../shared/data/people-parsing", "ccp", groups="person")
    batches = make_dataset(ds, size=(256, 256), batch_size=16, augment=Augment(portrait=0.5))
    images, masks = next(iter(batches))   # float32 (16, 256, 256, 3) in 0..255, int32 (16, 256, 256)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kseg.data import transforms as T
from kseg.errors import KsegError


@dataclass(frozen=True)
class Augment:
    """Training augmentation.

    Attributes:
        scale: zoom range (log-uniform); 1 means the image just covers the output.
        rotate: maximum rotation in degrees (0 turns it off).
        flip: random horizontal flips.
        portrait: probability of a head-and-shoulders crop instead of a random crop.
        photometric: colour jitter, blur and noise.
    """

    scale: tuple = (0.5, 2.0)
    rotate: float = 10.0
    flip: bool = True
    portrait: float = 0.0
    photometric: bool = True


NORMALIZATIONS = {
    None: (0.0, 1.0),
    "none": (0.0, 1.0),
    "minus1_1": (127.5, 127.5),
    "lite": (127.0, 128.0),
    "unit": (0.0, 255.0),
}


def _tensors(ds):
    images = [s.image for s in ds.samples]
    mask_paths = [s.mask if isinstance(s.mask, str) else "" for s in ds.samples]
    mask_bytes = [b"" if isinstance(s.mask, str) else bytes(s.mask) for s in ds.samples]
    sources = np.array([s.source for s in ds.samples], np.int32)
    return images, mask_paths, mask_bytes, sources


def _decode(image_path, mask_path, mask_bytes, source, luts, num_classes, max_side):
    data = tf.io.read_file(image_path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    raw = tf.cond(tf.strings.length(mask_path) > 0, lambda: tf.io.read_file(mask_path), lambda: mask_bytes)
    raw = tf.io.decode_png(raw, channels=1)[..., 0]
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(raw)))
    tf.debugging.Assert(
        same,
        ["mask does not match its image's size:", image_path, tf.shape(raw), "vs", tf.shape(image)[:2]],
        summarize=4,
    )
    mask = tf.gather(luts[source], tf.cast(raw, tf.int32))
    bad = tf.logical_and(mask >= num_classes, mask != T.IGNORE)
    tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                        ["mask has labels outside the classes:", image_path], summarize=2)
    image = tf.cast(image, tf.float32)
    if max_side:
        # keep cached samples small: shrink so the longer side is at most max_side
        h = tf.cast(tf.shape(image)[0], tf.float32)
        w = tf.cast(tf.shape(image)[1], tf.float32)
        f = tf.minimum(1.0, max_side / tf.maximum(h, w))
        new = tf.cast(tf.round(tf.stack([h * f, w * f])), tf.int32)
        image = tf.image.resize(image, new, method="area")
        mask = tf.image.resize(mask[..., None], new, method="nearest")[..., 0]
    return tf.cast(tf.round(image), tf.uint8), mask


def make_dataset(
    ds,
    *,
    size=(256, 256),
    batch_size=8,
    training=True,
    augment: Augment | None = None,
    seed=0,
    cache=False,
    on_error="skip",
    normalization=None,
    shuffle=True,
    repeat=False,
    drop_remainder=None,
):
    """Build a ``tf.data.Dataset`` of ``(images float32 (B,H,W,3), masks int32 (B,H,W))``.

    Args:
        ds: a ``kseg.data.readers.SegDataset``.
        size: output ``(H, W)``.
        batch_size: images per batch.
        training: random augmentation and shuffling; otherwise a deterministic resize.
        augment: an ``Augment`` (default ``Augment()`` when training).
        seed: makes shuffling and augmentation reproducible.
        cache: ``False``, ``"memory"``, or a file path: decoded samples (longer side at most
            2× the output's) are kept so later epochs skip JPEG decoding.
        on_error: ``"skip"`` drops unreadable or mismatched samples (each is logged once by
            tf.data); ``"fail"`` stops with an error naming the file.
        normalization: ``None`` (0..255, the models normalise themselves), ``"minus1_1"``,
            ``"lite"`` ((x-127)/128) or ``"unit"`` (x/255).
        shuffle: shuffle samples each epoch (training only).
        repeat: repeat forever (use with ``steps_per_epoch``).
        drop_remainder: default ``training``.

    Returns:
        The batched, prefetched dataset.
    """
    if len(ds) == 0:
        raise KsegError(f"dataset {ds.name} has no samples; check the folder and --format")
    if on_error not in ("skip", "fail"):
        raise KsegError(f"on_error={on_error!r}: use skip or fail")
    if normalization not in NORMALIZATIONS:
        raise KsegError(f"normalization={normalization!r}: use one of {', '.join(map(str, NORMALIZATIONS))}")
    size = (int(size[0]), int(size[1]))
    augment = augment or Augment()
    drop_remainder = training if drop_remainder is None else drop_remainder
    luts = tf.constant(ds.luts)
    images, mask_paths, mask_bytes, sources = _tensors(ds)
    num_classes = ds.num_classes
    max_side = 2 * max(size) if cache else 0

    data = tf.data.Dataset.from_tensor_slices((images, mask_paths, mask_bytes, sources))
    data = data.map(lambda a, b, c, d: _decode(a, b, c, d, luts, num_classes, max_side),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if on_error == "skip":
        data = data.ignore_errors(log_warning=True)
    if cache:
        data = data.cache("" if cache in (True, "memory") else str(cache))
    if training and shuffle:
        data = data.shuffle(min(len(ds), 2048), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    mean, std = NORMALIZATIONS[normalization]

    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        data = tf.data.Dataset.zip((data, seeds))

        def aug(pair, s):
            image, mask = pair
            image = tf.cast(image, tf.float32)
            s_geo, s_por, s_pick, s_rot, s_col = T._seeds(s, 5)
            if augment.portrait > 0:
                image, mask = tf.cond(
                    tf.random.stateless_uniform([], s_pick) < augment.portrait,
                    lambda: T.portrait_crop(image, mask, size, s_por, flip=augment.flip),
                    lambda: T.random_scale_crop_flip(image, mask, size, s_geo, augment.scale, augment.flip),
                )
            else:
                image, mask = T.random_scale_crop_flip(image, mask, size, s_geo, augment.scale, augment.flip)
            if augment.rotate:
                image, mask = T.rotate(image, mask, s_rot, augment.rotate)
            if augment.photometric:
                image = T.photometric(image, s_col)
            return image, mask

        data = data.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        data = data.map(lambda image, mask: T.resize(tf.cast(image, tf.float32), mask, size),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def finish(image, mask):
        image = tf.ensure_shape(image, (*size, 3))
        mask = tf.ensure_shape(mask, size)
        if normalization not in (None, "none"):
            image = (image - mean) / std
        return image, tf.cast(mask, tf.int32)

    data = data.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    return data.prefetch(tf.data.AUTOTUNE)


def first_bad_sample(ds, limit=None) -> str | None:
    """The one-line reason of the first sample that cannot be read (numpy readers), if any."""
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        try:
            ds.load(i)
        except KsegError as e:
            return str(e)
    return None
