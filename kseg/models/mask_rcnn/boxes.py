"""Box utilities for Mask R-CNN: anchors, IoU, delta encoding, clipping.

Boxes are ``(x1, y1, x2, y2)`` in input-image pixels everywhere (torchvision's convention and
``kseg.ops.roi_align``'s). Deltas are Faster R-CNN's ``(dx, dy, dw, dh)``, scaled by ``weights``.

Reference:
    Ren et al., "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
    Networks", NeurIPS 2015 (anchors, box parameterisation).
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

BBOX_CLIP = math.log(1000.0 / 16.0)  # the largest dw/dh a decoder applies (torchvision/Detectron)


def make_anchors(image_size, strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    """Anchors of every FPN level, in the order the RPN head's outputs are flattened.

    One anchor size per level and ``len(ratios)`` aspect ratios (``ratio = h / w``, area
    ``size²``), centred on each feature pixel's centre ``((j + 0.5) stride, (i + 0.5) stride)``.
    Order: level, row, column, ratio — the order of ``Reshape((-1, ...))`` on each level's
    ``(H, W, A·k)`` convolution output, levels concatenated.

    Args:
        image_size: ``(H, W)`` of the model input (multiples of the largest stride).
        strides: feature stride of each level (P2…P6).
        sizes: anchor size (sqrt of area, pixels) of each level.
        ratios: aspect ratios ``h / w``.

    Returns:
        ``(N, 4)`` float32 numpy array, ``N = sum(H/s · W/s) · len(ratios)``.

    Example:
        make_anchors((64, 64), strides=(32, 64), sizes=(32, 64), ratios=(1.0,))
        # [[0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64], [32, 32, 64, 64], [0, 0, 64, 64]]
    """
    h, w = int(image_size[0]), int(image_size[1])
    out = []
    for stride, size in zip(strides, sizes):
        fh, fw = -(-h // stride), -(-w // stride)
        r = np.asarray(ratios, np.float64)
        aw = size / np.sqrt(r)
        ah = size * np.sqrt(r)
        cy = (np.arange(fh) + 0.5) * stride
        cx = (np.arange(fw) + 0.5) * stride
        cy, cx = np.meshgrid(cy, cx, indexing="ij")  # (fh, fw)
        cy, cx = cy[..., None], cx[..., None]  # (fh, fw, 1)
        boxes = np.stack(
            np.broadcast_arrays(cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2), axis=-1
        )  # (fh, fw, A, 4)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def box_iou(a, b):
    """Pairwise IoU of ``(..., N, 4)`` and ``(..., M, 4)`` boxes → ``(..., N, M)``.

    Empty boxes have IoU 0 with everything.

    Example:
        box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]])   # [[1/3]]
    """
    a = ops.cast(ops.convert_to_tensor(a), "float32")
    b = ops.cast(ops.convert_to_tensor(b), "float32")
    area_a = ops.maximum(a[..., 2] - a[..., 0], 0.0) * ops.maximum(a[..., 3] - a[..., 1], 0.0)
    area_b = ops.maximum(b[..., 2] - b[..., 0], 0.0) * ops.maximum(b[..., 3] - b[..., 1], 0.0)
    lt = ops.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = ops.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return ops.where(union > 0.0, inter / ops.maximum(union, 1e-9), 0.0)


def encode_boxes(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that take ``anchors`` to ``boxes`` (same shapes ``(..., 4)``).

    ``dx = wx (gx - ax) / aw``, ``dy = wy (gy - ay) / ah``, ``dw = ww log(gw / aw)``,
    ``dh = wh log(gh / ah)`` with centres ``g*, a*`` and sizes.
    """
    boxes = ops.cast(boxes, "float32")
    anchors = ops.cast(anchors, "float32")
    wx, wy, ww, wh = weights
    aw = ops.maximum(anchors[..., 2] - anchors[..., 0], 1e-6)
    ah = ops.maximum(anchors[..., 3] - anchors[..., 1], 1e-6)
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    gw = ops.maximum(boxes[..., 2] - boxes[..., 0], 1e-6)
    gh = ops.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    gx = boxes[..., 0] + 0.5 * gw
    gy = boxes[..., 1] + 0.5 * gh
    return ops.stack(
        [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * ops.log(gw / aw), wh * ops.log(gh / ah)], axis=-1
    )


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Inverse of ``encode_boxes`` (``dw``/``dh`` clipped at log(1000/16))."""
    deltas = ops.cast(deltas, "float32")
    anchors = ops.cast(anchors, "float32")
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = ops.minimum(deltas[..., 2] / ww, BBOX_CLIP)
    dh = ops.minimum(deltas[..., 3] / wh, BBOX_CLIP)
    cx = dx * aw + ax
    cy = dy * ah + ay
    w = ops.exp(dw) * aw
    h = ops.exp(dh) * ah
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip_boxes(boxes, image_size):
    """Clip ``(..., 4)`` boxes to ``[0, W] × [0, H]``.

    One broadcast maximum/minimum, no per-coordinate slices: TFLite's int8 quantizer otherwise
    runs such slices of float boxes on int8 copies (see ``kseg.export_instances``).
    """
    h, w = float(image_size[0]), float(image_size[1])
    upper = ops.convert_to_tensor([w, h, w, h], "float32")
    return ops.minimum(ops.maximum(ops.cast(boxes, "float32"), 0.0), upper)
