"""kseg: image segmentation with Keras 3, from training to a phone-sized int8 model.

The top level re-exports the small public API. Importing kseg has no side effects and
does not import TensorFlow; heavy modules load when first used.
"""

from kseg.errors import KsegError

__version__ = "0.1.0"

__all__ = ["KsegError", "Segmenter", "SegmentationResult", "__version__"]


def __getattr__(name):
    # lazy: `kseg.Segmenter` without importing the runtime (and its dependencies) at `import kseg`
    if name in ("Segmenter", "SegmentationResult"):
        from kseg import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'kseg' has no attribute {name!r}")
