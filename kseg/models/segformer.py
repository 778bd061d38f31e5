"""SegFormer."""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.base import SegmentationModel, check_input_shape
from kseg.models.blocks import conv_bn_relu, upsample

# Mix Transformer encoders MiT-B0..B5 (the paper's Table 6): channels, blocks and heads of the
# four stages; every variant has sequence-reduction ratios 8, 4, 2, 1 and MLP ratio 4
VARIANTS = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    "b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), decoder_dim=256),
    "b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), decoder_dim=768),
    "b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), decoder_dim=768),
    "b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), decoder_dim=768),
    "b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), decoder_dim=768),
}
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCHES = ((7, 4), (3, 2), (3, 2), (3, 2))  # overlapping patch embedding: kernel, stride


def efficient_attention(x, dim, heads, sr, name):
    """Multi-head self-attention whose keys and values come from a ``sr``×``sr``-strided
    convolution of the input (sequence reduction: N queries attend to N/sr² keys).

    Written with layers both Keras versions share and tfmot and TFLite handle (``MultiHeadAttention``
    is neither twin- nor tfmot-friendly): per-head 1×1 convolutions for Q, K, V (together
    exactly the paper's linear projections, split by head), ``Reshape`` to tokens, ``Dot``
    (BATCH_MATMUL) for Q·Kᵀ and attention·V, ``Softmax``. The 1/√d scaling is folded into the
    query projection (its initializer is scaled by 1/√d, so at initialisation it equals the
    usual form; no extra layer).
    """
    h, w = int(x.shape[1]), int(x.shape[2])
    d = dim // heads
    kv = x
    if sr > 1:
        kv = layers.Conv2D(dim, sr, strides=sr, name=f"{name}_sr")(kv)
        kv = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_sr_norm")(kv)
    m = int(kv.shape[1]) * int(kv.shape[2])
    q_init = keras.initializers.VarianceScaling(scale=1.0 / d, mode="fan_avg", distribution="uniform")
    outs = []
    for i in range(heads):
        q = layers.Conv2D(d, 1, kernel_initializer=q_init, name=f"{name}_h{i}_q")(x)
        k = layers.Conv2D(d, 1, name=f"{name}_h{i}_k")(kv)
        v = layers.Conv2D(d, 1, name=f"{name}_h{i}_v")(kv)
        q = layers.Reshape((h * w, d), name=f"{name}_h{i}_q_tokens")(q)
        k = layers.Reshape((m, d), name=f"{name}_h{i}_k_tokens")(k)
        v = layers.Reshape((m, d), name=f"{name}_h{i}_v_tokens")(v)
        a = layers.Dot(axes=(2, 2), name=f"{name}_h{i}_scores")([q, k])  # (B, N, M)
        a = layers.Softmax(axis=-1, name=f"{name}_h{i}_softmax")(a)
        o = layers.Dot(axes=(2, 1), name=f"{name}_h{i}_mix")([a, v])  # (B, N, d)
        outs.append(layers.Reshape((h, w, d), name=f"{name}_h{i}_out")(o))
    y = outs[0] if heads == 1 else layers.Concatenate(name=f"{name}_heads")(outs)
    return layers.Conv2D(dim, 1, name=f"{name}_proj")(y)


def mix_ffn(x, dim, hidden, name):
    """Mix-FFN: 1×1 up-projection, depthwise 3×3 (the positional information), GELU, 1×1 down."""
    y = layers.Conv2D(hidden, 1, name=f"{name}_fc1")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dwconv")(y)
    y = layers.Activation("gelu", name=f"{name}_gelu")(y)
    return layers.Conv2D(dim, 1, name=f"{name}_fc2")(y)


def transformer_block(x, dim, heads, sr, mlp_ratio, name):
    """Pre-norm block: x + attention(LN(x)), then x + Mix-FFN(LN(x))."""
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    x = layers.Add(name=f"{name}_attn_add")([x, efficient_attention(y, dim, heads, sr, f"{name}_attn")])
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    return layers.Add(name=f"{name}_ffn_add")([x, mix_ffn(y, dim, dim * mlp_ratio, f"{name}_ffn")])


def mix_transformer(x, embed_dims, depths, num_heads, sr_ratios, mlp_ratio=4):
    """MiT encoder on a (rescaled) image: four stages at strides 4, 8, 16, 32; returns
    ``{"P2": …, "P5": …}`` (kseg's pyramid keys by stride)."""
    pyramid = {}
    for s, (dim, depth, heads, sr, (k, stride)) in enumerate(
            zip(embed_dims, depths, num_heads, sr_ratios, PATCHES), start=1):
        name = f"stage{s}"
        x = layers.ZeroPadding2D(k // 2, name=f"{name}_patch_pad")(x)
        x = layers.Conv2D(dim, k, strides=stride, name=f"{name}_patch_embed")(x)
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_patch_norm")(x)
        for b in range(depth):
            x = transformer_block(x, dim, heads, sr, mlp_ratio, f"{name}_block{b}")
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x)
        pyramid[f"P{s + 1}"] = x
    return pyramid


@keras.saving.register_keras_serializable(package="kseg")
class SegFormer(SegmentationModel):
    """SegFormer: a Mix Transformer (MiT) encoder and an all-MLP decoder.

    The encoder has four stages (strides 4, 8, 16, 32), each an overlapping patch embedding
    (a strided 7×7 or 3×3 convolution with padding, and LayerNorm) followed by transformer
    blocks of efficient self-attention (keys and values from an ``sr``-strided convolution of
    the tokens: ratios 8, 4, 2, 1) and Mix-FFN (a depthwise 3×3 convolution between the two
    linear layers gives position information, so there is no positional encoding). The
    decoder projects each stage to ``decoder_dim`` channels (1×1), upsamples them bilinearly to
    stride 4, concatenates, fuses (1×1 conv-BN-ReLU) and classifies; the logits are upsampled ×4
    to the input (kseg's contract; the paper stops at stride 4).

    The default B0 has 3,719,027 trainable parameters with 19 classes (MiT-B0 3,319,392; the
    paper's 3.7M, 3.8M with ADE20K's 150 classes; ``count_params()`` adds 512 BN statistics). Every
    token-wise linear layer is a 1×1 ``Conv2D`` on the ``(H, W, C)`` map (the same weights as
    a ``Dense`` on tokens) and attention is built from ``Reshape``, ``Dot`` and ``Softmax``, so
    the model is Keras-3/tf_keras-twinnable and converts to TFLite with builtin ops, int8
    included (BATCH_MATMUL, SOFTMAX, GELU and LayerNorm's MEAN/SQUARED_DIFFERENCE/RSQRT all
    have int8 kernels). One caveat: Keras 3's LayerNormalization computes ``-mean · inv``, and
    post-training int8 conversion leaves that NEG (one value per token) in float between
    DEQUANTIZE and QUANTIZE; through QAT (the tf_keras twin's LayerNorm subtracts instead) the
    int8 model is integer throughout. Stochastic depth (drop path 0.1 in the paper) is left out: it needs a
    custom layer. Reshape needs a fixed input size.

    Args:
        num_classes: output channels (logits).
        input_shape: fixed ``(H, W, 3)``, H and W multiples of 32 (0–255 RGB in).
        variant: ``"b0"`` … ``"b5"`` (MiT size and decoder width).
        embed_dims: override the variant's four stage widths (each divisible by its heads).
        depths: override the variant's blocks per stage.
        num_heads: heads per stage (1, 2, 5, 8).
        decoder_dim: override the variant's decoder channels (256 for B0/B1, 768 above).
        dropout: before the classifier (0.1).

    Example:
        model = SegFormer(num_classes=11, input_shape=(288, 384, 3))

    Reference:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021.
    """

    def __init__(self, num_classes=19, input_shape=(512, 512, 3), variant="b0", embed_dims=None, depths=None,
                 num_heads=NUM_HEADS, decoder_dim=None, dropout=0.1, **kwargs):
        if variant not in VARIANTS:
            raise KsegError(f"SegFormer variant {variant!r} unknown; use one of {', '.join(VARIANTS)}")
        if None in tuple(input_shape)[:2]:
            raise KsegError(
                f"SegFormer needs a fixed input size (attention reshapes the map to tokens), got "
                f"{tuple(input_shape)}; pass input_shape=(H, W, 3) with H and W multiples of 32, e.g. (512, 512, 3)"
            )
        input_shape = check_input_shape(input_shape, 32, "SegFormer")
        spec = VARIANTS[variant]
        embed_dims = tuple(int(v) for v in (embed_dims or spec["embed_dims"]))
        depths = tuple(int(v) for v in (depths or spec["depths"]))
        num_heads = tuple(int(v) for v in num_heads)
        decoder_dim = int(decoder_dim or spec["decoder_dim"])
        if not len(embed_dims) == len(depths) == len(num_heads) == 4:
            raise KsegError("SegFormer takes four stages: embed_dims, depths and num_heads need four values each")
        bad = [(c, n) for c, n in zip(embed_dims, num_heads) if c % n]
        if bad:
            raise KsegError(f"SegFormer stage widths must divide by their heads; got (width, heads) {bad}")

        # === Layers ===
        # the encoder's layers are made while wiring; the decoder's here
        rescale = layers.Rescaling(1.0 / 255.0, name="rescale")
        projections = [layers.Conv2D(decoder_dim, 1, name=f"decoder_linear_c{i}") for i in range(1, 5)]
        concat = layers.Concatenate(name="decoder_concat")
        drop = layers.Dropout(dropout, name="decoder_dropout")
        classifier = layers.Conv2D(num_classes, 1, name="logits_small")
        logits = layers.Activation("linear", dtype="float32", name="logits_float32")

        # === Functional Model ===
        inputs = keras.Input(input_shape, name="image")
        pyramid = mix_transformer(rescale(inputs), embed_dims, depths, num_heads, SR_RATIOS)
        feats = []
        for i, (key, proj) in enumerate(zip(("P2", "P3", "P4", "P5"), projections)):
            feats.append(upsample(proj(pyramid[key]), 2 ** i, f"decoder_up_c{i + 1}"))
        x = concat(feats[::-1])  # c4, c3, c2, c1 as the authors' head
        x = conv_bn_relu(x, decoder_dim, 1, name="decoder_fuse")
        x = classifier(drop(x))
        outputs = logits(upsample(x, 4, "logits"))
        super().__init__(
            inputs, outputs, name=kwargs.pop("name", "segformer"),
            config=dict(num_classes=num_classes, input_shape=input_shape, variant=variant, embed_dims=embed_dims,
                        depths=depths, num_heads=num_heads, decoder_dim=decoder_dim, dropout=dropout),
            **kwargs,
        )

        # === Config === (input_shape is model.input_shape)
        self.num_classes = num_classes
        self.variant = variant
        self.embed_dims = embed_dims
        self.depths = depths
        self.num_heads = num_heads
        self.decoder_dim = decoder_dim
        self.dropout = dropout
