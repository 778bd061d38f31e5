"""Quantization: the tf_keras twin of a Keras 3 model and quantization-aware training.

This is the only package that touches tf_keras and tensorflow-model-optimization, and it imports
them lazily, inside functions, so that importing kseg never switches the process to Keras 2.

Example:
    from kseg.quantize import to_tf_keras, quantize_aware
"""

from kseg.quantize.twin import TWINS, assert_twin_equal, register_twin, to_tf_keras, twin_max_abs_diff

__all__ = ["TWINS", "assert_twin_equal", "register_twin", "to_tf_keras", "twin_max_abs_diff",
           "quantize_aware", "qat_fine_tune"]


def __getattr__(name):
    if name in ("quantize_aware", "qat_fine_tune", "load_qat_model"):
        from kseg.quantize import qat

        return getattr(qat, name)
    raise AttributeError(name)
