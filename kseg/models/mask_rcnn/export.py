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


def export_tflite(model, path, allow_select_ops=False):
    """Convert a ``MaskRCNN``'s inference (batch 1) to a float32 ``.tflite`` file.

    Args:
        model: a ``MaskRCNN``.
        path: output ``.tflite`` (written atomically).
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
        conv = tf.lite.TFLiteConverter.from_saved_model(saved)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flat = conv.convert()
        except Exception as e:
            if not allow_select_ops:
                first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0])
                raise KsegError(f"MaskRCNN TFLite conversion with builtin ops failed: {first.strip()[:200]}; "
                                "pass allow_select_ops=True to accept TF select ops") from None
            conv = tf.lite.TFLiteConverter.from_saved_model(saved)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            flat = conv.convert()
    with atomic_path(path) as tmp_path:
        Path(tmp_path).write_bytes(flat)
    ops = sorted(set(tflite_ops(path)))
    return {
        "path": str(path),
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
