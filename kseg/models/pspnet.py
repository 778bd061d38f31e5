"""PSPNet."""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import conv_bn_relu, pyramid_pooling, upsample
from kseg.models.encoders import build_encoder


@keras.saving.register_keras_serializable(package="kseg")
class PSPNet(SegmentationModel):
    """PSPNet: a pyramid pooling module (bins 1, 2, 3, 6) on a dilated encoder.

    The P5 features (stride ``output_stride``) are pooled into b×b bins, reduced by 1×1
    convolutions, upsampled and concatenated with the features, then a 3×3 convolution and a
    1×1 classifier; the logits are upsampled bilinearly to the input.

    Args:
        num_classes: output channels (logits).
        input_shape: fixed ``(H, W, 3)``: H and W multiples of lcm(bins) × output_stride
            (48 with the defaults, e.g. 288×384, 384×480).
        encoder: ``efficientnet_lite0`` (dilated); keras.applications encoders only at stride 32.
        output_stride: 8 (paper) or 16.
        bins: pooling grid sizes.
        filters: channels of the 3×3 convolution after pooling (512 in the paper).
        pretrained: load the encoder's shipped ImageNet weights.

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """

    def __init__(self, num_classes=21, input_shape=(384, 480, 3), encoder="efficientnet_lite0", output_stride=8,
                 bins=(1, 2, 3, 6), filters=256, pretrained=False, **kwargs):
        bins = tuple(bins)
        input_shape = check_input_shape(input_shape, max(8, output_stride), "PSPNet")
        # === Layers === / === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, output_stride=output_stride, pretrained=pretrained)
        x = pyramid_pooling(pyr["P5"], bins)
        x = conv_bn_relu(x, filters, 3, name="psp_fuse")
        x = layers.Dropout(0.1, name="psp_dropout")(x)
        x = layers.Conv2D(num_classes, 1, name="logits_small")(x)
        outputs = upsample(x, output_stride, "logits")
        outputs = layers.Activation("linear", dtype="float32", name="logits_float32")(outputs)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "pspnet"),
            config=dict(num_classes=num_classes, input_shape=input_shape, encoder=encoder,
                        output_stride=output_stride, bins=bins, filters=filters, pretrained=pretrained),
            **kwargs,
        )
        # === Config ===
        self.num_classes = num_classes
        self.encoder = encoder
