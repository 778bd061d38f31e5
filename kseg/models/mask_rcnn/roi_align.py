"""Multi-level RoIAlign: each box pooled from its FPN level, in one gather.

The FPN levels are flattened into one ``(sum_l B·H_l·W_l, C)`` table; every box reads its own
level's part (level offset, height, width and scale gathered per box). The result equals
``kseg.ops.roi_align`` on the box's level (tested), without pooling every box from every level
and without dynamic shapes, so it also converts to builtin TFLite ops (GATHER and arithmetic).

Reference:
    He et al., "Mask R-CNN", ICCV 2017; Lin et al., "Feature Pyramid Networks for Object
    Detection", CVPR 2017 (level assignment, ``kseg.ops.fpn_level``).
"""

from __future__ import annotations

from keras import ops

from kseg.ops import fpn_level
from kseg.ops.roi_align import _bilinear_coords


def _bilinear(coord, size):
    """``kseg.ops.roi_align``'s bilinear coordinates (``size`` broadcasts against ``coord``), validity as 0/1."""
    low, high, w_low, w_high, valid = _bilinear_coords(coord, size)
    return low, high, w_low, w_high, ops.cast(valid, "float32")


def multilevel_roi_align(features, boxes, box_indices, levels, strides, output_size, sampling_ratio=2, aligned=True):
    """RoIAlign of each box on the feature map of its level.

    Args:
        features: list of ``(B, H_l, W_l, C)`` maps (same ``C``), finest first.
        boxes: ``(K, 4)`` ``(x1, y1, x2, y2)`` in input pixels.
        box_indices: ``(K,)`` batch image of each box.
        levels: ``(K,)`` int, index into ``features`` of each box's level.
        strides: stride of each map in ``features``.
        output_size: int, the square output size.
        sampling_ratio: samples per bin along each axis (> 0: fixed shapes).
        aligned: half-pixel alignment as in ``kseg.ops.roi_align``.

    Returns:
        ``(K, output_size, output_size, C)`` float32.

    Example:
        pooled = multilevel_roi_align([p2, p3, p4, p5], boxes, idx, fpn_level(boxes) - 2, (4, 8, 16, 32), 7)
    """
    out = int(output_size)
    g = int(sampling_ratio)
    boxes = ops.cast(boxes, "float32")
    box_indices = ops.cast(box_indices, "int32")
    levels = ops.cast(levels, "int32")
    flats, heights, widths, offsets = [], [], [], []
    offset = 0
    channels = features[0].shape[-1]
    for f in features:
        shape = ops.shape(f)
        b, h, w = shape[0], shape[1], shape[2]
        flats.append(ops.reshape(ops.cast(f, "float32"), (-1, channels)))
        heights.append(ops.cast(h, "int32"))
        widths.append(ops.cast(w, "int32"))
        offsets.append(ops.cast(offset, "int32"))
        offset = offset + b * h * w
    table = ops.concatenate(flats, axis=0)
    hk = ops.take(ops.stack(heights), levels)  # (K,)
    wk = ops.take(ops.stack(widths), levels)
    base = ops.take(ops.stack(offsets), levels) + box_indices * hk * wk
    scale = ops.take(ops.convert_to_tensor([1.0 / s for s in strides], "float32"), levels)

    shift = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * scale - shift
    y1 = boxes[:, 1] * scale - shift
    x2 = boxes[:, 2] * scale - shift
    y2 = boxes[:, 3] * scale - shift
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = ops.maximum(roi_w, 1.0), ops.maximum(roi_h, 1.0)
    bin_h, bin_w = roi_h / out, roi_w / out
    # sample offsets inside the box in bin units: (out * g,), bin-major
    t = ops.convert_to_tensor([p + (i + 0.5) / g for p in range(out) for i in range(g)], "float32")
    ys = y1[:, None] + t[None, :] * bin_h[:, None]  # (K, out·g)
    xs = x1[:, None] + t[None, :] * bin_w[:, None]
    hf = ops.cast(hk, "float32")[:, None]
    wf = ops.cast(wk, "float32")[:, None]
    y_lo, y_hi, wy_lo, wy_hi, vy = _bilinear(ys, hf)
    x_lo, x_hi, wx_lo, wx_hi, vx = _bilinear(xs, wf)
    wk3 = wk[:, None, None]
    base3 = base[:, None, None]

    def gather(yi, xi):
        return ops.take(table, base3 + yi[:, :, None] * wk3 + xi[:, None, :], axis=0)  # (K, Ny, Nx, C)

    def w2(a, b):
        return (a[:, :, None] * b[:, None, :])[..., None]

    vals = (
        gather(y_lo, x_lo) * w2(wy_lo, wx_lo)
        + gather(y_lo, x_hi) * w2(wy_lo, wx_hi)
        + gather(y_hi, x_lo) * w2(wy_hi, wx_lo)
        + gather(y_hi, x_hi) * w2(wy_hi, wx_hi)
    ) * w2(vy, vx)
    k = ops.shape(boxes)[0]
    vals = ops.reshape(vals, (k, out, g, out, g, channels))
    return ops.mean(vals, axis=(2, 4))


def fpn_roi_align(features, boxes, box_indices, strides, output_size, min_level=2, k0=4, canonical_size=224.0, sampling_ratio=2):
    """``multilevel_roi_align`` with each box's level chosen by FPN Eq. 1 (``kseg.ops.fpn_level``).

    Args:
        features: maps of levels ``min_level, min_level + 1, ...`` (e.g. P2…P5).
        boxes, box_indices, strides, output_size, sampling_ratio: as ``multilevel_roi_align``.
        min_level: the level of ``features[0]``.
        k0, canonical_size: FPN's level of a 224-pixel box (4) and that size.
    """
    max_level = min_level + len(features) - 1
    levels = fpn_level(boxes, k0=k0, canonical_size=canonical_size, min_level=min_level, max_level=max_level) - min_level
    return multilevel_roi_align(features, boxes, box_indices, levels, strides, output_size, sampling_ratio)
