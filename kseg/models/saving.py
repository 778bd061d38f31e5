"""Loading ``.keras`` files that kseg saved (models, losses and metrics registered, no custom_objects).

Example:
    from kseg.models.saving import load_model
    model = load_model("runs/camvid_unet/best.keras")
"""

from __future__ import annotations

from pathlib import Path

from kseg.errors import KsegError


def load_keras_file(path):
    """Load a ``.keras`` file saved by kseg (not compiled), or fail in one line.

    Args:
        path: the file; its kseg layers, models, losses and metrics are registered first.

    Raises:
        KsegError: the file cannot be read as a Keras model (incomplete, or not made by kseg).
    """
    import keras

    import kseg.losses  # noqa: F401  (registers kseg serializables)
    import kseg.metrics  # noqa: F401
    import kseg.models  # noqa: F401

    import zipfile
    from pathlib import Path

    if Path(path).is_file() and str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise KsegError(f"cannot load model {path}: not a .keras model (a .keras file is a zip archive); "
                        "give a model saved by kseg train")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # zip errors, missing config, unknown class
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise KsegError(f"cannot load model {path}: {first}; is the file complete and made by kseg?") from None


def load_model(path):
    """Load a ``.keras`` model saved by kseg (no custom_objects needed).

    Raises:
        KsegError: a missing file, another suffix, or a file that is not a complete kseg model.
    """
    p = Path(path)
    if not p.is_file():
        raise KsegError(f"model file {p} not found; give the path of a .keras file, e.g. runs/NAME/best.keras")
    if p.suffix != ".keras":
        raise KsegError(f"model file {p} is not a .keras file; give a .keras model (kseg evaluate and predict "
                        "also take an exported .tflite)")
    return single_output(load_keras_file(p))


def single_output(model):
    """The model as evaluation and export see it: a deep-supervision trainer (U²-Net with
    ``deep_supervision=True``, whose outputs are a dict of fused and side logits) becomes the
    single-output model with the same weights; a ``Distiller`` (``train.distill``) becomes its
    student; any other model is returned as it is."""
    student = getattr(model, "student", None)
    if student is not None and getattr(model, "teacher", None) is not None:
        return single_output(student)
    if getattr(model, "deep_supervision", False) and hasattr(model, "without_deep_supervision"):
        return model.without_deep_supervision()
    return model
