"""Panoptic Quality (PQ = SQ × RQ), streamed over images, as COCO's panopticapi defines it.

Each image gives two maps of segment ids (0 = void/unlabeled) and, for each, the segments'
categories (the ground truth's also ``iscrowd``). Per image and category:

- a predicted and a ground-truth segment of the same category **match** when their IoU is
  above 0.5 (so each segment matches at most one other); the union leaves out the predicted
  pixels that fall on void ground truth (``|p| + |g| − |p∩g| − |p∩void|``);
- unmatched ground-truth segments are false negatives, except crowd regions (``iscrowd``),
  which are never matched nor counted;
- an unmatched predicted segment is a false positive unless more than half of it lies on void
  pixels plus the crowd regions of its category.

Over the stream, per category ``c``: ``PQ_c = Σ IoU(TP) / (TP + FP/2 + FN/2)``,
``SQ_c = Σ IoU(TP) / TP`` (0 without a TP), ``RQ_c = TP / (TP + FP/2 + FN/2)``, and PQ, SQ, RQ of
all categories, the things and the stuff are the means over the categories with at least one
segment (TP + FP + FN > 0), as panopticapi's ``pq_compute`` does.

Differences from panopticapi, none of which change a score on COCO panoptic data: the segments'
areas are counted in the maps (panopticapi reads the ground truth's from its JSON); several
crowd segments of one category in an image count together (COCO has at most one); a category
without segments gets NaN in ``per_class`` (panopticapi: 0) and an average over no category is
NaN (panopticapi divides by zero).

Reference:
    Kirillov et al., "Panoptic Segmentation", CVPR 2019.
"""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

VOID = 0
OFFSET = 1 << 32


def _segments(segments, what: str) -> dict:
    """``{id: (category_id, iscrowd)}`` from COCO ``segments_info`` dicts or ``{id: category_id}``."""
    if isinstance(segments, dict):
        return {int(i): (int(c), False) for i, c in segments.items()}
    out = {}
    for s in segments:
        try:
            out[int(s["id"])] = (int(s["category_id"]), bool(s.get("iscrowd", 0)))
        except (KeyError, TypeError):
            raise KsegError(f"{what} segment {s!r} needs an 'id' and a 'category_id' "
                            "(COCO panoptic segments_info), or give {id: category_id}") from None
    return out


class PanopticQuality:
    """Streaming panoptic quality (PQ, SQ, RQ) per category and over all/things/stuff.

    Args:
        categories: the categories scored: COCO-style dicts ``{"id", "name", "isthing"}``, or
            ``{category_id: {"name", "isthing"}}``.

    Example:
        pq = PanopticQuality([{"id": 1, "name": "person", "isthing": 1},
                              {"id": 0, "name": "background", "isthing": 0}])
        pq.update(pred_ids, {1: 1, 2: 0}, gt_ids, [{"id": 1, "category_id": 1, "iscrowd": 0},
                                                   {"id": 2, "category_id": 0}])
        pq.result()["all"]["pq"]

    Reference:
        Kirillov et al., "Panoptic Segmentation", CVPR 2019.
    """

    def __init__(self, categories):
        if isinstance(categories, dict):
            categories = [{"id": k, **v} for k, v in categories.items()]
        self.categories = {}
        for c in categories:
            try:
                self.categories[int(c["id"])] = {"name": str(c.get("name", c["id"])), "isthing": bool(c["isthing"])}
            except (KeyError, TypeError):
                raise KsegError(f"category {c!r} needs an 'id' and 'isthing'") from None
        if not self.categories:
            raise KsegError("PanopticQuality needs at least one category")
        self.reset()

    def reset(self) -> None:
        """Forget every image seen."""
        self.iou = {c: 0.0 for c in self.categories}
        self.tp = {c: 0 for c in self.categories}
        self.fp = {c: 0 for c in self.categories}
        self.fn = {c: 0 for c in self.categories}
        self.num_images = 0

    def _check(self, ids, segs, what):
        present = [int(v) for v in np.unique(ids) if v != VOID]
        missing = [v for v in present if v not in segs]
        if missing:
            raise KsegError(f"{what} map has segment ids {missing[:5]} that its segments do not list; "
                            "give a category for every non-zero id")
        unknown = sorted({c for c, _ in segs.values()} - set(self.categories))
        if unknown:
            raise KsegError(f"{what} segments have category ids {unknown} that are not among the categories "
                            f"{sorted(self.categories)}; add them to PanopticQuality(categories=...)")

    def update(self, pred_ids, pred_segments, gt_ids, gt_segments) -> None:
        """Add one image.

        Args:
            pred_ids: ``(H, W)`` predicted segment ids (0 = unlabeled).
            pred_segments: ``{id: category_id}`` or COCO ``segments_info`` dicts
                (``id``, ``category_id``) of the prediction.
            gt_ids: ``(H, W)`` ground-truth segment ids (0 = void).
            gt_segments: the same for the ground truth, with ``iscrowd`` (default 0).

        Raises:
            KsegError: maps of different shapes, ids without a segment, unknown categories.
        """
        pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
        if pred_ids.shape != gt_ids.shape or pred_ids.ndim != 2:
            raise KsegError(f"panoptic prediction is {pred_ids.shape} but the ground truth is {gt_ids.shape}; "
                            "both must be H×W segment-id maps of the same image size")
        if min(pred_ids.min(initial=0), gt_ids.min(initial=0)) < 0:
            raise KsegError("segment ids must be 0 (void) or positive")
        pred_segs, gt_segs = _segments(pred_segments, "predicted"), _segments(gt_segments, "ground-truth")
        self._check(pred_ids, pred_segs, "the predicted")
        self._check(gt_ids, gt_segs, "the ground-truth")

        pairs, counts = np.unique(gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64), return_counts=True)
        inter = {(int(k // OFFSET), int(k % OFFSET)): int(n) for k, n in zip(pairs, counts)}
        gt_area, pred_area = {}, {}
        for (g, p), n in inter.items():
            gt_area[g] = gt_area.get(g, 0) + n
            pred_area[p] = pred_area.get(p, 0) + n

        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g not in gt_segs or p not in pred_segs:
                continue
            g_cat, crowd = gt_segs[g]
            if crowd or g_cat != pred_segs[p][0]:
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((VOID, p), 0)
            iou = n / union
            if iou > 0.5:
                self.tp[g_cat] += 1
                self.iou[g_cat] += iou
                gt_matched.add(g)
                pred_matched.add(p)

        crowd_of = {}  # category → crowd segment ids
        for g, (cat, crowd) in gt_segs.items():
            if g in gt_matched or g not in gt_area:
                continue
            if crowd:
                crowd_of.setdefault(cat, []).append(g)
            else:
                self.fn[cat] += 1
        for p, (cat, _) in pred_segs.items():
            if p in pred_matched or p not in pred_area:
                continue
            ignored = inter.get((VOID, p), 0) + sum(inter.get((g, p), 0) for g in crowd_of.get(cat, ()))
            if ignored / pred_area[p] > 0.5:
                continue
            self.fp[cat] += 1
        self.num_images += 1

    def _average(self, isthing):
        rows = []
        for c, info in self.categories.items():
            if isthing is not None and info["isthing"] != isthing:
                continue
            if self.tp[c] + self.fp[c] + self.fn[c]:
                rows.append(self._class_scores(c))
        if not rows:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
        return {k: float(np.mean([r[k] for r in rows])) for k in ("pq", "sq", "rq")} | {"n": len(rows)}

    def _class_scores(self, c) -> dict:
        tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
        denom = tp + 0.5 * fp + 0.5 * fn
        if denom == 0:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan")}
        return {"pq": self.iou[c] / denom, "sq": self.iou[c] / tp if tp else 0.0, "rq": tp / denom}

    def result(self) -> dict:
        """Scores over every image seen so far.

        Returns:
            ``{"all": {"pq", "sq", "rq", "n"}, "things": {…}, "stuff": {…}, "per_class": {category id:
            {"name", "isthing", "pq", "sq", "rq", "tp", "fp", "fn"}}, "num_images"}``; scores in
            [0, 1]; ``n`` is the number of categories averaged; NaN where nothing was scored.
        """
        per_class = {c: {"name": info["name"], "isthing": info["isthing"], **self._class_scores(c),
                         "tp": self.tp[c], "fp": self.fp[c], "fn": self.fn[c]}
                     for c, info in self.categories.items()}
        return {"all": self._average(None), "things": self._average(True), "stuff": self._average(False),
                "per_class": per_class, "num_images": self.num_images}
