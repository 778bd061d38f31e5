"""Region Proposal Network: a shared head on every FPN level, proposal decoding and NMS.

Reference:
    Ren et al., "Faster R-CNN", NeurIPS 2015; Lin et al., "Feature Pyramid Networks for Object
    Detection", CVPR 2017 (one anchor size per level, head shared across levels).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.models.mask_rcnn.boxes import box_iou, clip_boxes, decode_boxes


def rpn_head(fpn, num_anchors, channels, name="rpn"):
    """Objectness logits and box deltas of every anchor, levels concatenated.

    One 3×3 convolution + ReLU, then 1×1 convolutions to ``num_anchors`` logits and
    ``4·num_anchors`` deltas, shared across levels (the same layers on every map).

    Args:
        fpn: dict ``{"P2".."P6"}`` of Keras tensors.
        num_anchors: anchors per position (aspect ratios).
        channels: channels of the 3×3 convolution.
        name: layer-name prefix.

    Returns:
        ``(logits (B, N), deltas (B, N, 4))`` in ``make_anchors`` order.
    """
    conv = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_conv")
    cls = layers.Conv2D(num_anchors, 1, name=f"{name}_objectness",
                        kernel_initializer="random_normal", bias_initializer="zeros")
    box = layers.Conv2D(4 * num_anchors, 1, name=f"{name}_deltas",
                        kernel_initializer="random_normal", bias_initializer="zeros")
    logits, deltas = [], []
    for k in sorted(fpn):
        x = conv(fpn[k])
        logits.append(layers.Reshape((-1,), name=f"{name}_logits_{k.lower()}")(cls(x)))
        deltas.append(layers.Reshape((-1, 4), name=f"{name}_deltas_{k.lower()}")(box(x)))
    return (layers.Concatenate(axis=1, name=f"{name}_logits")(logits),
            layers.Concatenate(axis=1, name=f"{name}_all_deltas")(deltas))


def nms_padded(boxes, scores, max_output, iou_threshold, score_threshold=-1.0):
    """Greedy NMS with a fixed-size output (TFLite's NON_MAX_SUPPRESSION_V5), batched.

    On the TensorFlow backend this is ``NonMaxSuppressionV5`` (one builtin op in the exported
    file); on the others (JAX) the same greedy selection in ``keras.ops``.

    Args:
        boxes: ``(B, N, 4)`` ``(x1, y1, x2, y2)``.
        scores: ``(B, N)``.
        max_output: boxes kept per image (output size).
        iou_threshold: a box overlapping a kept, higher-scored box by more than this goes.
        score_threshold: boxes scoring at or below this are never kept.

    Returns:
        ``(indices (B, max_output) int32, valid (B, max_output) bool)``; padded slots hold 0.
    """
    if keras.backend.backend() != "tensorflow":
        return nms_padded_ops(boxes, scores, max_output, iou_threshold, score_threshold)
    import tensorflow as tf

    def one(args):
        b, s = args
        yxyx = tf.gather(b, [1, 0, 3, 2], axis=-1)
        idx, _, n = tf.raw_ops.NonMaxSuppressionV5(
            boxes=yxyx, scores=s, max_output_size=max_output, iou_threshold=iou_threshold,
            score_threshold=score_threshold, soft_nms_sigma=0.0, pad_to_max_output_size=True)
        return idx, tf.range(max_output) < n

    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    batch = boxes.shape[0]
    if batch is not None:  # static batch (export, fixed-size training batches): no loop op
        out = [one((boxes[i], scores[i])) for i in range(batch)]
        return tf.stack([o[0] for o in out]), tf.stack([o[1] for o in out])
    return tf.map_fn(one, (boxes, scores), fn_output_signature=(tf.int32, tf.bool))


def nms_padded_ops(boxes, scores, max_output, iou_threshold, score_threshold=-1.0):
    """``nms_padded`` in ``keras.ops`` (any backend; what JAX runs).

    Boxes are visited in descending score order; each box still standing removes the later boxes
    that overlap it by more than ``iou_threshold`` (one ``fori_loop`` step per box over an
    ``(N, N)`` IoU matrix). The first ``max_output`` survivors are returned, in score order.
    """
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    n = int(boxes.shape[1])
    order = ops.argsort(-scores, axis=-1)
    boxes = ops.take_along_axis(boxes, ops.repeat(order[..., None], 4, axis=-1), axis=1)
    scores = ops.take_along_axis(scores, order, axis=1)
    later = ops.triu(ops.ones((n, n), "bool"), k=1)
    overlaps = ops.logical_and(box_iou(boxes, boxes) > iou_threshold, later)  # [b, i, j]: i removes j

    def visit(i, alive):
        removes = ops.logical_and(ops.take(alive, i, axis=1)[:, None], ops.take(overlaps, i, axis=1))
        return ops.logical_and(alive, ops.logical_not(removes))

    alive = ops.fori_loop(0, n, visit, scores > score_threshold)
    k = min(int(max_output), n)
    rank = ops.where(alive, n - ops.arange(n, dtype="int32")[None, :], 0)  # survivors first, in order
    first, pos = ops.top_k(rank, k)
    valid = first > 0
    idx = ops.cast(ops.where(valid, ops.take_along_axis(order, pos, axis=1), 0), "int32")
    if k < max_output:  # fewer boxes than slots: pad
        pad = ops.zeros((ops.shape(idx)[0], int(max_output) - k), "int32")
        idx, valid = ops.concatenate([idx, pad], axis=1), ops.concatenate([valid, ops.cast(pad, "bool")], axis=1)
    return idx, valid


def propose(logits, deltas, anchors, image_size, pre_nms_top_k, post_nms_top_k, nms_iou=0.7, min_size=1e-3):
    """Proposals: the top-scoring anchors, decoded, clipped, tiny boxes dropped, NMS, top-k.

    Args:
        logits: ``(B, N)`` objectness logits; ``deltas``: ``(B, N, 4)``.
        anchors: ``(N, 4)``.
        image_size: ``(H, W)`` of the input, for clipping.
        pre_nms_top_k: best anchors per image decoded before NMS.
        post_nms_top_k: proposals kept per image.
        nms_iou: NMS IoU threshold (0.7 in the paper).
        min_size: boxes narrower or shorter than this (pixels) are dropped.

    Returns:
        ``(boxes (B, post_nms_top_k, 4), scores (B, post_nms_top_k), valid (B, post_nms_top_k))``.
    """
    k = min(int(pre_nms_top_k), int(anchors.shape[0]))
    top, idx = ops.top_k(logits, k)
    d = ops.take_along_axis(deltas, ops.repeat(idx[..., None], 4, axis=-1), axis=1)
    a = ops.take(ops.convert_to_tensor(anchors, "float32"), idx, axis=0)
    boxes = clip_boxes(decode_boxes(d, a), image_size)
    small = ops.logical_or(boxes[..., 2] - boxes[..., 0] < min_size, boxes[..., 3] - boxes[..., 1] < min_size)
    scores = ops.where(small, -1.0, ops.sigmoid(top))
    keep, valid = nms_padded(boxes, scores, int(post_nms_top_k), nms_iou, score_threshold=-0.5)
    boxes = ops.take_along_axis(boxes, ops.repeat(keep[..., None], 4, axis=-1), axis=1)
    scores = ops.take_along_axis(scores, keep, axis=1)
    return boxes, ops.where(valid, scores, 0.0), valid
