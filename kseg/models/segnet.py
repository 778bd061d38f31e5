"""SegNet."""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import MaxUnpooling2D, conv_bn_relu

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@keras.saving.register_keras_serializable(package="kseg")
class SegNet(SegmentationModel):
    """SegNet: a VGG16 encoder (13 conv + BN + ReLU) and a mirrored decoder that upsamples
    with the encoder's max-pooling indices.

    Each decoder stage places its input where the matching encoder pooling found its maxima
    (``MaxUnpooling2D``, builtin-op formulation), then applies the mirrored convolutions; the
    last one outputs the class scores. Encoder about 14.7M parameters, whole model about 29.5M.
    The model normalises its input (``x / 127.5 - 1``); its encoder is its own (SegNet needs
    the tensors before each pooling), trained from scratch.

    ``MaxUnpooling2D`` is the one custom layer of the zoo: it needs a tf_keras twin and a tfmot
    QuantizeConfig on the quantization path (``kseg.quantize``).

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``, multiples of 32 or None.
        width: channel multiplier (1.0 = paper); smaller values make light variants (at
            least 8 channels per convolution).

    Example:
        model = SegNet(num_classes=11, input_shape=(352, 480, 3))  # CamVid, 29.5M parameters

    Reference:
        Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
        Architecture for Image Segmentation", TPAMI 2017.
    """

    def __init__(self, num_classes=11, input_shape=(None, None, 3), width=1.0, **kwargs):
        input_shape = check_input_shape(input_shape, 32, "SegNet")
        blocks = [tuple(max(8, int(c * width)) for c in b) for b in VGG16_BLOCKS]

        # === Layers ===
        # the 13 + 13 conv-BN-ReLU units and the 5 unpoolings are made while wiring, one per
        # entry of ``blocks``
        rescale = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")
        classifier = layers.Conv2D(num_classes, 3, padding="same", name="logits_conv")
        logits = layers.Activation("linear", dtype="float32", name="logits")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        x = rescale(inputs)
        pre_pool = []
        for b, chans in enumerate(blocks, start=1):
            for i, c in enumerate(chans, start=1):
                x = conv_bn_relu(x, c, 3, name=f"enc{b}_{i}")
            pre_pool.append(x)
            x = layers.MaxPooling2D(2, name=f"enc{b}_pool")(x)
        for b in range(len(blocks), 0, -1):
            chans = blocks[b - 1]
            # values go where encoder block b's pooling found its maxima
            x = MaxUnpooling2D(name=f"dec{b}_unpool")([x, pre_pool[b - 1]])
            # mirrored convolutions; the stage's last one hands over the next stage's width,
            # the very last one is the classifier
            outs = list(chans[:-1]) + [blocks[b - 2][-1] if b > 1 else None]
            for i, c in enumerate(outs, start=1):
                x = classifier(x) if c is None else conv_bn_relu(x, c, 3, name=f"dec{b}_{i}")
        outputs = logits(x)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "segnet"),
            config=dict(num_classes=num_classes, input_shape=input_shape, width=width),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.width = width
