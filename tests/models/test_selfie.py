from pathlib import Path

import cv2
import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import build_model
from kseg.models.selfie import WEIGHTS, SelfieSegmenter, load_mediapipe_weights
from tests.models.model_tester import run_model_tests

PEER = Path(__file__).resolve().parents[3] / "shared" / "peers" / "selfie_segmentation.tflite"
PORTRAITS = Path(__file__).resolve().parents[3] / "shared" / "data" / "portraits" / "images"


def test_selfie_shared_checks(tmp_path):
    # shapes at two sizes, config and .keras round trips, the tf_keras twin, float32 and int8 TFLite
    # with builtin ops, one training step (there is no BatchNorm to update)
    run_model_tests(SelfieSegmenter, {"num_classes": 2}, input_shapes=((64, 64), (96, 128)), tmp_path=tmp_path)


def _person_probability(model, rgb):
    logits = np.asarray(model(rgb[None].astype("float32")))[0]
    return 0.5 * (1.0 + np.tanh((logits[..., 1] - logits[..., 0]) / 2))  # softmax of two


@pytest.mark.skipif(not PEER.is_file() or not PORTRAITS.is_dir(), reason="../shared/peers or portraits missing")
def test_pretrained_model_computes_what_mediapipes_file_computes():
    from ai_edge_litert.interpreter import Interpreter

    model = build_model("selfie", num_classes=2, input_shape=(256, 256, 3), pretrained=True)
    assert model.count_params() == 106_401 + 65  # MediaPipe's weights + the background channel of the head
    interp = Interpreter(model_path=str(PEER))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for f in sorted(PORTRAITS.glob("*.jpg"))[:4]:
        rgb = cv2.resize(cv2.imread(str(f))[:, :, ::-1], (256, 256), interpolation=cv2.INTER_AREA)
        interp.set_tensor(inp["index"], (rgb[None] / 255.0).astype(np.float32))
        interp.invoke()
        theirs = interp.get_tensor(out["index"])[0, :, :, 0]
        mine = _person_probability(model, rgb)
        assert np.abs(mine - theirs).max() < 2e-3, f.name
        assert 0.05 < (theirs > 0.5).mean() < 0.95  # a person is found: the comparison is not trivial


def test_shipped_weights_file_matches_the_architecture():
    data = np.load(WEIGHTS)
    assert all(a.dtype == np.float16 for a in (data[k] for k in data.files))  # the file's own precision
    assert sum(int(np.prod(data[k].shape)) for k in data.files) == 106_401
    model = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3))
    assert load_mediapipe_weights(model, WEIGHTS) == 55
    np.testing.assert_array_equal(model.get_layer("segment").get_weights()[0][:, :, 0], 0)  # background logit 0
    np.testing.assert_array_equal(model.get_layer("conv2d_7").get_weights()[0], data["conv2d_7/kernel"].astype("float32"))


def test_other_class_counts_keep_the_pretrained_body_and_get_a_new_head():
    model = SelfieSegmenter(num_classes=4, input_shape=(64, 64, 3), pretrained=True)
    assert model.output_shape == (None, 64, 64, 4)
    np.testing.assert_array_equal(model.get_layer("depthwise_conv2d_3").get_weights()[0],
                                  np.load(WEIGHTS)["depthwise_conv2d_3/kernel"].astype("float32"))
    assert np.abs(model.get_layer("segment").get_weights()[0]).max() > 0  # initialised, not MediaPipe's


def test_from_config_does_not_need_the_weights_file(tmp_path, monkeypatch):
    model = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True)
    path = tmp_path / "selfie.keras"
    model.save(path)
    import keras

    monkeypatch.setattr("kseg.models.selfie.WEIGHTS", tmp_path / "gone.npz")
    loaded = keras.saving.load_model(path)  # the .keras file brings the weights
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
    assert loaded.get_config()["pretrained"] is True


def test_bad_arguments_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(KsegError, match=r"multiples of 16"):
        SelfieSegmenter(input_shape=(100, 100, 3))
    with pytest.raises(KsegError, match="num_classes >= 1"):
        SelfieSegmenter(num_classes=0, input_shape=(64, 64, 3))
    with pytest.raises(KsegError, match="not found; reinstall kseg or give weights="):
        SelfieSegmenter(input_shape=(64, 64, 3), weights=tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", **{"dense/kernel": np.zeros((2, 2)), "dense/bias": np.zeros(2)})
    with pytest.raises(KsegError, match="layer dense is not in"):
        SelfieSegmenter(input_shape=(64, 64, 3), weights=tmp_path / "other.npz")


def test_logit_limit_bounds_inference_and_passes_training_through(tmp_path):
    from tests.models.model_tester import check_tflite, check_twin, images

    plain = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True)
    limited = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True, logit_limit=8)
    x = images((64, 64), n=2)
    z, y = np.asarray(plain(x)), np.asarray(limited(x))
    np.testing.assert_allclose(y, np.clip(z, -8, 8), atol=1e-4)
    assert np.abs(y).max() <= 8
    np.testing.assert_array_equal(np.sign(y[..., 1] - y[..., 0]), np.sign(z[..., 1] - z[..., 0]))  # no decision moves
    np.testing.assert_allclose(np.asarray(limited(x, training=True)), z, atol=1e-4)  # full gradient in training
    check_twin(limited, x)
    ops = check_tflite(limited, tmp_path)
    assert {"MINIMUM", "MAXIMUM"} <= set(ops["int8"]), ops["int8"]


def test_single_logit_gives_the_same_person_probability_with_mediapipes_head():
    from kseg.models.selfie import single_logit

    model = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True)
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("segment"), model.get_layer("conv2d_40")):  # as after training: channel 0 moved
        layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype("float32") for w in layer.get_weights()])
    one = single_logit(model)
    assert one.output_shape == (None, 64, 64, 1) and one.count_params() == model.count_params() - 65 == 106_401  # MediaPipe's own count
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    z = np.asarray(one(x))[..., 0]
    want = np.stack([_person_probability(model, xi) for xi in x])
    np.testing.assert_allclose(0.5 * (1 + np.tanh(z / 2)), want, atol=1e-5)
    pretrained_one = SelfieSegmenter(num_classes=1, input_shape=(64, 64, 3), pretrained=True)
    np.testing.assert_array_equal(pretrained_one.get_layer("segment").get_weights()[0],
                                  np.load(WEIGHTS)["segment/kernel"].astype("float32"))
    with pytest.raises(KsegError, match="single_logit takes a 2-class SelfieSegmenter"):
        single_logit(pretrained_one)


def _xnnpack_partitions(path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    nodes = interp._interpreter
    return [nodes.NodeName(k) for k in range(nodes.NumNodes())].count("DELEGATE")


def test_split_hard_swish_is_the_same_function_and_int8_runs_in_one_xnnpack_partition(tmp_path):
    from kseg.export import to_tflite
    from kseg.models.selfie import single_logit

    fused = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True)
    split = single_logit(fused, hard_swish="split", logit_limit=8)
    assert split.hard_swish == "split" and not any(l.name == "stem_hswish" and type(l).__name__ == "Activation"
                                                    for l in split.layers)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    z = np.asarray(single_logit(fused, logit_limit=8)(x))
    np.testing.assert_allclose(np.asarray(split(x)), z, atol=1e-4)
    calib = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    to_tflite(split, tmp_path / "split.tflite", quantization="int8", representative_data=calib)
    assert _xnnpack_partitions(tmp_path / "split.tflite") == 1  # every op delegated (HARD_SWISH int8 is not)


@pytest.mark.skipif(not PORTRAITS.is_dir(), reason="../shared/data/portraits missing")
def test_shipped_portrait_selfie_finds_people_on_held_out_portraits():
    from kseg.data.readers import open_masks
    from kseg.runtime import Segmenter

    path = Path(__file__).resolve().parents[2] / "exports" / "portrait-selfie.tflite"
    seg = Segmenter(path, num_threads=2)
    assert seg.class_names == ("background", "person") and seg.input_size == (256, 256)
    held_out = open_masks(PORTRAITS.parent, class_names=("background", "person"), binary=True).split(0.1, 0)[1]
    ious = []
    for i in range(0, len(held_out), 13):  # 11 of the 132 images the model never trained on
        image, mask = held_out.load(i)
        pred = seg.segment(image).category_mask == 1
        truth = mask == 1
        ious.append((pred & truth).sum() / max((pred | truth).sum(), 1))
    assert np.mean(ious) > 0.92, ious  # its card: 0.946 on all 132


def test_folded_hard_swish_is_the_same_function_with_fewer_int8_ops(tmp_path):
    from kseg.export import to_tflite
    from kseg.models.saving import load_keras_file
    from kseg.models.selfie import reform

    fused = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True)
    folded = SelfieSegmenter(num_classes=2, input_shape=(64, 64, 3), pretrained=True, hard_swish="folded")
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    want = np.asarray(fused(x))
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(folded(x)), want, atol=1e-5 * scale)
    assert "rescale" not in [l.name for l in folded.layers]  # the stem's kernel carries the 1/255
    # the stored weights differ (the convolutions before each hard-swish are divided by 6) ...
    stem = folded.get_layer("conv2d").get_weights()[0]
    np.testing.assert_allclose(stem, fused.get_layer("conv2d").get_weights()[0] / 255 / 6, rtol=1e-6)
    # ... and reform converts both ways, through a .keras file too
    moved = fused.get_layer("conv2d_1")
    moved.set_weights([w * 1.1 for w in moved.get_weights()])  # as after training
    want = np.asarray(fused(x))
    there = reform(fused, hard_swish="folded", logit_limit=8)
    there.save(tmp_path / "folded.keras")
    there = load_keras_file(tmp_path / "folded.keras")
    assert there.hard_swish == "folded" and there.logit_limit == 8
    np.testing.assert_allclose(np.asarray(there(x)), np.clip(want, -8, 8), atol=1e-4)  # LogitLimit(8)
    back = reform(there, hard_swish="fused", logit_limit=None)
    np.testing.assert_allclose(np.asarray(back(x)), want, atol=1e-5 * scale)
    for a, b in zip(back.get_weights(), fused.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(KsegError, match="reform turns 2 classes into 1"):
        reform(SelfieSegmenter(num_classes=1, input_shape=(64, 64, 3)), num_classes=2)
    # int8 through quantization-aware training (how the shipped files are made): kseg QAT turns each
    # Rescaling into a 1x1 depthwise convolution, so the folded form runs 12 fewer of them
    from ai_edge_litert.interpreter import Interpreter
    from kseg.quantize.qat import quantize_aware

    calib = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    depthwise = {}
    for form in ("split", "folded"):
        path = tmp_path / f"{form}.tflite"
        model = reform(fused, hard_swish=form, logit_limit=8)
        to_tflite(quantize_aware(model, calibration_data=calib), path, quantization="qat")
        assert _xnnpack_partitions(path) == 1
        interp = Interpreter(model_path=str(path))
        kinds = [o["op_name"] for o in interp._get_ops_details()]
        depthwise[form] = kinds.count("DEPTHWISE_CONV_2D")
        # LogitLimit's range is fixed at ±8 in QAT too: the uint8 output's step is 16/255 of a logit
        # (a learned range followed the unbounded training logits: a step of 7, no soft edge)
        scale, _ = interp.get_output_details()[0]["quantization"]
        assert scale == pytest.approx(16 / 255, rel=1e-3)
        head = next(o for o in interp._get_ops_details() if o["op_name"] == "TRANSPOSE_CONV")
        scale, _ = interp.get_tensor_details()[head["outputs"][0]]["quantization"]
        assert scale == pytest.approx(16 / 255, rel=1e-3)  # the head itself, not just the file's output
    assert depthwise == {"split": 11 + 23, "folded": 11 + 11}, depthwise  # the network's 11, then the Rescalings


def test_float_weights_from_qat_carry_the_fine_tuned_weights_into_the_folded_form():
    from kseg.models.selfie import reform
    from kseg.quantize.qat import float_weights_from_qat, quantize_aware

    split = SelfieSegmenter(num_classes=2, input_shape=(32, 32, 3), pretrained=True, hard_swish="split", logit_limit=8)
    qat = quantize_aware(split)
    wrapper = next(l for l in qat.layers if getattr(getattr(l, "layer", None), "name", None) == "conv2d_1")
    kernel = next(v for v in wrapper.weights if v.name.endswith("/kernel:0"))
    kernel.assign(kernel * 1.1)  # as after a QAT step
    fresh = SelfieSegmenter(num_classes=2, input_shape=(32, 32, 3), hard_swish="split", logit_limit=8)
    n = float_weights_from_qat(qat, fresh)
    assert n == sum(1 for l in split.layers if l.get_weights() and type(l).__name__ != "Rescaling")
    np.testing.assert_allclose(fresh.get_layer("conv2d_1").get_weights()[0],
                               split.get_layer("conv2d_1").get_weights()[0] * 1.1, rtol=1e-6)
    np.testing.assert_array_equal(fresh.get_layer("segment").get_weights()[1], split.get_layer("segment").get_weights()[1])
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(reform(fresh, hard_swish="folded")(x)), np.asarray(fresh(x)), atol=1e-4)
    with pytest.raises(KsegError, match="not the model this QAT model was made from"):
        float_weights_from_qat(qat, SelfieSegmenter(num_classes=1, input_shape=(32, 32, 3), hard_swish="split"))
