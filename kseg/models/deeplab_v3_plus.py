"""DeepLab v3+."""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import aspp, conv_bn_relu, upsample
from kseg.models.encoders import build_encoder


@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV3Plus(SegmentationModel):
    """DeepLab v3+: an atrous encoder, ASPP, and a decoder with low-level features.

    The encoder runs at ``output_stride`` 16 (ASPP rates 6/12/18) or 8 (rates doubled); ASPP
    adds image pooling; the decoder upsamples ASPP ×4, concatenates the stride-4 features (P2)
    reduced to 48 channels, applies two 3×3 convolutions and upsamples ×4 to the input.

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``, H and W multiples of 32 (a fixed size: image pooling).
        encoder: an encoder that supports dilation (``efficientnet_lite0``) or, at
            ``output_stride=32``, any encoder.
        output_stride: 16 or 8 (32 allowed for encoders without dilation).
        filters: ASPP and decoder channels (256 in the paper).
        low_level_filters: channels of the reduced P2 features (48 in the paper).
        pretrained: load the encoder's shipped ImageNet weights.

    Example:
        model = DeepLabV3Plus(num_classes=11, input_shape=(288, 384, 3), pretrained=True)

    Reference:
        Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
        Segmentation", ECCV 2018.
    """

    def __init__(self, num_classes=21, input_shape=(512, 512, 3), encoder="efficientnet_lite0", output_stride=16,
                 filters=256, low_level_filters=48, pretrained=False, **kwargs):
        input_shape = check_input_shape(input_shape, 32, "DeepLabV3Plus")
        # === Layers === / === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, output_stride=output_stride, pretrained=pretrained)
        rates = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}[output_stride]
        x = aspp(pyr["P5"], filters, rates)
        x = upsample(x, output_stride // 4, "decoder_up")
        low = conv_bn_relu(pyr["P2"], low_level_filters, 1, name="decoder_low")
        x = layers.Concatenate(name="decoder_concat")([x, low])
        x = conv_bn_relu(x, filters, 3, name="decoder_a")
        x = conv_bn_relu(x, filters, 3, name="decoder_b")
        x = layers.Conv2D(num_classes, 1, name="logits_small")(x)
        outputs = upsample(x, 4, "logits", interpolation="bilinear")
        outputs = layers.Activation("linear", dtype="float32", name="logits_float32")(outputs)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "deeplab_v3_plus"),
            config=dict(num_classes=num_classes, input_shape=input_shape, encoder=encoder,
                        output_stride=output_stride, filters=filters, low_level_filters=low_level_filters,
                        pretrained=pretrained),
            **kwargs,
        )
        # === Config ===
        self.num_classes = num_classes
        self.encoder = encoder
