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


def crop_box(image, mask, box, size, angle=0.0):
    """Sample the box ``(y1, x1, y2, x2)`` (source pixels, edges) of both to ``size``.

    The box may reach outside the source (padding: image 0, mask 255), be flipped (x1 > x2)
    and be rotated by ``angle`` radians about its centre. Everything is one projective
    transform per tensor, evaluated at the output resolution.
    """
    th, tw = float(size[0]), float(size[1])
    y1, x1, y2, x2 = tf.unstack(tf.cast(box, tf.float32))
    bh, bw = y2 - y1, x2 - x1
    cy, cx = (y1 + y2) / 2.0, (x1 + x2) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    # output pixel (xo, yo) reads source pixel-centre coordinates (xi, yi):
    #   [xi, yi] = [cx, cy] - 0.5 + R(angle) [u bw, v bh],  u = (xo + .5)/tw - .5, v likewise
    ou, ov = 0.5 / tw - 0.5, 0.5 / th - 0.5
    a0, a1 = c * bw / tw, -s * bh / th
    a2 = cx - 0.5 + c * bw * ou - s * bh * ov
    b0, b1 = s * bw / tw, c * bh / th
    b2 = cy - 0.5 + s * bw * ou + c * bh * ov
    transform = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None]
    shape = tf.constant([int(th), int(tw)], tf.int32)
    img = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform, output_shape=shape,
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    m = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(mask, tf.float32)[None, ..., None], transforms=transform, output_shape=shape,
        fill_value=float(IGNORE), interpolation="NEAREST", fill_mode="CONSTANT")[0, ..., 0]
    return img, tf.cast(m, tf.uint8)


def resize(image, mask, size):
    """Deterministic resize of both to ``size`` (aspect ratio not kept, as at inference)."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    return crop_box(image, mask, tf.stack([0.0, 0.0, h, w]), size)


def _angle(seed, max_degrees):
    if not max_degrees:
        return tf.constant(0.0)
    return tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * (math.pi / 180.0)


def random_scale_crop_flip(image, mask, size, seed, scale=(0.5, 2.0), flip=True, max_degrees=0.0):
    """Random zoom (log-uniform in ``scale``; 1 = the image just covers ``size``), random
    position (a crop, or padding where the zoomed image is smaller), random horizontal flip
    and random rotation within ±``max_degrees``, as one resampling."""
    s1, s2, s3, s4, s5 = _seeds(seed, 5)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    th, tw = float(size[0]), float(size[1])
    lo, hi = math.log(scale[0]), math.log(scale[1])
    s = tf.exp(tf.random.stateless_uniform([], s1, lo, hi))
    cover = tf.maximum(th / h, tw / w)
    step = 1.0 / (cover * s)  # source pixels per output pixel
    bh, bw = th * step, tw * step
    y1 = tf.random.stateless_uniform([], s2, tf.minimum(0.0, h - bh), tf.maximum(0.0, h - bh) + 1e-6)
    x1 = tf.random.stateless_uniform([], s3, tf.minimum(0.0, w - bw), tf.maximum(0.0, w - bw) + 1e-6)
    box = tf.stack([y1, x1, y1 + bh, x1 + bw])
    if flip:
        box = tf.where(tf.random.stateless_uniform([], s4) < 0.5, tf.stack([y1, x1 + bw, y1 + bh, x1]), box)
    return crop_box(image, mask, box, size, _angle(s5, max_degrees))


def portrait_box(mask, size, seed, height_frac=(0.35, 0.6)):
    """A head-and-shoulders window over the person in ``mask``.

    The window's top is a little above the person's top, its height a random fraction of the
    person's height, its aspect that of ``size``, centred on the person's upper part.

    Returns:
        ``(box (y1, x1, y2, x2), has_person)``.
    """
    s1, s2, s3 = _seeds(seed, 3)
    person = tf.logical_and(mask != 0, mask != IGNORE)
    rows = tf.reduce_any(person, axis=1)
    has = tf.reduce_any(rows)
    ridx = tf.cast(tf.where(rows)[:, 0], tf.float32)
    top = tf.cond(has, lambda: tf.reduce_min(ridx), lambda: 0.0)
    bottom = tf.cond(has, lambda: tf.reduce_max(ridx) + 1.0, lambda: tf.cast(tf.shape(mask)[0], tf.float32))
    frac = tf.random.stateless_uniform([], s1, height_frac[0], height_frac[1])
    bh = tf.maximum((bottom - top) * frac, 8.0)
    bw = bh * float(size[1]) / float(size[0])
    y1 = top - bh * tf.random.stateless_uniform([], s2, 0.03, 0.15)
    # centre on the person's columns within the window's rows
    band = person[tf.cast(tf.maximum(y1, 0.0), tf.int32): tf.cast(y1 + bh, tf.int32)]
    cols = tf.cast(tf.where(tf.reduce_any(band, axis=0))[:, 0], tf.float32)
    cx = tf.cond(tf.size(cols) > 0, lambda: 0.5 * (tf.reduce_min(cols) + tf.reduce_max(cols) + 1.0),
                 lambda: tf.cast(tf.shape(mask)[1], tf.float32) / 2.0)
    cx = cx + bw * tf.random.stateless_uniform([], s3, -0.12, 0.12)
    return tf.stack([y1, cx - bw / 2.0, y1 + bh, cx + bw / 2.0]), has


def portrait_crop(image, mask, size, seed, flip=True, max_degrees=0.0, height_frac=(0.35, 0.6)):
    """Frame head and shoulders from a full-body photo, like a webcam close-up.

    Falls back to ``random_scale_crop_flip`` when the mask shows no person.
    """
    s1, s2, s3, s4 = _seeds(seed, 4)
    box, has = portrait_box(mask, size, s1, height_frac)
    if flip:
        y1, x1, y2, x2 = tf.unstack(box)
        box = tf.where(tf.random.stateless_uniform([], s2) < 0.5, tf.stack([y1, x2, y2, x1]), box)
    return tf.cond(
        has,
        lambda: crop_box(image, mask, box, size, _angle(s4, max_degrees)),
        lambda: random_scale_crop_flip(image, mask, size, s3, flip=flip, max_degrees=max_degrees),
    )


def rotate(image, mask, seed, max_degrees=10.0):
    """Rotate both about the centre by a random angle in ±``max_degrees`` (mask nearest, fill 255)."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    size = (image.shape[0], image.shape[1])
    if size[0] is None or size[1] is None:
        raise ValueError("rotate needs a static image size; use crop_box(..., angle=) otherwise")
    return crop_box(image, mask, tf.stack([0.0, 0.0, h, w]), size, _angle(seed, max_degrees))


# YIQ: hue is a rotation of the (I, Q) chroma plane, saturation its scale
_RGB2YIQ = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], tf.float32)
_YIQ2RGB = tf.linalg.inv(_RGB2YIQ)


def photometric(images, seed, brightness=0.2, contrast=0.25, saturation=0.3, hue=0.03, blur_prob=0.2,
                noise_prob=0.2, noise_std=6.0):
    """Colour jitter, occasional blur and noise on a batch ``(B, H, W, 3)`` float 0..255.

    Each image draws its own parameters; hue and saturation are one 3×3 colour matrix per
    image (a rotation and scaling of the YIQ chroma plane), so the whole batch costs a few
    vectorised ops. A single ``(H, W, 3)`` image is accepted too.
    """
    single = images.shape.rank == 3
    x = images[None] if single else images
    b = tf.shape(x)[0]
    s = _seeds(seed, 7)
    theta = tf.random.stateless_uniform([b], s[0], -hue, hue) * (2.0 * math.pi)
    sat = tf.random.stateless_uniform([b], s[1], 1.0 - saturation, 1.0 + saturation)
    c, si = tf.cos(theta) * sat, tf.sin(theta) * sat
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    chroma = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, c, -si], -1), tf.stack([zero, si, c], -1)], -2)
    m = tf.einsum("ij,bjk,kl->bil", _YIQ2RGB, chroma, _RGB2YIQ)  # rgb' = M rgb
    x = tf.einsum("bhwc,bdc->bhwd", x, m)
    gain = tf.random.stateless_uniform([b, 1, 1, 1], s[2], 1.0 - contrast, 1.0 + contrast)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    shift = tf.random.stateless_uniform([b, 1, 1, 1], s[3], -brightness, brightness) * 255.0
    x = (x - mean) * gain + mean + shift
    g = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # binomial ≈ Gaussian, sigma 1
    kh = tf.tile(g[:, None, None, None], [1, 1, 3, 1])
    kw = tf.tile(g[None, :, None, None], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(x, kh, [1, 1, 1, 1], "SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, kw, [1, 1, 1, 1], "SAME")
    use_blur = tf.random.stateless_uniform([b, 1, 1, 1], s[4]) < blur_prob
    x = tf.where(use_blur, blurred, x)
    use_noise = tf.cast(tf.random.stateless_uniform([b, 1, 1, 1], s[5]) < noise_prob, tf.float32)
    noise = tf.random.stateless_uniform(tf.shape(x), s[6], -1.0, 1.0) * (noise_std * 1.7320508)
    x = tf.clip_by_value(x + use_noise * noise, 0.0, 255.0)
    return x[0] if single else x
