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
        pretrained: load the encoder's shipped ImageNet weights.

    Reference:
        Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
    """

    def __init__(self, num_classes=21, input_shape=(None, None, 3), variant="8s", encoder="vgg16", fc_filters=None,
                 fc_kernel=None, dropout=0.5, pretrained=False, **kwargs):
        if variant not in ("32s", "16s", "8s"):
            raise KsegError(f"FCN variant {variant!r}: use 32s, 16s or 8s")
        input_shape = check_input_shape(input_shape, 32, f"FCN-{variant}")
        fc_filters = fc_filters or (4096 if encoder == "vgg16" else 512)
        fc_kernel = fc_kernel or (7 if encoder == "vgg16" else 3)
        init = BilinearUpsampleInitializer()
        # === Layers === / === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyr = build_encoder(encoder, inputs, pretrained=pretrained)
        x = layers.Conv2D(fc_filters, fc_kernel, padding="same", activation="relu", name="fc6")(pyr["P5"])
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(fc_filters, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        score = layers.Conv2D(num_classes, 1, name="score_fr")(x)
        if variant == "32s":
            out = layers.Conv2DTranspose(num_classes, 64, strides=32, padding="same", use_bias=False,
                                         kernel_initializer=init, name="upscore32")(score)
        else:
            up = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", use_bias=False,
                                        kernel_initializer=init, name="upscore2")(score)
            pool4 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool4")(pyr["P4"])
            fuse = layers.Add(name="fuse_pool4")([up, pool4])
            if variant == "16s":
                out = layers.Conv2DTranspose(num_classes, 32, strides=16, padding="same", use_bias=False,
                                             kernel_initializer=init, name="upscore16")(fuse)
            else:
                up = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", use_bias=False,
                                            kernel_initializer=init, name="upscore_pool4")(fuse)
                pool3 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool3")(pyr["P3"])
                fuse = layers.Add(name="fuse_pool3")([up, pool3])
                out = layers.Conv2DTranspose(num_classes, 16, strides=8, padding="same", use_bias=False,
                                             kernel_initializer=init, name="upscore8")(fuse)
        outputs = layers.Activation("linear", dtype="float32", name="logits")(out)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", f"fcn{variant}"),
            config=dict(num_classes=num_classes, input_shape=input_shape, variant=variant, encoder=encoder,
                        fc_filters=fc_filters, fc_kernel=fc_kernel, dropout=dropout, pretrained=pretrained),
            **kwargs,
        )
        # === Config ===
        self.num_classes = num_classes
        self.variant = variant
        self.encoder = encoder
