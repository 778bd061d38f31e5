"""Mask R-CNN's RoI heads: the box head (class scores, class-specific deltas) and the mask head.

Reference:
    He et al., "Mask R-CNN", ICCV 2017 (Fig. 4, right: the FPN heads).
"""

from __future__ import annotations

import keras
from keras import layers


def box_head(num_classes, channels, pool_size=7, hidden=1024, name="box_head"):
    """Two fully connected layers on ``pool_size²×channels`` RoI features, then class logits
    ``(K, num_classes)`` (0 = background) and class-specific deltas ``(K, 4·num_classes)``.

    Args:
        num_classes: classes including background.
        channels: channels of the pooled features.
        pool_size: RoIAlign output size (7).
        hidden: width of the two fully connected layers (1024 in the paper).
        name: model name.

    Returns:
        A functional ``keras.Model`` RoI features → ``(logits, deltas)``.
    """
    x_in = keras.Input((pool_size, pool_size, channels), name=f"{name}_rois")
    x = layers.Flatten(name=f"{name}_flatten")(x_in)
    x = layers.Dense(hidden, activation="relu", name=f"{name}_fc1")(x)
    x = layers.Dense(hidden, activation="relu", name=f"{name}_fc2")(x)
    logits = layers.Dense(num_classes, name=f"{name}_class_logits",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    deltas = layers.Dense(4 * num_classes, name=f"{name}_deltas",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))(x)
    return keras.Model(x_in, [logits, deltas], name=name)


def mask_head(num_classes, channels, pool_size=14, conv_channels=256, num_convs=4, name="mask_head"):
    """``num_convs`` 3×3 convolutions, a 2×2 stride-2 transposed convolution and per-class
    1×1 logits: ``14×14`` RoI features → ``28×28×num_classes`` mask logits.

    Args:
        num_classes: classes including background (the mask of the box's class is used).
        channels: channels of the pooled features.
        pool_size: RoIAlign output size (14).
        conv_channels: channels of the convolutions (256 in the paper).
        num_convs: number of 3×3 convolutions (4).
        name: model name.

    Returns:
        A functional ``keras.Model``.
    """
    x_in = keras.Input((pool_size, pool_size, channels), name=f"{name}_rois")
    x = x_in
    for i in range(num_convs):
        x = layers.Conv2D(conv_channels, 3, padding="same", activation="relu", name=f"{name}_conv{i + 1}")(x)
    x = layers.Conv2DTranspose(conv_channels, 2, strides=2, activation="relu", name=f"{name}_deconv")(x)
    logits = layers.Conv2D(num_classes, 1, name=f"{name}_logits")(x)
    return keras.Model(x_in, logits, name=name)
