"""Panoptic output: a semantic model's stuff and an instance model's things in one map.

``combine_panoptic`` is the heuristic of Kirillov et al. (Panoptic Segmentation, CVPR 2019,
section 7) as Detectron2's ``combine_semantic_and_instance_outputs`` and panopticapi's
``combine_semantic_and_instance_predictions`` implement it:

1. instances scoring at least ``score_threshold`` are pasted best score first; one whose mask
   lies more than ``overlap_threshold`` on pixels already taken is dropped, otherwise it keeps
   only its free pixels (so overlaps go to the higher score); one left with fewer than
   ``thing_area_limit`` pixels is dropped;
2. each stuff class of the semantic map then takes the pixels still free where the semantic
   model predicts it, if they are at least ``stuff_area_limit`` pixels (small stuff regions are
   mostly noise and would count as false positives);
3. what is left (say, pixels the semantic model calls "person" that no instance covers) stays
   unlabeled: segment id 0.

Numpy only; no Keras or TensorFlow.

Example:
    from kseg.runtime import Segmenter, combine_panoptic, detect_instances, load_instance_model
    sem = Segmenter("exports/portrait.tflite").segment(rgb).category_mask
    det = detect_instances(load_instance_model("exports/person-instances.tflite").model, rgb)
    pan = combine_panoptic(sem, det, stuff={0: 0}, things={1: 1})   # background → stuff 0, person → 1
    pan.ids        # (H, W) int32 segment ids, 0 = unlabeled
    pan.segments   # [{"id": 1, "category_id": 1, "isthing": True, "score": 0.93, "area": 5120}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kseg.errors import KsegError


@dataclass
class PanopticResult:
    """What ``combine_panoptic`` returns.

    Attributes:
        ids: ``(H, W)`` int32 segment id per pixel; 0 = unlabeled (void).
        segments: one dict per segment, ids 1, 2, …: ``id``, ``category_id``, ``isthing``,
            ``area`` (pixels) and, for things, ``score`` and ``instance`` (its index in the
            detections).
    """

    ids: np.ndarray
    segments: list = field(default_factory=list)

    def category_map(self, void: int = 255) -> np.ndarray:
        """``(H, W)`` category id per pixel (``void`` where unlabeled)."""
        lut = np.full(len(self.segments) + 1, void, np.int64)
        for s in self.segments:
            lut[s["id"]] = s["category_id"]
        return lut[self.ids]


def combine_panoptic(semantic, instances=None, *, stuff, things=None, score_threshold: float = 0.5,
                     overlap_threshold: float = 0.5, stuff_area_limit: int = 4096,
                     thing_area_limit: int = 1) -> PanopticResult:
    """Merge stuff from a semantic class map and things from instance detections.

    Args:
        semantic: ``(H, W)`` integer class map of the semantic model (its argmax, e.g.
            ``Segmenter.segment(rgb).category_mask``).
        instances: detections at the same ``(H, W)``: a dict with ``masks`` ``(D, H, W)`` (0/1),
            ``scores`` ``(D,)`` and ``classes`` ``(D,)`` (the instance model's class indices), as
            ``detect_instances`` returns; ``None`` for no things.
        stuff: ``{semantic class index: category id}`` of the semantic classes that are stuff.
            Other semantic classes (the thing classes, e.g. ``person``) give no segment: their
            pixels are for the instances.
        things: ``{instance class index: category id}``; default: the class index itself.
            Detections of classes not listed are dropped when ``things`` is given.
        score_threshold: detections scoring below are dropped (Detectron2: 0.5).
        overlap_threshold: a detection whose mask lies more than this fraction on pixels taken
            by better-scoring ones is dropped (0.5).
        stuff_area_limit: stuff segments of fewer pixels are dropped (Detectron2 and
            panopticapi: 4096 on COCO-size images).
        thing_area_limit: thing segments of fewer pixels, after overlaps are removed, are
            dropped (1: only empty ones).

    Returns:
        A ``PanopticResult``: things first (best score first), then stuff in class order.

    Raises:
        KsegError: instance masks of another size than the semantic map.

    Example:
        pan = combine_panoptic(category_mask, detections, stuff={0: 0}, things={1: 1})
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 2:
        raise KsegError(f"the semantic map must be H×W class ids, got shape {semantic.shape}")
    h, w = semantic.shape
    ids = np.zeros((h, w), np.int32)
    segments = []
    if instances is not None and len(instances.get("scores", ())):
        masks = np.asarray(instances["masks"])
        if masks.shape[1:] != (h, w):
            raise KsegError(f"instance masks are {masks.shape[2]}×{masks.shape[1]} but the semantic map is {w}×{h}; "
                            "detect at the same resolution (detect_instances pastes masks at the image's size)")
        scores = np.asarray(instances["scores"], np.float64)
        classes = np.asarray(instances.get("classes", np.ones(len(scores))), np.int64)
        for k in np.argsort(-scores, kind="stable"):
            if scores[k] < score_threshold:
                break
            cls = int(classes[k])
            if things is not None and cls not in things:
                continue
            mask = masks[k] > 0
            area = int(mask.sum())
            if area == 0:
                continue
            taken = mask & (ids > 0)
            overlap = int(taken.sum())
            if overlap / area > overlap_threshold:
                continue
            if overlap:
                mask &= ids == 0
            left = area - overlap
            if left < max(thing_area_limit, 1):
                continue
            sid = len(segments) + 1
            ids[mask] = sid
            segments.append({"id": sid, "category_id": int(things[cls] if things is not None else cls),
                             "isthing": True, "score": float(scores[k]), "instance": int(k), "area": left})
    free = ids == 0
    for cls in sorted(stuff):
        mask = free & (semantic == cls)
        area = int(mask.sum())
        if area == 0 or area < stuff_area_limit:
            continue
        sid = len(segments) + 1
        ids[mask] = sid
        segments.append({"id": sid, "category_id": int(stuff[cls]), "isthing": False, "area": area})
    return PanopticResult(ids, segments)


def instance_colors(n: int, seed: int = 11) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, bright and far apart (golden-ratio hues), the same for every call."""
    import colorsys

    h0 = (seed * 0.618033988749895) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb((h0 + i * 0.618033988749895) % 1.0, 0.75, 0.95)]
                     for i in range(n)], np.uint8).reshape(-1, 3)
