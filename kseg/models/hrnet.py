"""HRNet (HRNetV2 for semantic segmentation)."""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import conv_bn_relu, upsample

# The authors' configurations (HRNet-Semantic-Segmentation / MMSegmentation): stage 1 is
# ``stage1_blocks`` bottlenecks of ``stage1_filters`` (×4 out); stages 2–4 have ``modules``
# high-resolution modules of ``blocks`` basic blocks per branch, branch i with width·2^i
# channels.
VARIANTS = {
    "w18_small": dict(width=18, stage1_filters=64, stage1_blocks=2, modules=(1, 3, 2), blocks=2),  # HRNetV2-W18-Small-v2
    "w18_small_v1": dict(width=16, stage1_filters=32, stage1_blocks=1, modules=(1, 1, 1), blocks=2),
    "w18": dict(width=18, stage1_filters=64, stage1_blocks=4, modules=(1, 4, 3), blocks=4),
    "w32": dict(width=32, stage1_filters=64, stage1_blocks=4, modules=(1, 4, 3), blocks=4),
    "w48": dict(width=48, stage1_filters=64, stage1_blocks=4, modules=(1, 4, 3), blocks=4),
}


def conv_bn(x, filters, kernel, name, strides=1):
    """Conv2D (no bias) → BatchNormalization, no activation."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def bottleneck(x, filters, name):
    """ResNet bottleneck (1×1, 3×3, 1×1 to 4·filters), projected shortcut when widths differ."""
    out = 4 * filters
    shortcut = x if x.shape[-1] == out else conv_bn(x, out, 1, f"{name}_down")
    y = conv_bn_relu(x, filters, 1, name=f"{name}_a")
    y = conv_bn_relu(y, filters, 3, name=f"{name}_b")
    y = conv_bn(y, out, 1, f"{name}_c")
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([y, shortcut]))


def basic_block(x, filters, name):
    """ResNet basic block (two 3×3), identity shortcut."""
    y = conv_bn_relu(x, filters, 3, name=f"{name}_a")
    y = conv_bn(y, filters, 3, f"{name}_b")
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([y, x]))


def fuse(branches, widths, name):
    """HRNet's exchange unit: output i sums every branch brought to branch i's resolution and
    width — lower resolutions by a 1×1 conv-BN and bilinear upsampling, higher ones by
    strided 3×3 conv-BN(-ReLU) steps — and applies ReLU."""
    outs = []
    for i, wi in enumerate(widths):
        terms = []
        for j, xj in enumerate(branches):
            if j == i:
                terms.append(xj)
            elif j > i:
                y = conv_bn(xj, wi, 1, f"{name}_{j}to{i}")
                terms.append(upsample(y, 2 ** (j - i), f"{name}_{j}to{i}_up"))
            else:
                y = xj
                for step in range(i - j):
                    last = step == i - j - 1
                    tag = f"{name}_{j}to{i}_down{step}"
                    y = conv_bn(y, wi, 3, tag, strides=2) if last else conv_bn_relu(y, widths[j], 3, name=tag, strides=2)
                terms.append(y)
        outs.append(layers.ReLU(name=f"{name}_out{i}_relu")(layers.Add(name=f"{name}_out{i}_sum")(terms)))
    return outs


@keras.saving.register_keras_serializable(package="kseg")
class HRNet(SegmentationModel):
    """HRNet (HRNetV2): high-resolution and lower-resolution branches run in parallel and
    repeatedly exchange information; the segmentation head concatenates all branches.

    A stem of two stride-2 3×3 convolutions (stride 4) and a stage of bottlenecks feed stage 2
    with two branches (strides 4 and 8, width C and 2C); stages 3 and 4 add a branch each (stride
    16 at 4C, stride 32 at 8C). Each stage is a sequence of modules: basic blocks on every branch,
    then the fusion in which every output branch sums all input branches, resampled (1×1 conv +
    bilinear upsampling from lower resolutions, strided 3×3 convolutions from higher ones). The
    HRNetV2 head upsamples the four branches to stride 4, concatenates them (15C channels),
    applies 1×1 conv-BN-ReLU and a 1×1 classifier; the logits are upsampled ×4 to the input.

    The default ``w18_small`` is HRNetV2-W18-Small-v2 (C = 18, stage modules 1/3/2, two blocks per
    branch): 3,939,579 trainable parameters with 19 classes, the paper's 3.9M (Small-v1 1,540,819:
    1.5M; W18 9,641,119: 9.6M; W48 65,859,379: 65.9M). ``w18`` is the
    full HRNetV2-W18, ``w32``/``w48`` the wider ones; ``width`` and ``stage1_filters``
    override a variant's (for tests and small budgets). Plain Conv2D/BN/ReLU/Add/UpSampling2D
    throughout: twin, QAT and int8 TFLite need nothing special.

    Args:
        num_classes: output channels (logits).
        input_shape: ``(H, W, 3)``, H and W multiples of 32 (or None); 0–255 RGB in.
        variant: ``"w18_small"`` (default), ``"w18_small_v1"``, ``"w18"``, ``"w32"``, ``"w48"``.
        width: override the variant's C (branch i has C·2^i channels).
        stage1_filters: override the variant's stage-1 bottleneck width (output ×4).
        stem_filters: channels of the two stem convolutions (64).

    Example:
        model = HRNet(num_classes=11, input_shape=(288, 384, 3))

    Reference:
        Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
        TPAMI 2020 (arXiv 1908.07919, 2019).
    """

    def __init__(self, num_classes=19, input_shape=(512, 512, 3), variant="w18_small", width=None,
                 stage1_filters=None, stem_filters=64, **kwargs):
        if variant not in VARIANTS:
            raise KsegError(f"HRNet variant {variant!r} unknown; use one of {', '.join(VARIANTS)}")
        input_shape = check_input_shape(input_shape, 32, "HRNet")
        spec = VARIANTS[variant]
        c = int(width or spec["width"])
        s1 = int(stage1_filters or spec["stage1_filters"])
        widths = [c, 2 * c, 4 * c, 8 * c]

        # === Layers ===
        # the branches' layers are made while wiring; the head's here
        rescale = layers.Rescaling(1.0 / 255.0, name="rescale")
        concat = layers.Concatenate(name="head_concat")
        head = layers.Conv2D(sum(widths), 1, name="head_conv")
        head_bn = layers.BatchNormalization(name="head_bn")
        head_relu = layers.ReLU(name="head_relu")
        classifier = layers.Conv2D(num_classes, 1, name="logits_small")
        logits = layers.Activation("linear", dtype="float32", name="logits_float32")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        x = conv_bn_relu(rescale(inputs), stem_filters, 3, name="stem1", strides=2)
        x = conv_bn_relu(x, stem_filters, 3, name="stem2", strides=2)
        for b in range(spec["stage1_blocks"]):
            x = bottleneck(x, s1, f"stage1_block{b}")
        branches = [x]
        for stage, modules in zip((2, 3, 4), spec["modules"]):
            n = stage  # branches in this stage
            # transition: adapt existing branches' widths, open a new branch from the lowest
            new = []
            for i in range(n):
                name = f"transition{stage}_{i}"
                if i < len(branches):
                    xi = branches[i]
                    new.append(xi if xi.shape[-1] == widths[i] else conv_bn_relu(xi, widths[i], 3, name=name))
                else:
                    new.append(conv_bn_relu(branches[-1], widths[i], 3, name=name, strides=2))
            branches = new
            for m in range(modules):
                tag = f"stage{stage}_module{m}"
                branches = [self._branch(xi, widths[i], spec["blocks"], f"{tag}_branch{i}")
                            for i, xi in enumerate(branches)]
                branches = fuse(branches, widths[:n], f"{tag}_fuse")
        feats = [upsample(xi, 2 ** i, f"head_up{i}") for i, xi in enumerate(branches)]
        x = head_relu(head_bn(head(concat(feats))))
        outputs = logits(upsample(classifier(x), 4, "logits"))
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "hrnet"),
            config=dict(num_classes=num_classes, input_shape=input_shape, variant=variant, width=width,
                        stage1_filters=stage1_filters, stem_filters=stem_filters),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.variant = variant
        self.width = width
        self.stage1_filters = stage1_filters
        self.stem_filters = stem_filters

    @staticmethod
    def _branch(x, filters, blocks, name):
        for b in range(blocks):
            x = basic_block(x, filters, f"{name}_block{b}")
        return x
