"""Pure TensorFlow transforms ``(image, mask) -> (image, mask)`` for tf.data.

Geometry moves image and mask together: images are sampled bilinearly, masks by nearest
neighbour, and what comes from outside the source is 0 in the image and 255 (ignore) in the
mask. Colour transforms touch the image only. Every random transform takes a stateless
``seed`` (shape ``(2,)`` int) so that a pipeline is reproducible.

Images are float32 ``(H, W, 3)`` in 0..255; masks are uint8 ``(H, W)`` class ids.

The geometric part is one ``crop_and_resize`` per tensor: a random scale, a random crop
(or pad) and a horizontal flip are all a choice of box in the source image, so the work is
done once, at the output resolution.
"""

from __future__ import annotations

import math

import tensorflow as tf

IGNORE = 255


def _seeds(seed, n):
    """``n`` independent stateless seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def crop_box(image, mask, box, size):
    """Sample the box ``(y1, x1, y2, x2)`` (in source pixels) of both to ``size``.

    A box that reaches outside the source pads (image 0, mask 255); a box with x1 > x2 is
    flipped left-right.
    """
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    # crop_and_resize maps normalised y1 to row 0 and y2 to row h-1 (pixel centres); box edges
    # in pixels are converted so that output pixel centres sample the box evenly.
    th, tw = size
    y1, x1, y2, x2 = tf.unstack(tf.cast(box, tf.float32))
    dy = (y2 - y1) / th
    dx = (x2 - x1) / tw
    ny1 = (y1 + 0.5 * dy - 0.5) / tf.maximum(h - 1.0, 1.0)
    ny2 = (y2 - 0.5 * dy - 0.5) / tf.maximum(h - 1.0, 1.0)
    nx1 = (x1 + 0.5 * dx - 0.5) / tf.maximum(w - 1.0, 1.0)
    nx2 = (x2 - 0.5 * dx - 0.5) / tf.maximum(w - 1.0, 1.0)
    nbox = tf.stack([ny1, nx1, ny2, nx2])[None]
    img = tf.image.crop_and_resize(image[None], nbox, [0], size, method="bilinear", extrapolation_value=0.0)[0]
    # nearest for the mask; +1 so that padding (0 after extrapolation) becomes 255 below
    m = tf.cast(mask, tf.float32)[None, ..., None] + 1.0
    m = tf.image.crop_and_resize(m, nbox, [0], size, method="nearest", extrapolation_value=0.0)[0, ..., 0]
    m = tf.where(m < 0.5, float(IGNORE) + 1.0, m) - 1.0
    return img, tf.cast(m, tf.uint8)


def resize(image, mask, size):
    """Deterministic resize of both to ``size`` (aspect ratio not kept, as at inference)."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    return crop_box(image, mask, tf.stack([0.0, 0.0, h, w]), size)


def random_scale_crop_flip(image, mask, size, seed, scale=(0.5, 2.0), flip=True):
    """Random zoom (log-uniform in ``scale``, 1 = the image just covers ``size``), random
    position (crop, or pad where the zoomed image is smaller), random horizontal flip."""
    s1, s2, s3, s4 = _seeds(seed, 4)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    th, tw = float(size[0]), float(size[1])
    lo, hi = math.log(scale[0]), math.log(scale[1])
    s = tf.exp(tf.random.stateless_uniform([], s1, lo, hi))
    cover = tf.maximum(th / h, tw / w)
    # source pixels per output pixel
    step = 1.0 / (cover * s)
    bh, bw = th * step, tw * step
    y1 = tf.random.stateless_uniform([], s2, tf.minimum(0.0, h - bh), tf.maximum(0.0, h - bh) + 1e-6)
    x1 = tf.random.stateless_uniform([], s3, tf.minimum(0.0, w - bw), tf.maximum(0.0, w - bw) + 1e-6)
    box = tf.stack([y1, x1, y1 + bh, x1 + bw])
    if flip:
        do = tf.random.stateless_uniform([], s4) < 0.5
        box = tf.where(do, tf.stack([y1, x1 + bw, y1 + bh, x1]), box)
    return crop_box(image, mask, box, size)


def portrait_box(mask, size, seed, height_frac=(0.35, 0.6)):
    """A head-and-shoulders window over the person in ``mask`` (``None`` if no person).

    The window's top is a little above the person's top, its height a random fraction of the
    person's height, its aspect that of ``size``, centred on the person's upper part.
    Returns ``(box (y1, x1, y2, x2), has_person)``.
    """
    s1, s2, s3 = _seeds(seed, 3)
    person = tf.logical_and(mask != 0, mask != IGNORE)
    rows = tf.reduce_any(person, axis=1)
    has = tf.reduce_any(rows)
    ridx = tf.cast(tf.where(rows)[:, 0], tf.float32)
    top = tf.cond(has, lambda: tf.reduce_min(ridx), lambda: 0.0)
    bottom = tf.cond(has, lambda: tf.reduce_max(ridx) + 1.0, lambda: tf.cast(tf.shape(mask)[0], tf.float32))
    ph = bottom - top
    frac = tf.random.stateless_uniform([], s1, height_frac[0], height_frac[1])
    bh = tf.maximum(ph * frac, 8.0)
    bw = bh * float(size[1]) / float(size[0])
    y1 = top - bh * tf.random.stateless_uniform([], s2, 0.03, 0.15)
    # centre on the person's columns within the window's rows
    band = person[tf.cast(tf.maximum(y1, 0.0), tf.int32): tf.cast(y1 + bh, tf.int32)]
    cols = tf.cast(tf.where(tf.reduce_any(band, axis=0))[:, 0], tf.float32)
    cx = tf.cond(tf.size(cols) > 0, lambda: 0.5 * (tf.reduce_min(cols) + tf.reduce_max(cols) + 1.0),
                 lambda: tf.cast(tf.shape(mask)[1], tf.float32) / 2.0)
    cx = cx + bw * tf.random.stateless_uniform([], s3, -0.12, 0.12)
    return tf.stack([y1, cx - bw / 2.0, y1 + bh, cx + bw / 2.0]), has


def portrait_crop(image, mask, size, seed, flip=True, height_frac=(0.35, 0.6)):
    """Frame head and shoulders from a full-body photo, like a webcam close-up.

    Falls back to ``random_scale_crop_flip`` when the mask shows no person.
    """
    s1, s2, s3 = _seeds(seed, 3)
    box, has = portrait_box(mask, size, s1, height_frac)
    if flip:
        y1, x1, y2, x2 = tf.unstack(box)
        box = tf.where(tf.random.stateless_uniform([], s2) < 0.5, tf.stack([y1, x2, y2, x1]), box)
    return tf.cond(
        has,
        lambda: crop_box(image, mask, box, size),
        lambda: random_scale_crop_flip(image, mask, size, s3, flip=flip),
    )


def rotate(image, mask, seed, max_degrees=10.0):
    """Rotate both about the centre by a random angle in ±``max_degrees`` (mask nearest, fill 255)."""
    angle = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * (math.pi / 180.0)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    c, s = tf.cos(angle), tf.sin(angle)
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    # output (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)
    transform = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])[None]
    shape = tf.shape(image)[:2]
    img = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=shape, fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    m = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(mask, tf.float32)[None, ..., None], transforms=transform, output_shape=shape,
        fill_value=float(IGNORE), interpolation="NEAREST", fill_mode="CONSTANT")[0, ..., 0]
    return img, tf.cast(m, tf.uint8)


def photometric(image, seed, brightness=0.2, contrast=0.25, saturation=0.3, hue=0.03, blur_prob=0.2,
                noise_prob=0.2, noise_std=6.0):
    """Colour jitter, occasional Gaussian blur and noise, on a float 0..255 image."""
    s = _seeds(seed, 8)
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, brightness, s[0])
    x = tf.image.stateless_random_contrast(x, 1.0 - contrast, 1.0 + contrast, s[1])
    x = tf.image.stateless_random_saturation(x, 1.0 - saturation, 1.0 + saturation, s[2])
    x = tf.image.stateless_random_hue(x, hue, s[3])
    x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    sigma = tf.random.stateless_uniform([], s[4], 0.5, 1.5)
    k = tf.range(-2.0, 3.0)
    g = tf.exp(-(k * k) / (2.0 * sigma * sigma))
    g = g / tf.reduce_sum(g)
    kernel = tf.tile((g[:, None] * g[None, :])[:, :, None, None], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(tf.pad(x[None], [[0, 0], [2, 2], [2, 2], [0, 0]], "SYMMETRIC"), kernel,
                                     [1, 1, 1, 1], "VALID")[0]
    x = tf.where(tf.random.stateless_uniform([], s[5]) < blur_prob, blurred, x)
    noise = tf.random.stateless_normal(tf.shape(x), s[6], stddev=noise_std)
    x = tf.where(tf.random.stateless_uniform([], s[7]) < noise_prob, x + noise, x)
    return tf.clip_by_value(x, 0.0, 255.0)
