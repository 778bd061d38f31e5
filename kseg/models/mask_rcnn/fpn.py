"""Feature Pyramid Network (P2–P6) on an encoder pyramid, and a tiny encoder for tests.

Reference:
    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
"""

from __future__ import annotations

from keras import layers

FPN_LEVELS = ("P2", "P3", "P4", "P5", "P6")
FPN_STRIDES = (4, 8, 16, 32, 64)


def tiny_encoder(inputs, width=16):
    """A small plain-convolution encoder with the ``{"P1".."P5"}`` contract (tests, demos).

    Args:
        inputs: float32 RGB 0..255 Keras tensor.
        width: channels of P1; each level doubles it up to 4×.

    Returns:
        dict ``{"P1": stride 2, ..., "P5": stride 32}``.
    """
    x = layers.Rescaling(1.0 / 255.0, name="tiny_rescale")(inputs)
    pyramid = {}
    for level, mult in zip(range(1, 6), (1, 2, 2, 4, 4)):
        x = layers.Conv2D(width * mult, 3, strides=2, padding="same", activation="relu", name=f"tiny_p{level}_down")(x)
        x = layers.Conv2D(width * mult, 3, padding="same", activation="relu", name=f"tiny_p{level}_conv")(x)
        pyramid[f"P{level}"] = x
    return pyramid


def build_fpn(pyramid, channels=256, name="fpn"):
    """FPN outputs ``{"P2".."P6"}`` (strides 4…64, ``channels`` each) from an encoder pyramid.

    Lateral 1×1 convolutions on the encoder's P2…P5, a top-down path of nearest ×2
    upsampling and additions, a 3×3 convolution on each merged map, and P6 as a stride-2
    subsampling of P5 (for the RPN's largest anchors), as in the paper.

    Args:
        pyramid: encoder dict with ``P2``…``P5`` Keras tensors (strides 4…32).
        channels: channels of every output level (256 in the paper).
        name: layer-name prefix.

    Returns:
        dict ``{"P2": stride 4, ..., "P6": stride 64}`` of Keras tensors.

    Example:
        fpn = build_fpn(build_encoder("efficientnet_lite0", inputs), channels=128)
    """
    lateral = {k: layers.Conv2D(channels, 1, name=f"{name}_lateral_{k.lower()}")(pyramid[k]) for k in ("P2", "P3", "P4", "P5")}
    merged = {"P5": lateral["P5"]}
    for k, above in (("P4", "P5"), ("P3", "P4"), ("P2", "P3")):
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up_{k.lower()}")(merged[above])
        merged[k] = layers.Add(name=f"{name}_add_{k.lower()}")([lateral[k], up])
    out = {k: layers.Conv2D(channels, 3, padding="same", name=f"{name}_out_{k.lower()}")(merged[k]) for k in ("P2", "P3", "P4", "P5")}
    out["P6"] = layers.MaxPooling2D(1, strides=2, name=f"{name}_p6")(out["P5"])
    return out
