"""TFLite export of the whole Mask R-CNN inference graph (image in, padded detections out).

The graph is converted as it runs in Keras: encoder, FPN, RPN, top-k, box decoding, NMS
(NON_MAX_SUPPRESSION_V5 with a padded output), multi-level RoIAlign (GATHER and arithmetic),
box and mask heads, per-class NMS. Everything stays float32 (no quantization here); the
converter is first asked for builtin ops only, and only if that fails for TF "select" ops too,
which ``export_tflite`` then reports.

Example:
    info = export_tflite(model, "runs/person/mask_rcnn.tflite")
    det = run_tflite("runs/person/mask_rcnn.tflite", letterboxed_uint8_image)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path

OUTPUTS = ("boxes", "scores", "classes", "masks", "num_detections")


def export_tflite(model, path, quantization="float32", allow_select_ops=False):
    """Convert a ``MaskRCNN``'s inference (batch 1) to a ``.tflite`` file.

    Args:
        model: a ``MaskRCNN``.
        path: output ``.tflite`` (written atomically).
        quantization: ``"float32"``, ``"float16"`` (weights stored as float16) or ``"dynamic"``
            (weights int8, activations float: convolutions and fully connected layers compute
            with int8 weights; NMS, RoIAlign and box arithmetic stay float32).
        allow_select_ops: if the builtin-only conversion fails, retry with TF select (Flex) ops.

    Returns:
        dict ``path``, ``size_mb``, ``ops`` (sorted distinct operator names), ``non_builtin``.
    """
    import tensorflow as tf

    from kseg.runtime import tflite_ops

    h, w = model.image_shape[:2]
    spec = tf.TensorSpec((1, h, w, 3), tf.float32, name="image")
    with tempfile.TemporaryDirectory() as tmp:
        saved = str(Path(tmp) / "saved_model")
        model.export(saved, format="tf_saved_model", input_signature=[spec], verbose=False)
        if quantization not in ("float32", "float16", "dynamic"):
            raise KsegError(f"MaskRCNN export quantization={quantization!r}: use float32, float16 or dynamic")

        def converter():
            c = tf.lite.TFLiteConverter.from_saved_model(saved)
            if quantization != "float32":
                c.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                c.target_spec.supported_types = [tf.float16]
            return c

        conv = converter()
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flat = conv.convert()
        except Exception as e:
            if not allow_select_ops:
                first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0])
                raise KsegError(f"MaskRCNN TFLite conversion with builtin ops failed: {first.strip()[:200]}; "
                                "pass allow_select_ops=True to accept TF select ops") from None
            conv = converter()
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            flat = conv.convert()
    with atomic_path(path) as tmp_path:
        Path(tmp_path).write_bytes(flat)
    ops = sorted(set(tflite_ops(path)))
    return {
        "path": str(path),
        "quantization": quantization,
        "size_mb": round(Path(path).stat().st_size / 2**20, 2),
        "ops": ops,
        "non_builtin": [o for o in ops if o.startswith("Flex") or not o.isupper()],
    }


class TFLiteMaskRCNN:
    """Run an exported Mask R-CNN with ai-edge-litert: ``detect(image)`` → the Keras output dict.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads.
    """

    def __init__(self, path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.image_shape = tuple(int(v) for v in self.input["shape"][1:])
        runner = self.interpreter.get_signature_runner()
        self._runner = runner
        self._key = next(iter(runner.get_input_details()))

    def detect(self, image):
        """``image``: ``(H, W, 3)`` letterboxed RGB (uint8 or float) at the model's input size."""
        x = np.asarray(image, np.float32)[None]
        out = self._runner(**{self._key: x})
        return {k: np.asarray(out[k])[0] for k in OUTPUTS}

    def latency(self, runs=10, warmup=2):
        """Median seconds per ``detect`` on a zero image."""
        x = np.zeros(self.input["shape"][1:], np.float32)
        times = []
        for i in range(warmup + runs):
            t = time.perf_counter()
            self.detect(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
        return float(np.median(times))


def parity(model, runner, images, threshold=0.5, min_score=0.0):
    """Keras vs TFLite detections on letterboxed images.

    Each Keras detection is matched to the unmatched TFLite detection of the same class with
    the highest box IoU (at least 0.5). A detection scoring near the threshold or an NMS tie
    can change which boxes survive, so the maxima can come from one such flip; the medians
    and ``within_1px`` say how the rest agree.

    Args:
        model: the ``MaskRCNN`` (or anything with a ``predict_on_batch`` like it).
        runner: a ``TFLiteMaskRCNN`` of its export (anything with ``detect``).
        images: iterable of ``(H, W, 3)`` images at the model's input size.
        threshold: mask probability threshold for the mask IoU.
        min_score: only Keras detections scoring at least this are compared (TFLite
            detections of any score can match them); ``same_count`` counts these too.

    Returns:
        dict ``images``, ``min_score``, ``same_count`` (share of images with as many
        detections), ``keras_detections``, ``matched`` (Keras detections with a TFLite match),
        ``within_1px`` (matched with every box side within 1 px), ``max_box_diff`` and
        ``median_box_diff`` (pixels, matched), ``max_score_diff``, ``mean_mask_iou`` and
        ``median_mask_iou`` (pasted masks of matched detections).
    """
    from kseg.models.mask_rcnn.boxes import box_iou
    from kseg.models.mask_rcnn.postprocess import paste_masks

    same, matched, total, score_diff, ious, diffs, n = 0, 0, 0, 0.0, [], [], 0
    for image in images:
        n += 1
        ref = {k: np.asarray(v)[0] for k, v in model.predict_on_batch(np.asarray(image, np.float32)[None]).items()}
        lite = runner.detect(image)
        a = int(np.sum(ref["scores"][: int(ref["num_detections"])] >= min_score))  # scores are sorted
        b = int(lite["num_detections"])
        same += a == int(np.sum(lite["scores"][:b] >= min_score))
        total += a
        if not a or not b:
            continue
        size = np.asarray(image).shape[:2]
        iou = np.array(box_iou(ref["boxes"][:a], lite["boxes"][:b]))
        iou[ref["classes"][:a, None] != lite["classes"][None, :b]] = 0.0
        used = set()
        for j in range(a):
            order = [k for k in np.argsort(-iou[j]) if k not in used and iou[j, k] >= 0.5]
            if not order:
                continue
            k = int(order[0])
            used.add(k)
            matched += 1
            diffs.append(float(np.abs(ref["boxes"][j] - lite["boxes"][k]).max()))
            score_diff = max(score_diff, float(abs(ref["scores"][j] - lite["scores"][k])))
            ma = paste_masks(ref["masks"][j:j + 1], ref["boxes"][j:j + 1], size, threshold)[0].astype(bool)
            mb = paste_masks(lite["masks"][k:k + 1], lite["boxes"][k:k + 1], size, threshold)[0].astype(bool)
            union = (ma | mb).sum()
            ious.append(float((ma & mb).sum() / union) if union else 1.0)
    return {"images": n, "min_score": min_score, "same_count": same / max(n, 1), "keras_detections": total,
            "matched": matched, "within_1px": int(np.sum(np.asarray(diffs) < 1.0)),
            "max_box_diff": max(diffs, default=0.0), "median_box_diff": float(np.median(diffs)) if diffs else None,
            "max_score_diff": score_diff, "mean_mask_iou": float(np.mean(ious)) if ious else None,
            "median_mask_iou": float(np.median(ious)) if ious else None}
