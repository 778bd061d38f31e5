"""Training targets: IoU matching and balanced sampling for the RPN and the RoI heads.

Everything works on padded, fixed-size batches: ground truth is ``(B, M, 4)`` boxes with
``(B, M)`` classes where class 0 marks padding. Samples are chosen with random keys and
ranks (sorts), not with dynamic shapes, so the same code runs in a traced ``train_step``.

Reference:
    Ren et al., "Faster R-CNN", NeurIPS 2015 (RPN: IoU ≥ 0.7 positive, < 0.3 negative, the best
    anchor of each box positive, 256 anchors per image, half positive); Girshick, "Fast R-CNN",
    ICCV 2015 (RoIs: IoU ≥ 0.5 foreground, 25 % of the sample).
"""

from __future__ import annotations

import keras
from keras import ops

from kseg.models.mask_rcnn.boxes import box_iou, encode_boxes


def _rank_desc(key):
    """Rank of each entry along the last axis when sorted descending (0 = largest)."""
    return ops.argsort(ops.argsort(-key, axis=-1), axis=-1)


def sample_balanced(positive, negative, num_samples, positive_fraction, seed=None):
    """Pick at most ``num_samples`` per row, at most ``positive_fraction`` of them positive.

    Positives beyond the quota and negatives beyond ``num_samples - chosen positives`` are
    dropped at random; rows with few positives get more negatives (as torchvision's
    BalancedPositiveNegativeSampler).

    Args:
        positive, negative: ``(B, N)`` bool, disjoint.
        num_samples: samples per row.
        positive_fraction: the positive quota's share of ``num_samples``.
        seed: a ``keras.random.SeedGenerator`` or int.

    Returns:
        ``(take_positive, take_negative)`` ``(B, N)`` bool.
    """
    r = keras.random.uniform(ops.shape(positive), seed=seed)
    max_pos = int(num_samples * positive_fraction)
    pos_rank = _rank_desc(ops.where(positive, r, -1.0))
    take_pos = ops.logical_and(positive, pos_rank < max_pos)
    n_pos = ops.sum(ops.cast(take_pos, "int32"), axis=-1, keepdims=True)
    neg_rank = _rank_desc(ops.where(negative, r, -1.0))
    take_neg = ops.logical_and(negative, neg_rank < num_samples - n_pos)
    return take_pos, take_neg


def match(iou, gt_valid):
    """Best ground truth of each candidate: ``(max IoU, its index)``; ``-1`` where no valid box."""
    iou = ops.where(gt_valid[:, None, :], iou, -1.0)
    return ops.max(iou, axis=-1), ops.argmax(iou, axis=-1)


def rpn_targets(anchors, gt_boxes, gt_valid, num_samples=256, positive_fraction=0.5, fg_iou=0.7, bg_iou=0.3, seed=None):
    """RPN labels and box targets of every anchor.

    Args:
        anchors: ``(N, 4)``.
        gt_boxes: ``(B, M, 4)``; ``gt_valid``: ``(B, M)`` bool.
        num_samples, positive_fraction: anchors sampled per image and their positive share.
        fg_iou, bg_iou: IoU at or above which an anchor is positive, below which negative.
        seed: a ``keras.random.SeedGenerator`` or int.

    Returns:
        dict with ``labels`` ``(B, N)`` float (1 object, 0 background), ``sampled`` ``(B, N)``
        float (1 where the anchor counts in the loss), ``positive`` ``(B, N)`` float and
        ``deltas`` ``(B, N, 4)`` (meaningful where positive).
    """
    anchors = ops.convert_to_tensor(anchors, "float32")
    iou = box_iou(anchors[None], gt_boxes)  # (B, N, M)
    best_iou, best_gt = match(iou, gt_valid)
    # the anchors closest to each box are positive whatever their IoU (ties included)
    iou_v = ops.where(gt_valid[:, None, :], iou, -1.0)
    gt_best = ops.max(iou_v, axis=1, keepdims=True)  # (B, 1, M)
    is_best = ops.any(ops.logical_and(iou_v == gt_best, gt_best > 0.0), axis=-1)
    positive = ops.logical_or(best_iou >= fg_iou, is_best)
    negative = ops.logical_and(best_iou < bg_iou, ops.logical_not(positive))
    take_pos, take_neg = sample_balanced(positive, negative, num_samples, positive_fraction, seed)
    matched = ops.take_along_axis(gt_boxes, ops.repeat(best_gt[..., None], 4, axis=-1), axis=1)
    deltas = encode_boxes(matched, ops.broadcast_to(anchors[None], ops.shape(matched)))
    return {
        "labels": ops.cast(take_pos, "float32"),
        "sampled": ops.cast(ops.logical_or(take_pos, take_neg), "float32"),
        "positive": ops.cast(take_pos, "float32"),
        "deltas": deltas,
    }


def roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, num_samples=128, positive_fraction=0.25,
                fg_iou=0.5, bg_iou=0.5, box_weights=(10.0, 10.0, 5.0, 5.0), seed=None):
    """Sample RoIs for the box and mask heads and give each its class, box and mask target.

    The ground-truth boxes are added to the proposals (so each image has positives early in
    training). Output RoIs are ordered positives first: ``rois[:, :int(num_samples *
    positive_fraction)]`` holds every sampled positive (the mask head only needs those).

    Args:
        proposals: ``(B, P, 4)``; ``proposal_valid``: ``(B, P)`` bool.
        gt_boxes: ``(B, M, 4)``; ``gt_classes``: ``(B, M)`` int, 0 = padding.
        num_samples, positive_fraction: RoIs per image and the foreground share.
        fg_iou, bg_iou: foreground at IoU ≥ ``fg_iou``, background below ``bg_iou``.
        box_weights: delta weights of the box head.
        seed: a ``keras.random.SeedGenerator`` or int.

    Returns:
        dict of ``rois`` ``(B, S, 4)``, ``valid`` ``(B, S)`` float, ``classes`` ``(B, S)`` int32
        (0 = background), ``deltas`` ``(B, S, 4)`` and ``gt_index`` ``(B, S)`` (matched box).
    """
    gt_valid = gt_classes > 0
    rois = ops.concatenate([ops.cast(proposals, "float32"), ops.cast(gt_boxes, "float32")], axis=1)
    rois_valid = ops.concatenate([proposal_valid, gt_valid], axis=1)
    short = num_samples - rois.shape[1]
    if short > 0:  # fewer candidates than samples: pad with invalid boxes
        rois = ops.pad(rois, ((0, 0), (0, short), (0, 0)))
        rois_valid = ops.pad(rois_valid, ((0, 0), (0, short)))
    iou = box_iou(rois, gt_boxes)
    best_iou, best_gt = match(iou, gt_valid)
    positive = ops.logical_and(rois_valid, best_iou >= fg_iou)
    negative = ops.logical_and(rois_valid, ops.logical_and(best_iou < bg_iou, ops.logical_not(positive)))
    take_pos, take_neg = sample_balanced(positive, negative, num_samples, positive_fraction, seed)
    r = keras.random.uniform(ops.shape(take_pos), seed=seed)
    key = ops.where(take_pos, 2.0 + r, ops.where(take_neg, 1.0 + r, -1.0 + r))
    _, idx = ops.top_k(key, num_samples)  # positives first
    valid = ops.take_along_axis(key, idx, axis=1) > 0.0
    sel_rois = ops.take_along_axis(rois, ops.repeat(idx[..., None], 4, axis=-1), axis=1)
    sel_pos = ops.take_along_axis(take_pos, idx, axis=1)
    gt_index = ops.take_along_axis(best_gt, idx, axis=1)
    sel_cls = ops.take_along_axis(ops.cast(gt_classes, "int32"), gt_index, axis=1)
    classes = ops.where(ops.logical_and(valid, sel_pos), sel_cls, 0)
    matched = ops.take_along_axis(ops.cast(gt_boxes, "float32"), ops.repeat(gt_index[..., None], 4, axis=-1), axis=1)
    deltas = encode_boxes(matched, sel_rois, box_weights)
    return {
        "rois": ops.stop_gradient(sel_rois),
        "valid": ops.cast(valid, "float32"),
        "classes": ops.cast(classes, "int32"),
        "deltas": ops.stop_gradient(deltas),
        "gt_index": gt_index,
    }
