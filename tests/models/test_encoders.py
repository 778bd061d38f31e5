"""Encoders: pyramid keys, strides and channels, flat graphs, dilation, pretrained weights."""

import keras
import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models.encoders import ENCODERS, build_encoder, encoder_channels

STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_pyramid_shapes_and_flat_graph(name):
    for h, w in ((64, 64), (96, 128)):
        inputs = keras.Input((h, w, 3))
        pyr = build_encoder(name, inputs)
        assert sorted(pyr) == ["P1", "P2", "P3", "P4", "P5"]
        for k, t in pyr.items():
            assert tuple(t.shape[1:3]) == (h // STRIDES[k], w // STRIDES[k]), (name, k)
            assert t.shape[-1] == encoder_channels(name)[k], (name, k)
        model = keras.Model(inputs, list(pyr.values()))
        assert not any(isinstance(l, keras.Model) for l in model.layers), "encoder must be flat"


@pytest.mark.parametrize("stride", [16, 8])
def test_lite0_output_stride_uses_dilation(stride):
    inputs = keras.Input((128, 128, 3))
    pyr = build_encoder("efficientnet_lite0", inputs, output_stride=stride)
    for k, s in STRIDES.items():
        assert pyr[k].shape[1] == 128 // min(s, stride), k
    assert pyr["P4"].shape[-1] == 112 and pyr["P5"].shape[-1] == 320
    model = keras.Model(inputs, pyr["P5"])
    rates = {l.dilation_rate[0] for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)}
    assert max(rates) == 32 // stride


def test_unsupported_choices_are_clear():
    inputs = keras.Input((64, 64, 3))
    with pytest.raises(KsegError, match="never downloads"):
        build_encoder("resnet50", inputs, pretrained=True)
    with pytest.raises(KsegError, match="unknown encoder"):
        build_encoder("resnet18", inputs)
    with pytest.raises(KsegError, match="output_stride must be"):
        build_encoder("efficientnet_lite0", inputs, output_stride=4)


def test_pretrained_lite0_loads_the_shipped_weights():
    from kseg.models.encoders import efficientnet_lite0_classifier

    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, build_encoder("efficientnet_lite0", inputs, pretrained=True)["P5"])
    clf = efficientnet_lite0_classifier()
    for name in ("stem_conv", "block7_dw_conv", "block15_project_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), clf.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # not the random initialisation: BN moving variances were learnt
    assert not np.allclose(model.get_layer("stem_bn").get_weights()[3], 1.0)


def test_pretrained_classifier_on_real_pets(shared_data):
    import cv2

    from kseg.models.encoders import efficientnet_lite0_classifier

    clf = efficientnet_lite0_classifier()
    imgs = []
    for name in ("Abyssinian_1.jpg", "Bengal_1.jpg", "american_bulldog_10.jpg"):
        rgb = cv2.cvtColor(cv2.imread(str(shared_data / "pets" / "images" / name)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        s = 256 / min(h, w)
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        y, x = (rgb.shape[0] - 224) // 2, (rgb.shape[1] - 224) // 2
        imgs.append(rgb[y:y + 224, x:x + 224])
    top = np.asarray(clf.predict_on_batch(np.stack(imgs).astype("float32"))).argmax(-1)
    assert 281 <= top[0] <= 285 and 281 <= top[1] <= 285, top  # domestic cats
    assert 151 <= top[2] <= 268, top  # dogs
