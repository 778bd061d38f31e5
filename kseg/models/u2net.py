"""U²-Net."""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import upsample

# (in is implied) (RSU height, middle channels, output channels) of the six encoder stages
# En_1..En_6 and the five decoder stages De_5..De_1, as in the paper's Table 1 and the
# authors' code (U2NET / U2NETP); height "4F" is the dilated RSU-4F without pooling
FULL = {
    "encoder": ((7, 32, 64), (6, 32, 128), (5, 64, 256), (4, 128, 512), ("4F", 256, 512), ("4F", 256, 512)),
    "decoder": (("4F", 256, 512), (4, 128, 256), (5, 64, 128), (6, 32, 64), (7, 16, 64)),
}
SMALL = {
    "encoder": ((7, 16, 64), (6, 16, 64), (5, 16, 64), (4, 16, 64), ("4F", 16, 64), ("4F", 16, 64)),
    "decoder": (("4F", 16, 64), (4, 16, 64), (5, 16, 64), (6, 16, 64), (7, 16, 64)),
}
SIDES = ("side1", "side2", "side3", "side4", "side5", "side6")


def rebnconv(x, filters, name, dilation=1):
    """3×3 Conv2D (with bias, as the authors' REBNCONV) → BatchNormalization → ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def rsu(x, height, mid, out, name):
    """Residual U-block RSU-L (L = ``height``, 4…7) or RSU-4F (``height="4F"``).

    An input conv to ``out`` channels, then a small U-Net of ``mid`` channels on it: L−1 levels
    of 3×3 conv with 2×2 max pooling between them, a dilated (×2) conv at the bottom, and a
    decoder that concatenates each level's features and upsamples bilinearly ×2; the last
    decoder conv returns to ``out`` channels and the input conv's output is added (the
    residual). RSU-4F replaces pooling/upsampling by dilations 1, 2, 4, 8 (used where the
    features are already small). Needs the input's height and width divisible by 2^(L−2).
    """
    x_in = rebnconv(x, out, f"{name}_in")
    if height == "4F":
        dilations = (1, 2, 4)
        enc = []
        h = x_in
        for i, d in enumerate(dilations, start=1):
            h = rebnconv(h, mid, f"{name}_enc{i}", dilation=d)
            enc.append(h)
        h = rebnconv(h, mid, f"{name}_bottom", dilation=8)
        for i, d in reversed(list(enumerate(dilations, start=1))):
            h = layers.Concatenate(name=f"{name}_dec{i}_concat")([h, enc[i - 1]])
            h = rebnconv(h, out if i == 1 else mid, f"{name}_dec{i}", dilation=d)
    else:
        enc = []
        h = x_in
        for i in range(1, height):
            if i > 1:
                h = layers.MaxPooling2D(2, name=f"{name}_pool{i - 1}")(h)
            h = rebnconv(h, mid, f"{name}_enc{i}")
            enc.append(h)
        h = rebnconv(h, mid, f"{name}_bottom", dilation=2)
        for i in reversed(range(1, height)):
            h = layers.Concatenate(name=f"{name}_dec{i}_concat")([h, enc[i - 1]])
            h = rebnconv(h, out if i == 1 else mid, f"{name}_dec{i}")
            if i > 1:
                h = upsample(h, 2, f"{name}_dec{i}_up")
    return layers.Add(name=f"{name}_residual")([h, x_in])


@keras.saving.register_keras_serializable(package="kseg")
class U2Net(SegmentationModel):
    """U²-Net: a U-Net of residual U-blocks (RSU), with six side outputs fused.

    Each of the six encoder stages and five decoder stages is itself a small U-Net (RSU-7 at
    full resolution down to RSU-4 at 1/8; RSU-4F, dilated without pooling, at 1/16 and 1/32),
    so features mix local and multi-scale context at every resolution without a pretrained
    backbone. Each decoder stage (and the last encoder stage) gives a side output: a 3×3
    convolution to ``num_classes`` logits, upsampled bilinearly to the input; a 1×1
    convolution of the six concatenated side logits is the fused output.

    The default ``small=True`` is the paper's U²-Net† (16 middle / 64 output channels
    everywhere): 1,131,181 trainable parameters with one output channel, the paper's "1.1 M"
    (4.7 MB); 1,136,877 counting BatchNormalization's moving statistics (``count_params()``).
    ``small=False`` is the full U²-Net: 44,009,869 trainable (the paper's 44.0 M, 176.3 MB).
    ``width`` scales every channel count (for tests and tiny budgets).

    Deep supervision: the paper trains with a loss on the fused output and on each of the six
    side outputs. With ``deep_supervision=True`` the model returns a dict
    ``{"logits": fused, "side1": …, "side6": …}`` (all ``(B, H, W, num_classes)``) for such
    training (``model.compile(loss=loss)`` applies one loss to every output; feed the same mask
    to each, e.g. ``y = {k: mask for k in model.output_names}``). By default it returns the fused
    logits only, as every kseg model does, so training, evaluation, QAT and export work as
    usual; ``without_deep_supervision()`` turns a deep-supervision model into that one with the
    same weights. ``kseg train`` does all of this when the config says
    ``model: {name: u2net, kwargs: {deep_supervision: true}}``: it sums the loss over the seven
    outputs, reports and monitors the fused output's metrics, and saves the fused model as
    ``best.keras``/``last.keras``.

    Args:
        num_classes: output channels (logits): 2 for foreground/background with kseg's
            softmax losses, or 1 for the paper's single sigmoid saliency map.
        input_shape: ``(H, W, 3)``, H and W multiples of 32 (or None). Inputs are 0–255 RGB.
        small: U²-Net† (True) or the full U²-Net (False).
        width: multiplier of every channel count (1.0: the paper's).
        deep_supervision: return the fused and the six side logits (a dict) for training.

    Example:
        model = U2Net(num_classes=2, input_shape=(320, 320, 3))
        trainer = U2Net(num_classes=2, input_shape=(320, 320, 3), deep_supervision=True)

    Reference:
        Qin et al., "U²-Net: Going Deeper with Nested U-Structure for Salient Object
        Detection", Pattern Recognition 106, 2020.
    """

    def __init__(self, num_classes=2, input_shape=(320, 320, 3), small=True, width=1.0, deep_supervision=False,
                 **kwargs):
        input_shape = check_input_shape(input_shape, 32, "U2Net")
        if num_classes < 1:
            raise KsegError(f"U2Net num_classes must be 1 (a sigmoid map) or more, got {num_classes}")
        if width <= 0:
            raise KsegError(f"U2Net width must be positive (1.0 is the paper's channels), got {width}")
        spec = SMALL if small else FULL
        ch = lambda c: max(1, int(round(c * width)))  # noqa: E731

        # === Layers ===
        # the RSU blocks' layers are made while wiring; the heads here
        rescale = layers.Rescaling(1.0 / 255.0, name="rescale")
        side_convs = [layers.Conv2D(num_classes, 3, padding="same", name=f"{s}_conv") for s in SIDES]
        fuse_concat = layers.Concatenate(name="fuse_concat")
        fuse = layers.Conv2D(num_classes, 1, name="fuse_conv")
        to_float32 = {k: layers.Activation("linear", dtype="float32", name=k) for k in ("logits", *SIDES)}

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        x = rescale(inputs)
        encoded = []
        for i, (height, mid, out) in enumerate(spec["encoder"], start=1):
            if i > 1:
                x = layers.MaxPooling2D(2, name=f"en{i}_pool")(x)
            x = rsu(x, height, ch(mid), ch(out), f"en{i}")
            encoded.append(x)
        decoded = [encoded[5]]  # En_6 gives the deepest side output
        for (height, mid, out), level in zip(spec["decoder"], (5, 4, 3, 2, 1)):
            x = upsample(x, 2, f"de{level}_up")
            x = layers.Concatenate(name=f"de{level}_concat")([x, encoded[level - 1]])
            x = rsu(x, height, ch(mid), ch(out), f"de{level}")
            decoded.append(x)
        # side k comes from De_k (k = 1..5) or En_6 (k = 6), at stride 2^(k-1)
        by_side = {6: decoded[0], 5: decoded[1], 4: decoded[2], 3: decoded[3], 2: decoded[4], 1: decoded[5]}
        sides = []
        for k, conv in enumerate(side_convs, start=1):
            sides.append(upsample(conv(by_side[k]), 2 ** (k - 1), f"side{k}_up"))
        fused = fuse(fuse_concat(sides))
        if deep_supervision:
            outputs = {"logits": to_float32["logits"](fused)}
            outputs.update({s: to_float32[s](y) for s, y in zip(SIDES, sides)})
        else:
            outputs = to_float32["logits"](fused)
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "u2net"),
            config=dict(num_classes=num_classes, input_shape=input_shape, small=small, width=width,
                        deep_supervision=deep_supervision),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.small = small
        self.width = width
        self.deep_supervision = deep_supervision

    def without_deep_supervision(self):
        """The single-output model (fused logits) with this model's weights (for export)."""
        if not self.deep_supervision:
            return self
        config = {**self.get_config(), "deep_supervision": False}
        config["name"] = self.name
        model = type(self).from_config(config)
        weights = {w.path: w for w in self.weights}
        for w in model.weights:
            w.assign(weights[w.path])
        return model
