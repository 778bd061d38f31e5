"""Semantic segmentation models (Keras 3 functional, logits out) and their registry.

Example:
    model = kseg.models.build_model("unet", num_classes=2, input_shape=(256, 256, 3))
"""

from __future__ import annotations

import inspect
from functools import partial

from kseg.errors import KsegError
from kseg.models.deeplab_v3_plus import DeepLabV3Plus
from kseg.models.fcn import FCN
from kseg.models.hrnet import HRNet
from kseg.models.pspnet import PSPNet
from kseg.models.segformer import SegFormer
from kseg.models.segnet import SegNet
from kseg.models.selfie import SelfieSegmenter
from kseg.models.u2net import U2Net
from kseg.models.unet import UNet

MODELS = {
    "fcn32s": partial(FCN, variant="32s"),
    "fcn16s": partial(FCN, variant="16s"),
    "fcn8s": partial(FCN, variant="8s"),
    "unet": UNet,
    "segnet": SegNet,
    "pspnet": PSPNet,
    "deeplab_v3_plus": DeepLabV3Plus,
    "u2net": U2Net,
    "segformer": SegFormer,
    "hrnet": HRNet,
    "selfie": SelfieSegmenter,
}


def build_model(name: str, **kwargs):
    """Build a registered model by name with keyword arguments.

    Args:
        name: a key of ``MODELS``.
        **kwargs: the model class's constructor arguments.

    Raises:
        KsegError: unknown name or argument.

    Example:
        model = build_model("deeplab_v3_plus", num_classes=11, input_shape=(288, 384, 3), pretrained=True)
    """
    if name not in MODELS:
        raise KsegError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")
    factory = MODELS[name]
    cls = factory.func if isinstance(factory, partial) else factory
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} | {"name"}
    if isinstance(factory, partial):
        known -= set(factory.keywords)  # "fcn8s" fixes the variant
    for key in kwargs:
        if key not in known:
            raise KsegError(f"model {name} has no argument {key!r}; it takes {', '.join(sorted(known - {'name'}))}")
    return factory(**kwargs)


__all__ = ["MODELS", "build_model", "FCN", "UNet", "SegNet", "PSPNet", "DeepLabV3Plus", "U2Net", "SegFormer", "HRNet", "SelfieSegmenter"]


def __getattr__(name):
    """``kseg.models.MaskRCNN`` (instance segmentation, ``kseg.models.mask_rcnn``), imported on use.

    It is not in ``MODELS``: the registry holds semantic models (logits ``(B, H, W, C)``).
    """
    if name == "MaskRCNN":
        from kseg.models.mask_rcnn import MaskRCNN

        return MaskRCNN
    raise AttributeError(f"module 'kseg.models' has no attribute {name!r}")
