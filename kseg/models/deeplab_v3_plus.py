"""DeepLab v3+."""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import aspp, conv_bn_relu, upsample
from kseg.models.encoders import build_encoder

# ASPP atrous rates per output stride (the paper's 6/12/18 at 16, doubled at 8)
RATES = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}


@keras.saving.register_keras_serializable(package="kseg")
class DeepLabV3Plus(SegmentationModel):
    """DeepLab v3+: an atrous encoder, ASPP, and a decoder with low-level features.

    The encoder runs at ``output_stride`` 16 (ASPP rates 6/12/18) or 8 (rates doubled); ASPP
    adds image pooling; the decoder upsamples ASPP bilinearly to stride 4, concatenates the
    stride-4 features (P2) reduced to 48 channels, applies two 3×3 convolutions and upsamples
    ×4 to the input. Plain 3×3 convolutions stand where the paper uses depthwise-separable
    ones (same receptive field; SeparableConv2D is the layer tfmot handles worst).

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``, H and W multiples of 32 (a fixed size: image pooling).
        encoder: any name from ``kseg.models.encoders.ENCODERS`` (``efficientnet_lite0``,
            ``mobilenet_v2``, ``resnet50``; all are dilated for output stride 16/8).
        output_stride: 16 or 8 (32 also accepted: rates 3/6/9).
        filters: ASPP and decoder channels (256 in the paper).
        low_level_filters: channels of the reduced P2 features (48 in the paper).
        pretrained: load the encoder's shipped ImageNet weights (efficientnet_lite0, efficientnet_lite2).
        encoder_weights: a local weights file for the encoder (see ``build_encoder``).

    Example:
        model = DeepLabV3Plus(num_classes=11, input_shape=(288, 384, 3), pretrained=True)

    Reference:
        Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
        Segmentation", ECCV 2018.
    """

    def __init__(self, num_classes=21, input_shape=(512, 512, 3), encoder="efficientnet_lite0", output_stride=16,
                 filters=256, low_level_filters=48, pretrained=False, encoder_weights=None, **kwargs):
        if output_stride not in RATES:
            raise KsegError(f"DeepLabV3Plus output_stride={output_stride!r}: use 16 or 8 (or 32)")
        if None in tuple(input_shape)[:2]:
            raise KsegError(
                f"DeepLabV3Plus needs a fixed input size (ASPP's image pooling spreads over it), got "
                f"{tuple(input_shape)}; pass input_shape=(H, W, 3) with H and W multiples of 32, e.g. (512, 512, 3)"
            )
        input_shape = check_input_shape(input_shape, 32, "DeepLabV3Plus")

        # === Layers ===
        # the encoder's and ASPP's layers are made on the tensors they receive
        concat = layers.Concatenate(name="decoder_concat")
        classifier = layers.Conv2D(num_classes, 1, name="logits_small")
        logits = layers.Activation("linear", dtype="float32", name="logits_float32")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, output_stride=output_stride, pretrained=pretrained,
                            weights=encoder_weights)
        x = aspp(pyr["P5"], filters, RATES[output_stride])
        x = upsample(x, output_stride // 4, "decoder_up")
        low = conv_bn_relu(pyr["P2"], low_level_filters, 1, name="decoder_low")
        x = concat([x, low])
        x = conv_bn_relu(x, filters, 3, name="decoder_a")
        x = conv_bn_relu(x, filters, 3, name="decoder_b")
        outputs = logits(upsample(classifier(x), 4, "logits", interpolation="bilinear"))
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "deeplab_v3_plus"),
            config=dict(num_classes=num_classes, input_shape=input_shape, encoder=encoder,
                        output_stride=output_stride, filters=filters, low_level_filters=low_level_filters,
                        pretrained=pretrained, encoder_weights=encoder_weights),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.encoder = encoder
        self.output_stride = output_stride
        self.filters = filters
        self.low_level_filters = low_level_filters
        self.pretrained = pretrained
        self.encoder_weights = encoder_weights
