"""The base of every kseg segmentation model: a Keras functional model built in ``__init__``."""

from __future__ import annotations

import keras

from kseg.errors import KsegError


class SegmentationModel(keras.Model):
    """Functional model whose constructor arguments are its config.

    Subclasses build ``inputs``/``outputs`` in ``__init__``, call
    ``super().__init__(inputs=..., outputs=..., config=dict(...))`` with every constructor
    argument, keep each argument on ``self`` (their ``# === Config ===`` part), and get
    ``get_config``/``from_config`` and ``.keras`` round trips for free.
    """

    def __init__(self, inputs, outputs, config: dict, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._kseg_config = dict(config)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._kseg_config}

    @classmethod
    def from_config(cls, config):
        """Rebuild the architecture; encoder weights are NOT loaded (a ``.keras`` file brings its
        own), but ``pretrained``/``encoder_weights`` stay in the config as they were."""
        config = dict(config)
        kept = {k: config[k] for k in ("pretrained", "encoder_weights") if k in config}
        blank = {"pretrained": False, "encoder_weights": None}
        model = cls(**{**config, **{k: blank[k] for k in kept}})
        model._kseg_config.update(kept)
        for key, value in kept.items():
            setattr(model, key, value)
        return model


def check_input_shape(input_shape, multiple: int, model: str):
    """Validate ``(H, W, 3)``; H and W (if fixed) must be multiples of ``multiple``."""
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise KsegError(f"{model} takes RGB images: input_shape must be (H, W, 3), got {tuple(input_shape)}")
    h, w = input_shape[:2]
    for v in (h, w):
        if v is not None and (v <= 0 or v % multiple):
            ok = ", ".join(str(multiple * k) for k in range(max(1, (v or 0) // multiple - 1), (v or 0) // multiple + 3))
            raise KsegError(
                f"{model} cannot take input {h}×{w}: height and width must be multiples of {multiple} "
                f"(e.g. {ok})"
            )
    return tuple(input_shape)


def with_input_size(model, size):
    """The same network and weights at another fixed input size ``(H, W)``.

    Fully convolutional kseg models trained at one size run at others (e.g. a portrait model
    trained at 224×224 and exported at 160×160 for speed); this rebuilds the architecture from
    its config with ``input_shape=(H, W, 3)`` and copies every weight.

    Args:
        model: a kseg ``SegmentationModel``.
        size: ``(H, W)``, multiples of the model's stride.

    Returns:
        A new model (or ``model`` itself when the size is already ``(H, W)``).

    Example:
        fast = with_input_size(keras.saving.load_model("runs/portrait/best.keras"), (160, 160))
    """
    size = (int(size[0]), int(size[1]))
    if tuple(model.input_shape[1:3]) == size:
        return model
    if not isinstance(model, SegmentationModel):
        raise KsegError(
            f"model {model.name} is not a kseg model, so it cannot be rebuilt at {size[0]}×{size[1]}; "
            "export it at its own input size"
        )
    config = {**model.get_config(), "input_shape": (*size, model.input_shape[-1])}
    resized = type(model).from_config(config)
    resized.set_weights(model.get_weights())
    return resized
