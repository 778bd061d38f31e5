"""U-Net."""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.base import SegmentationModel, check_input_shape
from kseg.errors import KsegError
from kseg.models.blocks import conv_bn_relu, separable_bn_relu, squeeze_excite, upsample
from kseg.models.encoders import build_encoder


@keras.saving.register_keras_serializable(package="kseg")
class UNet(SegmentationModel):
    """U-Net: a contracting path and a symmetric expanding path joined by skip connections.

    ``encoder=None`` is the paper configuration: ``depth`` levels of two 3×3 convolutions
    (``filters``·2^k channels: 64…1024 by default), 2×2 max pooling, 2×2 up-convolutions and
    concatenated skips ("same" padding, so the output has the input's size; 31.0M parameters
    with the defaults). With an encoder (e.g. ``"efficientnet_lite0"``), its pyramid P1…P5
    feeds a lighter decoder of ``decoder_filters`` channels.

    For an on-device budget (MediaPipe's selfie segmenter does about 58M multiply-adds per
    frame), ``encoder_stages`` truncates EfficientNet-Lite0 (``4``: stride 16, 80 channels) and
    ``decoder_block="separable"`` replaces each level's two 3×3 convolutions by a 1×1
    convolution and one depthwise-separable 3×3 (about 8× fewer multiply-adds at P1).

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``; H, W multiples of 2^depth (or 32 with an encoder), or None.
        encoder: ``None`` or a name from ``kseg.models.encoders.ENCODERS``.
        filters: paper config: channels of the first level.
        depth: paper config: number of poolings.
        batch_norm: paper config: add BatchNormalization after each convolution.
        decoder_filters: encoder variant: channels of the decoder stages, top level down to P1
            (four for a full encoder; one per level below the top for a truncated one).
        encoder_stages: EfficientNet-Lite only: build only its first N MBConv stages (None: all 7).
        encoder_expand: EfficientNet-Lite only: per stage, the share of each block's expansion
            channels kept, e.g. ``[1, 1, 1, 0.5, 0.5]`` (pretrained: the most important ones).
        decoder_block: ``"conv"`` (two 3×3 conv-BN-ReLU per level) or ``"separable"`` (1×1, then
            depthwise 3×3 + 1×1).
        global_context: squeeze-excite gating (``blocks.squeeze_excite``) on the encoder's top
            level and after each decoder level: whole-image context for a small model.
        pretrained: load the encoder's shipped ImageNet weights (efficientnet_lite0, efficientnet_lite2).
        encoder_weights: a local weights file for the encoder (see ``build_encoder``).

    Example:
        model = UNet(num_classes=2, input_shape=(256, 256, 3), encoder="efficientnet_lite0", pretrained=True)

    Reference:
        Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
        MICCAI 2015.
    """

    def __init__(self, num_classes=2, input_shape=(256, 256, 3), encoder=None, filters=64, depth=4,
                 batch_norm=False, decoder_filters=(128, 64, 48, 32), pretrained=False, encoder_weights=None,
                 encoder_stages=None, decoder_block="conv", global_context=False, encoder_expand=None, **kwargs):
        multiple = 2 ** depth if encoder is None else (32 if encoder_stages in (None, 6, 7) else 16)
        input_shape = check_input_shape(input_shape, multiple, "UNet")
        decoder_filters = tuple(decoder_filters)
        encoder_expand = None if encoder_expand is None else list(encoder_expand)
        if decoder_block not in ("conv", "separable"):
            raise KsegError(f"UNet decoder_block must be 'conv' or 'separable', got {decoder_block!r}")

        # === Layers ===
        # per-level layers are made while wiring (their number follows ``depth``); the
        # encoder's by build_encoder on the input tensor
        rescale = layers.Rescaling(1.0 / 255.0, name="rescale")
        head = layers.Conv2D(num_classes, 1, name="logits", dtype="float32")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        if encoder is None:
            x = rescale(inputs)
            skips = []
            for level in range(depth):
                x = self._double_conv(x, filters * 2 ** level, f"down{level}", batch_norm)
                skips.append(x)
                x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
            x = self._double_conv(x, filters * 2 ** depth, "bottom", batch_norm)
            for level in reversed(range(depth)):
                x = layers.Conv2DTranspose(filters * 2 ** level, 2, strides=2, name=f"up{level}_upconv")(x)
                x = layers.Concatenate(name=f"up{level}_concat")([skips[level], x])
                x = self._double_conv(x, filters * 2 ** level, f"up{level}", batch_norm)
        else:
            pyr = build_encoder(encoder, inputs, pretrained=pretrained, weights=encoder_weights,
                                stages=encoder_stages, expand=encoder_expand)
            top = max(pyr)
            below = sorted((k for k in pyr if k != top), reverse=True)  # e.g. P4, P3, P2, P1
            if len(decoder_filters) != len(below):
                raise KsegError(
                    f"UNet with this encoder has {len(below)} decoder levels ({', '.join(below)}); "
                    f"decoder_filters has {len(decoder_filters)} values: give one per level"
                )
            x = pyr[top]
            if global_context:
                x = squeeze_excite(x, name="top_se")
            for i, (level, f) in enumerate(zip(below, decoder_filters)):
                x = upsample(x, 2, f"dec{i}_up")
                x = layers.Concatenate(name=f"dec{i}_concat")([x, pyr[level]])
                if decoder_block == "conv":
                    x = conv_bn_relu(x, f, 3, name=f"dec{i}_a")
                    x = conv_bn_relu(x, f, 3, name=f"dec{i}_b")
                else:
                    x = conv_bn_relu(x, f, 1, name=f"dec{i}_a")
                    x = separable_bn_relu(x, f, 3, name=f"dec{i}_b")
                if global_context:
                    x = squeeze_excite(x, name=f"dec{i}_se")
            x = upsample(x, 2, "dec_final_up")
        outputs = head(x)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "unet"),
            config=dict(num_classes=num_classes, input_shape=input_shape, encoder=encoder, filters=filters,
                        depth=depth, batch_norm=batch_norm, decoder_filters=decoder_filters, pretrained=pretrained,
                        encoder_weights=encoder_weights, encoder_stages=encoder_stages, decoder_block=decoder_block,
                        global_context=global_context, encoder_expand=encoder_expand),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.encoder = encoder
        self.filters = filters
        self.depth = depth
        self.batch_norm = batch_norm
        self.decoder_filters = decoder_filters
        self.pretrained = pretrained
        self.encoder_weights = encoder_weights
        self.encoder_stages = encoder_stages
        self.decoder_block = decoder_block
        self.global_context = global_context
        self.encoder_expand = encoder_expand

    @staticmethod
    def _double_conv(x, f, name, batch_norm):
        for i in ("a", "b"):
            x = layers.Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"{name}_{i}_conv")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{name}_{i}_bn")(x)
            x = layers.ReLU(name=f"{name}_{i}_relu")(x)
        return x
