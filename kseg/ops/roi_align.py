"""RoIAlign and RoIPool on channels-last feature maps, with torchvision's semantics.

``roi_align`` follows ``torchvision.ops.roi_align`` exactly (He et al., Mask R-CNN): boxes are
``(x1, y1, x2, y2)`` in input-image pixels, scaled by ``spatial_scale`` to feature coordinates;
each output bin averages ``sampling_ratio``² bilinear samples (``sampling_ratio <= 0``: adaptive,
``ceil(roi_size / output_size)`` per box); ``aligned=True`` shifts by half a pixel so that a box
edge sits on a pixel edge, not on a pixel centre. ``roi_pool`` is Fast R-CNN's quantising
max-pooling (``torchvision.ops.roi_pool``): its rounding of box edges and bin edges is the
misalignment that RoIAlign removes.

Written with ``keras.ops`` (gathers and arithmetic only), so it runs on every Keras backend and
converts to builtin TFLite ops (GATHER, MUL, ADD, ...) when ``sampling_ratio > 0``.
"""

from __future__ import annotations

import math

from keras import ops


def _as_pair(size):
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _bilinear_coords(coord, size):
    """torchvision's ``bilinear_interpolate`` along one axis.

    Returns the low/high integer indices, their weights, and whether the sample is inside
    the ``[-1, size]`` band (outside it the sample contributes 0).
    """
    size_f = ops.cast(size, coord.dtype)
    valid = ops.logical_and(coord >= -1.0, coord <= size_f)
    c = ops.maximum(coord, 0.0)
    low = ops.floor(c)
    at_end = low >= size_f - 1.0
    low = ops.where(at_end, size_f - 1.0, low)
    high = ops.where(at_end, size_f - 1.0, low + 1.0)
    c = ops.where(at_end, low, c)
    frac = c - low
    return ops.cast(low, "int32"), ops.cast(high, "int32"), 1.0 - frac, frac, valid


def roi_align(features, boxes, box_indices, output_size, spatial_scale=1.0, sampling_ratio=2, aligned=True):
    """Crop and resize regions of a feature map by bilinear sampling (Mask R-CNN's RoIAlign).

    Args:
        features: ``(B, H, W, C)`` float feature map.
        boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)`` in input-image pixels.
        box_indices: ``(K,)`` int, the batch image each box belongs to.
        output_size: int or ``(out_h, out_w)``.
        spatial_scale: feature pixels per input pixel (``1 / stride``).
        sampling_ratio: samples per bin along each axis; ``<= 0`` chooses
            ``ceil(roi_size / output_size)`` per box, as torchvision does (dynamic shapes:
            fine for training and evaluation, not for TFLite export).
        aligned: shift box coordinates by -0.5 (the correct alignment; ``False`` reproduces
            the original Detectron behaviour).

    Returns:
        ``(K, out_h, out_w, C)`` pooled features, same dtype as ``features``.

    Example:
        >>> f = ops.reshape(ops.arange(16, dtype="float32"), (1, 4, 4, 1))
        >>> roi_align(f, [[0.0, 0.0, 4.0, 4.0]], [0], 2)[0, ..., 0]   # 2x2 bin means
        [[ 2.5,  4.5], [10.5, 12.5]]

    Reference:
        He et al., "Mask R-CNN", ICCV 2017; torchvision.ops.roi_align.
    """
    out_h, out_w = _as_pair(output_size)
    features = ops.convert_to_tensor(features)
    dtype = features.dtype
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    shape = ops.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]

    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * spatial_scale - offset
    y1 = boxes[:, 1] * spatial_scale - offset
    x2 = boxes[:, 2] * spatial_scale - offset
    y2 = boxes[:, 3] * spatial_scale - offset
    roi_w = x2 - x1
    roi_h = y2 - y1
    if not aligned:
        roi_w = ops.maximum(roi_w, 1.0)
        roi_h = ops.maximum(roi_h, 1.0)
    bin_h = roi_h / out_h
    bin_w = roi_w / out_w

    if sampling_ratio > 0:
        grid_h = grid_w = int(sampling_ratio)
        g_h = ops.full(ops.shape(roi_h), float(grid_h))
        g_w = ops.full(ops.shape(roi_w), float(grid_w))
    else:
        # torchvision: a box of zero size gets a 0-sample grid and outputs 0
        g_h = ops.maximum(ops.ceil(roi_h / out_h), 0.0)
        g_w = ops.maximum(ops.ceil(roi_w / out_w), 0.0)
        grid_h = ops.cast(ops.maximum(ops.max(g_h), 1.0), "int32")
        grid_w = ops.cast(ops.maximum(ops.max(g_w), 1.0), "int32")

    # sample coordinates: (K, out, grid) along each axis
    iy = ops.cast(ops.arange(grid_h), "float32")
    ix = ops.cast(ops.arange(grid_w), "float32")
    ph = ops.cast(ops.arange(out_h), "float32")
    pw = ops.cast(ops.arange(out_w), "float32")
    ys = (
        y1[:, None, None]
        + ph[None, :, None] * bin_h[:, None, None]
        + (iy[None, None, :] + 0.5) * bin_h[:, None, None] / ops.maximum(g_h, 1.0)[:, None, None]
    )
    xs = (
        x1[:, None, None]
        + pw[None, :, None] * bin_w[:, None, None]
        + (ix[None, None, :] + 0.5) * bin_w[:, None, None] / ops.maximum(g_w, 1.0)[:, None, None]
    )
    # adaptive grids: samples past a box's own grid size do not count
    use_y = ops.broadcast_to(ops.cast(iy[None, None, :] < g_h[:, None, None], "float32"), ops.shape(ys))
    use_x = ops.broadcast_to(ops.cast(ix[None, None, :] < g_w[:, None, None], "float32"), ops.shape(xs))

    k = ops.shape(boxes)[0]
    ys = ops.reshape(ys, (k, -1))  # (K, Ny)
    xs = ops.reshape(xs, (k, -1))  # (K, Nx)
    y_lo, y_hi, wy_lo, wy_hi, vy = _bilinear_coords(ys, height)
    x_lo, x_hi, wx_lo, wx_hi, vx = _bilinear_coords(xs, width)
    vy = ops.cast(vy, "float32") * ops.reshape(use_y, (k, -1))
    vx = ops.cast(vx, "float32") * ops.reshape(use_x, (k, -1))

    flat = ops.reshape(ops.cast(features, "float32"), (-1, channels))
    base = box_indices[:, None, None] * (height * width)

    def gather(yi, xi):  # (K, Ny), (K, Nx) -> (K, Ny, Nx, C)
        idx = base + yi[:, :, None] * width + xi[:, None, :]
        return ops.take(flat, idx, axis=0)

    def w2(a, b):  # (K, Ny), (K, Nx) -> (K, Ny, Nx, 1)
        return (a[:, :, None] * b[:, None, :])[..., None]

    vals = (
        gather(y_lo, x_lo) * w2(wy_lo, wx_lo)
        + gather(y_lo, x_hi) * w2(wy_lo, wx_hi)
        + gather(y_hi, x_lo) * w2(wy_hi, wx_lo)
        + gather(y_hi, x_hi) * w2(wy_hi, wx_hi)
    )
    vals = vals * w2(vy, vx)
    vals = ops.reshape(vals, (k, out_h, grid_h, out_w, grid_w, channels))
    count = ops.reshape(ops.maximum(g_h * g_w, 1.0), (k, 1, 1, 1))
    out = ops.sum(vals, axis=(2, 4)) / count
    return ops.cast(out, dtype)


def _round_half_away(x):
    return ops.sign(x) * ops.floor(ops.abs(x) + 0.5)


def roi_pool(features, boxes, box_indices, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoIPool: max over quantised bins (torchvision.ops.roi_pool semantics).

    Box edges are rounded to feature pixels and bin edges to whole pixels (floor/ceil), so a
    region can shift by up to half a feature pixel — the misalignment RoIAlign removes. Empty
    bins give 0.

    Args:
        features: ``(B, H, W, C)``.
        boxes: ``(K, 4)`` ``(x1, y1, x2, y2)`` in input-image pixels.
        box_indices: ``(K,)`` batch index of each box.
        output_size: int or ``(out_h, out_w)``.
        spatial_scale: feature pixels per input pixel.

    Returns:
        ``(K, out_h, out_w, C)``.

    Reference:
        Girshick, "Fast R-CNN", ICCV 2015; torchvision.ops.roi_pool.
    """
    out_h, out_w = _as_pair(output_size)
    features = ops.convert_to_tensor(features)
    dtype = features.dtype
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    box_indices = ops.cast(ops.convert_to_tensor(box_indices), "int32")
    shape = ops.shape(features)
    height, width = shape[1], shape[2]

    x1 = _round_half_away(boxes[:, 0] * spatial_scale)
    y1 = _round_half_away(boxes[:, 1] * spatial_scale)
    x2 = _round_half_away(boxes[:, 2] * spatial_scale)
    y2 = _round_half_away(boxes[:, 3] * spatial_scale)
    roi_w = ops.maximum(x2 - x1 + 1.0, 1.0)
    roi_h = ops.maximum(y2 - y1 + 1.0, 1.0)

    def window(start, extent, n_out, size):
        p = ops.cast(ops.arange(n_out), "float32")[None, :]
        bin_size = (extent / n_out)[:, None]
        lo = ops.floor(p * bin_size) + start[:, None]
        hi = ops.ceil((p + 1.0) * bin_size) + start[:, None]
        size_f = ops.cast(size, "float32")
        lo = ops.clip(lo, 0.0, size_f)
        hi = ops.clip(hi, 0.0, size_f)
        pos = ops.cast(ops.arange(size), "float32")[None, None, :]
        inside = ops.logical_and(pos >= lo[:, :, None], pos < hi[:, :, None])  # (K, n_out, size)
        return inside, hi > lo

    in_h, nonempty_h = window(y1, roi_h, out_h, height)  # (K, out_h, H)
    in_w, nonempty_w = window(x1, roi_w, out_w, width)  # (K, out_w, W)

    f = ops.take(ops.cast(features, "float32"), box_indices, axis=0)  # (K, H, W, C)
    neg = ops.convert_to_tensor(-3.0e38, "float32")
    # separable max: over columns of each horizontal bin, then over rows of each vertical bin
    cols = ops.where(in_w[:, None, :, :, None], f[:, :, None, :, :], neg)  # (K, H, out_w, W, C)
    cols = ops.max(cols, axis=3)  # (K, H, out_w, C)
    rows = ops.where(in_h[:, :, :, None, None], cols[:, None, :, :, :], neg)  # (K, out_h, H, out_w, C)
    out = ops.max(rows, axis=2)  # (K, out_h, out_w, C)
    nonempty = ops.logical_and(nonempty_h[:, :, None], nonempty_w[:, None, :])[..., None]
    out = ops.where(nonempty, out, 0.0)
    return ops.cast(out, dtype)


def fpn_level(boxes, k0=4, canonical_size=224.0, min_level=2, max_level=5):
    """FPN level of each box by its size: ``floor(k0 + log2(sqrt(w h) / canonical_size))``.

    Args:
        boxes: ``(K, 4)`` ``(x1, y1, x2, y2)`` in input-image pixels.
        k0: the level a ``canonical_size`` box maps to (4 in the FPN paper).
        canonical_size: 224, the ImageNet pre-training size.
        min_level, max_level: clip range (P2…P5).

    Returns:
        ``(K,)`` int32 levels.

    Reference:
        Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, Eq. 1.
    """
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    area = ops.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * ops.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    scale = ops.sqrt(area)
    level = ops.floor(k0 + ops.log(scale / canonical_size + 1e-8) / math.log(2.0))
    return ops.cast(ops.clip(level, min_level, max_level), "int32")
