"""From Mask R-CNN's padded detections to image-size masks, COCO results and COCO AP."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from kseg.errors import KsegError


def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Paste box-relative mask probabilities into full images.

    Each ``m × m`` mask covers its box exactly: image pixel centre ``(x + 0.5, y + 0.5)``
    samples the mask bilinearly at ``((x + 0.5 - x1) / (x2 - x1)) · m - 0.5`` (and likewise in
    y); outside the box the mask is 0.

    Args:
        masks: ``(D, m, m)`` probabilities.
        boxes: ``(D, 4)`` ``(x1, y1, x2, y2)`` in the output image's pixels.
        image_size: ``(H, W)`` of the output.
        threshold: probability at or above which a pixel belongs to the instance (``None``
            keeps probabilities).

    Returns:
        ``(D, H, W)`` uint8 0/1 (float32 with ``threshold=None``).

    Example:
        full = paste_masks(det["masks"][0, :n], det["boxes"][0, :n] / scale, image.shape[:2])
    """
    import cv2

    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = int(image_size[0]), int(image_size[1])
    out = np.zeros((len(masks), h, w), np.float32)
    for k, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), w)
        r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), h)
        if c1 <= c0 or r1 <= r0:
            continue
        mh, mw = m.shape
        u = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - x1) / bw) * mw - 0.5
        v = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - y1) / bh) * mh - 0.5
        map_x = np.broadcast_to(u[None, :], (r1 - r0, c1 - c0)).astype(np.float32)
        map_y = np.broadcast_to(v[:, None], (r1 - r0, c1 - c0)).astype(np.float32)
        out[k, r0:r1, c0:c1] = cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if threshold is None:
        return out
    return (out >= threshold).astype(np.uint8)


def coco_results(image_id, boxes, scores, classes, masks, category_ids=None):
    """Detections of one image in COCO result format (one dict per detection).

    Args:
        image_id: COCO image id.
        boxes: ``(D, 4)`` ``(x1, y1, x2, y2)`` at the image's resolution.
        scores: ``(D,)``.
        classes: ``(D,)`` model class ids 1..K.
        masks: ``(D, H, W)`` 0/1 full-image masks (``paste_masks``).
        category_ids: COCO category id of model class ``k`` at ``[k - 1]`` (default: ``k``).

    Returns:
        list of ``{"image_id", "category_id", "bbox" [x, y, w, h], "score", "segmentation" RLE}``.
    """
    from kseg.data.instances import rle_encode

    out = []
    for b, s, c, m in zip(np.asarray(boxes), np.asarray(scores), np.asarray(classes), masks):
        c = int(c)
        out.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[c - 1]) if category_ids else c,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
            "segmentation": rle_encode(m),
        })
    return out


def coco_eval(gt_json, results, iou_type="segm", cat_ids=None):
    """COCO AP/AR of results (``"segm"`` or ``"bbox"``) via pycocotools, as a dict.

    ``"segm"`` goes through ``kseg.metrics.coco_mask_ap``; ``"bbox"`` runs the same pycocotools
    evaluation on boxes. ``cat_ids``: the COCO categories to average over (``None``: all of the
    ground truth's). Keys as ``kseg.metrics.COCO_STATS``.
    """
    from kseg.metrics import COCO_STATS, coco_mask_ap

    if iou_type == "segm":
        return coco_mask_ap(gt_json, results, cat_ids=cat_ids)
    if iou_type != "bbox":
        raise KsegError(f"coco_eval iou_type={iou_type!r}: use segm or bbox")
    results = list(results)
    if not results:
        return {k: 0.0 for k in COCO_STATS}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = sorted(int(c) for c in cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}


def predict_coco(model, instances, batch_size=1, category_ids=None, image_ids=None, threshold=0.5):
    """Run a MaskRCNN over an ``InstanceDataset`` and return COCO results at original resolution.

    Args:
        model: a ``MaskRCNN``.
        instances: an ``InstanceDataset`` (images are letterboxed to the model's input size).
        batch_size: images per forward pass.
        category_ids: COCO category of class ``k`` at ``[k - 1]`` (default
            ``instances.coco_category_ids`` or ``k``).
        image_ids: COCO id of each image (default ``instances.image_ids`` or ``0, 1, ...``).
        threshold: mask probability threshold.

    Returns:
        list of COCO result dicts.
    """
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image

    size = model.image_shape[0]
    if model.image_shape[0] != model.image_shape[1]:
        raise KsegError(f"predict_coco letterboxes to a square; the model's input is {model.image_shape[:2]}")
    category_ids = category_ids or list(getattr(instances, "coco_category_ids", ()) or ())
    image_ids = image_ids or list(getattr(instances, "image_ids", ()) or range(len(instances)))
    results = []
    for start in range(0, len(instances), batch_size):
        idx = list(range(start, min(start + batch_size, len(instances))))
        raws = [read_image(instances.image_paths[i]) for i in idx]
        boxed = [letterbox(r, size) for r in raws]
        batch = np.stack([b[0] for b in boxed]).astype(np.float32)
        if len(idx) < batch_size:  # keep one traced shape
            batch = np.concatenate([batch, np.zeros((batch_size - len(idx), *batch.shape[1:]), np.float32)])
        det = {k: np.asarray(v) for k, v in model.predict_on_batch(batch).items()}
        for j, i in enumerate(idx):
            n = int(det["num_detections"][j])
            scale = boxed[j][1]
            h, w = raws[j].shape[:2]
            boxes = np.clip(det["boxes"][j, :n] / scale, 0, [w, h, w, h]).astype(np.float32)
            full = paste_masks(det["masks"][j, :n], boxes, raws[j].shape[:2], threshold)
            results += coco_results(image_ids[i], boxes, det["scores"][j, :n], det["classes"][j, :n], full, category_ids or None)
    return results


def detect_instances(model, image, min_score=0.5, threshold=0.5):
    """Instances in one RGB image, at the image's own resolution.

    Args:
        model: a ``MaskRCNN`` or a ``kseg.models.mask_rcnn.export.TFLiteMaskRCNN`` (square input).
        image: ``(H, W, 3)`` RGB uint8.
        min_score: detections scoring below this are dropped.
        threshold: mask probability threshold.

    Returns:
        dict ``boxes`` ``(D, 4)`` (x1, y1, x2, y2 in image pixels), ``scores`` ``(D,)``,
        ``classes`` ``(D,)`` and ``masks`` ``(D, H, W)`` uint8 0/1, best score first.

    Example:
        people = detect_instances(TFLiteMaskRCNN("person.tflite"), frame_rgb)
        largest = people["masks"][np.argmax(people["masks"].sum((1, 2)))]   # keep only them sharp
    """
    from kseg.data.instances import letterbox

    size = model.image_shape[0]
    boxed, scale = letterbox(np.asarray(image), size)
    if hasattr(model, "detect"):
        det = model.detect(boxed)
    else:
        det = {k: np.asarray(v)[0] for k, v in model.predict_on_batch(boxed[None].astype(np.float32)).items()}
    n = int(det["num_detections"])
    keep = np.nonzero(det["scores"][:n] >= min_score)[0]
    h, w = image.shape[:2]
    boxes = np.clip(det["boxes"][keep] / scale, 0, [w, h, w, h]).astype(np.float32)  # padding is off the image
    return {
        "boxes": boxes,
        "scores": det["scores"][keep],
        "classes": det["classes"][keep],
        "masks": paste_masks(det["masks"][keep], boxes, image.shape[:2], threshold),
    }
