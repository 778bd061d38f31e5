"""Panoptic quality of an instance model (things) plus a semantic model (stuff) on COCO images.

``evaluate_panoptic`` runs both models on every image of a COCO split, merges their outputs
with ``kseg.runtime.combine_panoptic`` and scores the panoptic maps with
``kseg.metrics.PanopticQuality`` against a ground truth built from the COCO instance
annotations (``kseg.data.readers.open_coco_panoptic``: the things' instances, crowds as crowd
regions, every other pixel one "background" stuff segment). The semantic model's stuff is its
class named ``background``; its other classes (``person``) are things, left to the instances.

Example:
    from kseg.runtime import Segmenter, load_instance_model
    from kseg.evaluate_panoptic import evaluate_panoptic, format_panoptic_report
    r = evaluate_panoptic(load_instance_model("exports/person-instances.tflite"),
                          Segmenter("exports/portrait.tflite"), "coco/coco-mini")
    print(format_panoptic_report(r))
"""

from __future__ import annotations

import time

import numpy as np

from kseg.errors import KsegError

STUFF_NAMES = ("background",)


def _thing_map(model, things) -> dict:
    """Instance model class index → COCO category id of the things."""
    names = [str(n).lower() for n in (model.class_names or ("background", *things))]
    out = {}
    for cat in things:
        if cat["name"].lower() not in names:
            raise KsegError(f"the instance model {model.path} has no class {cat['name']!r} (its classes: "
                            f"{', '.join(names[1:])}); choose --categories among them")
        out[names.index(cat["name"].lower())] = cat["id"]
    return out


def _stuff_map(segmenter, stuff) -> dict:
    """Semantic class index → category id of the stuff (matched by name)."""
    names = [str(n).lower() for n in segmenter.class_names]
    out = {names.index(c["name"].lower()): c["id"] for c in stuff if c["name"].lower() in names}
    if not out:
        raise KsegError(f"the semantic model {segmenter.path} has no stuff class ({', '.join(c['name'] for c in stuff)}); "
                        f"its classes are {', '.join(segmenter.class_names)}: give a model with a 'background' class")
    return out


def evaluate_panoptic(instance_model, segmenter, data, split: str = "val", things=("person",), limit=None,
                      score_threshold: float = 0.5, overlap_threshold: float = 0.5, stuff_area_limit: int = 4096,
                      progress=None) -> dict:
    """PQ, SQ and RQ (all, things, stuff, per class) of instance + semantic models on a COCO split.

    Args:
        instance_model: a ``kseg.runtime.InstanceModel`` (``load_instance_model``): the things.
        segmenter: a ``kseg.runtime.Segmenter`` with a ``background`` class: the stuff.
        data: a COCO subset folder (``annotations/instances_{split}2017.json`` + images).
        split: ``"val"`` or ``"train"``.
        things: COCO category names of the things (the instance model's classes).
        limit: only the first ``limit`` images.
        score_threshold, overlap_threshold, stuff_area_limit: ``combine_panoptic``'s settings.
        progress: ``None`` (default): a bar on a terminal, plain lines in a log
            (``kseg.progress``, on stderr); ``False``: nothing; a callable: called with
            ``(done, total)`` after each image.

    Returns:
        dict ``model``, ``semantic_model``, ``data``, ``images``, ``things``, ``stuff``,
        ``settings``, ``pq`` (``PanopticQuality.result()``, per-class keys as category names),
        ``segments`` (predicted and true, things and stuff), ``seconds_per_image``.

    Example:
        r = evaluate_panoptic(load_instance_model(p), Segmenter(s), "coco/coco-mini")
        r["pq"]["things"]["pq"]
    """
    from kseg.config import resolve_data_path
    from kseg.data.readers import open_coco_panoptic
    from kseg.metrics import PanopticQuality
    from kseg.progress import Progress
    from kseg.runtime import combine_panoptic, detect_instances

    ds = open_coco_panoptic(resolve_data_path(data), split, tuple(things), limit=limit)
    thing_cats = [c for c in ds.categories if c["isthing"]]
    stuff_cats = [c for c in ds.categories if not c["isthing"]]
    thing_map = _thing_map(instance_model, thing_cats)
    stuff_map = _stuff_map(segmenter, stuff_cats)
    pq = PanopticQuality(ds.categories)
    counts = {"predicted_things": 0, "predicted_stuff": 0, "true_things": 0, "true_crowds": 0, "true_stuff": 0}
    t0 = time.perf_counter()
    bar = Progress(len(ds), "panoptic evaluation", "images", mode=None if progress is None else "off")
    report = progress or (lambda done, total: bar.set(done))
    with bar:
        for i in range(len(ds)):
            image, gt_ids, gt_segments = ds.load(i)
            det = detect_instances(instance_model.model, image, min_score=score_threshold)
            semantic = segmenter.segment(image).category_mask
            pan = combine_panoptic(semantic, det, stuff=stuff_map, things=thing_map, score_threshold=score_threshold,
                                   overlap_threshold=overlap_threshold, stuff_area_limit=stuff_area_limit)
            pq.update(pan.ids, pan.segments, gt_ids, gt_segments)
            counts["predicted_things"] += sum(s["isthing"] for s in pan.segments)
            counts["predicted_stuff"] += sum(not s["isthing"] for s in pan.segments)
            thing_ids = set(thing_map.values())
            counts["true_things"] += sum(s["category_id"] in thing_ids and not s["iscrowd"] for s in gt_segments)
            counts["true_crowds"] += sum(bool(s["iscrowd"]) for s in gt_segments)
            counts["true_stuff"] += sum(s["category_id"] not in thing_ids for s in gt_segments)
            report(i + 1, len(ds))
    dt = time.perf_counter() - t0
    result = _clean(pq.result())
    result["per_class"] = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in result["per_class"].values()}
    return {
        "model": str(instance_model.path),
        "semantic_model": str(segmenter.path),
        "data": f"{ds.name} ({data})",
        "images": len(ds),
        "things": [c["name"] for c in thing_cats],
        "stuff": [c["name"] for c in stuff_cats],
        "settings": {"score_threshold": score_threshold, "overlap_threshold": overlap_threshold,
                     "stuff_area_limit": stuff_area_limit},
        "pq": result,
        "segments": counts,
        "seconds_per_image": dt / max(len(ds), 1),
    }


def _clean(value):
    """NaN (nothing to score) → None, so the report is strict JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def format_panoptic_report(report: dict) -> str:
    """A markdown table of ``evaluate_panoptic``'s report, for people."""
    r = report["pq"]

    def pct(v):
        return "n/a" if v is None or v != v else f"{100 * v:.1f}"

    lines = [f"things from {report['model']}, stuff from {report['semantic_model']}, on {report['data']}: "
             f"{report['images']} images",
             "",
             "| | PQ | SQ | RQ | categories |", "|---|---|---|---|---|"]
    for key, label in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        lines.append(f"| {label} | {pct(r[key]['pq'])} | {pct(r[key]['sq'])} | {pct(r[key]['rq'])} | {r[key]['n']} |")
    lines += ["", "| category | PQ | SQ | RQ | TP | FP | FN |", "|---|---|---|---|---|---|---|"]
    for name, c in r["per_class"].items():
        kind = "thing" if c["isthing"] else "stuff"
        lines.append(f"| {name} ({kind}) | {pct(c['pq'])} | {pct(c['sq'])} | {pct(c['rq'])} | "
                     f"{c['tp']} | {c['fp']} | {c['fn']} |")
    s = report["settings"]
    lines += ["", f"ground truth: {', '.join(report['things'])} instances (crowds ignored as COCO does) and every "
                  f"other pixel as '{', '.join(report['stuff'])}' stuff; combine: score >= {s['score_threshold']}, "
                  f"overlap <= {s['overlap_threshold']}, stuff area >= {s['stuff_area_limit']} px; "
                  f"{report['seconds_per_image']:.2f} s per image"]
    return "\n".join(lines)
