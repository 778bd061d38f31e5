"""FCN-32s, FCN-16s, FCN-8s."""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import BilinearUpsampleInitializer
from kseg.models.encoders import build_encoder


@keras.saving.register_keras_serializable(package="kseg")
class FCN(SegmentationModel):
    """Fully convolutional network: a classifier turned into convolutions, with learnt upsampling.

    fc6 (7×7, 4096) and fc7 (1×1, 4096) are convolutions with dropout; a 1×1 layer scores the
    classes at stride 32; transposed convolutions initialised to bilinear interpolation
    upsample them. FCN-16s adds scores from pool4 (P4), FCN-8s also from pool3 (P3). fc6 uses
    "same" padding (the paper pads the input by 100 pixels and crops instead; same-padding
    gives the same parameters and aligned outputs). With ``encoder="vgg16"`` and the
    defaults this is FCN-VGG16 (about 134M parameters); other encoders use a lighter fc6/fc7.

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``, multiples of 32 or None.
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        encoder: any encoder name (``vgg16`` for the paper).
        fc_filters: fc6/fc7 channels (default 4096 with vgg16, else 512).
        fc_kernel: fc6 kernel (default 7 with vgg16, else 3).
        dropout: after fc6 and fc7 (0.5 in the paper).
        pretrained: load the encoder's shipped ImageNet weights (efficientnet_lite0, efficientnet_lite2).
        encoder_weights: a local weights file for the encoder (see ``build_encoder``).

    Example:
        model = FCN(num_classes=21, variant="8s", input_shape=(512, 512, 3))  # FCN-8s VGG16
        light = FCN(num_classes=2, variant="8s", encoder="efficientnet_lite0", pretrained=True,
                    input_shape=(256, 256, 3))

    Reference:
        Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
    """

    def __init__(self, num_classes=21, input_shape=(None, None, 3), variant="8s", encoder="vgg16", fc_filters=None,
                 fc_kernel=None, dropout=0.5, pretrained=False, encoder_weights=None, **kwargs):
        if variant not in ("32s", "16s", "8s"):
            raise KsegError(f"FCN variant {variant!r}: use 32s, 16s or 8s")
        input_shape = check_input_shape(input_shape, 32, f"FCN-{variant}")
        fc_filters = fc_filters or (4096 if encoder == "vgg16" else 512)
        fc_kernel = fc_kernel or (7 if encoder == "vgg16" else 3)

        # === Layers ===
        # (the encoder's layers are built by build_encoder on the input tensor)
        def upscore(stride, name):
            # kernel 2×stride initialised to bilinear interpolation, learnt afterwards (no bias)
            return layers.Conv2DTranspose(num_classes, 2 * stride, strides=stride, padding="same", use_bias=False,
                                          kernel_initializer=BilinearUpsampleInitializer(), name=name)

        fc6 = layers.Conv2D(fc_filters, fc_kernel, padding="same", activation="relu", name="fc6")
        drop6 = layers.Dropout(dropout, name="drop6")
        fc7 = layers.Conv2D(fc_filters, 1, activation="relu", name="fc7")
        drop7 = layers.Dropout(dropout, name="drop7")
        score_fr = layers.Conv2D(num_classes, 1, name="score_fr")
        # skip scores start at zero, so FCN-16s/8s start as the coarser net (as in the paper)
        score_pool4 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool4")
        score_pool3 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool3")
        logits = layers.Activation("linear", dtype="float32", name="logits")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, pretrained=pretrained, weights=encoder_weights)
        score = score_fr(drop7(fc7(drop6(fc6(pyr["P5"])))))
        if variant == "32s":
            out = upscore(32, "upscore32")(score)
        else:
            fuse = layers.Add(name="fuse_pool4")([upscore(2, "upscore2")(score), score_pool4(pyr["P4"])])
            if variant == "16s":
                out = upscore(16, "upscore16")(fuse)
            else:
                fuse = layers.Add(name="fuse_pool3")([upscore(2, "upscore_pool4")(fuse), score_pool3(pyr["P3"])])
                out = upscore(8, "upscore8")(fuse)
        outputs = logits(out)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", f"fcn{variant}"),
            config=dict(num_classes=num_classes, input_shape=input_shape, variant=variant, encoder=encoder,
                        fc_filters=fc_filters, fc_kernel=fc_kernel, dropout=dropout, pretrained=pretrained,
                        encoder_weights=encoder_weights),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.variant = variant
        self.encoder = encoder
        self.fc_filters = fc_filters
        self.fc_kernel = fc_kernel
        self.dropout = dropout
        self.pretrained = pretrained
        self.encoder_weights = encoder_weights
