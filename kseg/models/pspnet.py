"""PSPNet."""

from __future__ import annotations

import math

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import conv_bn_relu, pyramid_pooling, upsample
from kseg.models.encoders import build_encoder


@keras.saving.register_keras_serializable(package="kseg")
class PSPNet(SegmentationModel):
    """PSPNet: a pyramid pooling module (bins 1, 2, 3, 6) on a dilated encoder.

    The P5 features (stride ``output_stride``) are average-pooled into b×b bins, reduced by
    1×1 conv-BN-ReLU, upsampled bilinearly and concatenated with the features, then a 3×3
    conv-BN-ReLU, dropout and a 1×1 classifier; the logits are upsampled bilinearly to the
    input. The pooling sizes are computed from the feature map, so the input size is fixed:
    H and W must be multiples of ``output_stride × lcm(bins)`` (48 with the defaults).

    Args:
        num_classes: output channels (logits).
        input_shape: fixed ``(H, W, 3)``, H and W multiples of ``output_stride × lcm(bins)``
            (e.g. 384×480 at output stride 8 with bins 1, 2, 3, 6).
        encoder: any name from ``kseg.models.encoders.ENCODERS`` (the paper: a dilated
            ResNet); the default ``efficientnet_lite0`` is the one with shipped weights.
        output_stride: 8 (paper), 16 or 32.
        bins: pooling grid sizes.
        filters: channels of the 3×3 convolution after pooling (512 in the paper); each bin
            gets ``P5 channels / len(bins)`` (at least 16).
        pretrained: load the encoder's shipped ImageNet weights (efficientnet_lite0, efficientnet_lite2).
        encoder_weights: a local weights file for the encoder (see ``build_encoder``).

    Example:
        model = PSPNet(num_classes=11, input_shape=(384, 480, 3), pretrained=True)
        paper = PSPNet(num_classes=21, encoder="resnet50", filters=512, input_shape=(480, 480, 3))

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """

    def __init__(self, num_classes=21, input_shape=(384, 480, 3), encoder="efficientnet_lite0", output_stride=8,
                 bins=(1, 2, 3, 6), filters=256, pretrained=False, encoder_weights=None, **kwargs):
        bins = tuple(int(b) for b in bins)
        multiple = output_stride * math.lcm(*bins)
        if None in tuple(input_shape)[:2]:
            raise KsegError(
                f"PSPNet needs a fixed input size (its pooling sizes follow it), got {tuple(input_shape)}; pass "
                f"input_shape=(H, W, 3) with H and W multiples of {multiple}, e.g. ({8 * multiple}, {10 * multiple}, 3)"
            )
        input_shape = check_input_shape(input_shape, multiple, f"PSPNet (output_stride {output_stride}, bins {list(bins)})")

        # === Layers ===
        # the encoder's and the pyramid's layers are made on the tensors they receive
        dropout = layers.Dropout(0.1, name="psp_dropout")
        classifier = layers.Conv2D(num_classes, 1, name="logits_small")
        logits = layers.Activation("linear", dtype="float32", name="logits_float32")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, output_stride=output_stride, pretrained=pretrained,
                            weights=encoder_weights)
        x = pyramid_pooling(pyr["P5"], bins)
        x = conv_bn_relu(x, filters, 3, name="psp_fuse")
        x = classifier(dropout(x))
        outputs = logits(upsample(x, output_stride, "logits"))
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "pspnet"),
            config=dict(num_classes=num_classes, input_shape=input_shape, encoder=encoder,
                        output_stride=output_stride, bins=bins, filters=filters, pretrained=pretrained,
                        encoder_weights=encoder_weights),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.encoder = encoder
        self.output_stride = output_stride
        self.bins = bins
        self.filters = filters
        self.pretrained = pretrained
        self.encoder_weights = encoder_weights
