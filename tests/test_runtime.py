"""Runtime: Segmenter pre/post-processing, quantized I/O, model cards, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.errors import KsegError
from kseg.runtime import Segmenter, check_tflite_file, tflite_ops

SIZE = 16


def colour_model():
    """Logits are a fixed linear function of the pixel: class 0 ← red, 1 ← green, 2 ← blue.

    logit_c = (rgb_c - 127.5) / 127.5 * 4, so the argmax is the strongest channel and the
    probabilities are a softmax we can compute by hand.
    """
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    conv = keras.layers.Conv2D(3, 1, name="logits")
    x = conv(x)
    model = keras.Model(inp, x, name="colour")
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) * 4.0, np.zeros(3, np.float32)])
    return model


def expected_probs(rgb):
    logits = (rgb.astype(np.float64) - 127.5) / 127.5 * 4.0
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def calibration():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from kseg.export import to_tflite

    d = tmp_path_factory.mktemp("rt")
    m = colour_model()
    card = {"class_names": ["red", "green", "blue"], "colors": [[255, 0, 0], [0, 255, 0], [0, 0, 255]]}
    return {
        "model": m,
        "float32": to_tflite(m, d / "colour_f32.tflite", "float32", card=card),
        "uint8": to_tflite(m, d / "colour_u8.tflite", "int8", representative_data=calibration(), card=card),
        "int8io": to_tflite(m, d / "colour_i8.tflite", "int8", representative_data=calibration(),
                            io_dtype="int8", card=card),
        "dir": d,
    }


def blocks_image(h=40, w=60):
    """Left third red, middle green, right blue (not the model's size: tests resizing)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3] = (200, 30, 30)
    img[:, w // 3 : 2 * w // 3] = (30, 200, 30)
    img[:, 2 * w // 3 :] = (30, 30, 200)
    return img


@pytest.mark.parametrize("kind", ["float32", "uint8", "int8io"])
def test_segment_gives_masks_at_frame_resolution(exported, kind):
    seg = Segmenter(exported[kind], num_threads=1)
    assert seg.class_names == ("red", "green", "blue") and seg.input_size == (SIZE, SIZE)
    img = blocks_image()
    r = seg.segment(img)
    assert r.category_mask.shape == (40, 60) and r.category_mask.dtype == np.uint8
    assert r.confidence.shape == (40, 60, 3) and r.confidence.dtype == np.float32
    np.testing.assert_allclose(r.confidence.sum(-1), 1.0, atol=1e-5)
    # away from the two colour edges (blurred by resize) the class is the block's colour
    assert (r.category_mask[:, :15] == 0).all()
    assert (r.category_mask[:, 25:35] == 1).all()
    assert (r.category_mask[:, 45:] == 2).all()


@pytest.mark.parametrize("kind, tol", [("float32", 1e-5), ("uint8", 0.03), ("int8io", 0.03)])
def test_probabilities_match_hand_computed_softmax(exported, kind, tol):
    # a flat image at the model's size: no resize, so the expected value is exact
    seg = Segmenter(exported[kind])
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[...] = (180, 90, 20)
    got = seg.segment(rgb).confidence[0, 0]
    np.testing.assert_allclose(got, expected_probs(rgb[0, 0]), atol=tol)


def test_uint8_and_int8_io_read_the_quantization(exported):
    u8 = Segmenter(exported["uint8"])._backend
    i8 = Segmenter(exported["int8io"])._backend
    assert u8.input_dtype == np.uint8 and i8.input_dtype == np.int8
    assert u8.inp["quantization"] == pytest.approx((1.0, 0), abs=1e-3)
    assert i8.inp["quantization"] == pytest.approx((1.0, -128), abs=1e-3)
    img = blocks_image(SIZE, SIZE)
    np.testing.assert_allclose(u8.logits(img), i8.logits(img), atol=0.05)


def test_keras_model_file_and_classes_json(exported, tmp_path):
    path = tmp_path / "best.keras"
    exported["model"].save(path)
    (tmp_path / "classes.json").write_text(json.dumps({"class_names": ["r", "g", "b"]}))
    seg = Segmenter(path)
    assert seg.class_names == ("r", "g", "b")
    ref = Segmenter(exported["float32"]).segment(blocks_image()).confidence
    np.testing.assert_allclose(seg.segment(blocks_image()).confidence, ref, atol=1e-5)


def test_person_index_from_names(tmp_path):
    from kseg.export import to_tflite

    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, keras.layers.Conv2D(2, 1)(inp))
    path = to_tflite(m, tmp_path / "p.tflite", "float32", card={"class_names": ["background", "person"]})
    assert Segmenter(path).person_index == 1


def test_tflite_ops_lists_the_graph(exported):
    assert tflite_ops(exported["float32"]).count("CONV_2D") == 1
    assert "CONV_2D" in tflite_ops(exported["uint8"])


# ----------------------------------------------------------------------------------------
# bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(KsegError, match="not found"):
        Segmenter(tmp_path / "nope.tflite")


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(KsegError, match="not a TFLite model"):
        Segmenter(bad)
    tiny = tmp_path / "tiny.tflite"
    tiny.write_bytes(b"TFL")
    with pytest.raises(KsegError, match="not a TFLite model"):
        check_tflite_file(tiny)


def test_truncated_tflite(exported, tmp_path):
    data = exported["uint8"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(KsegError, match="cut.tflite"):
        Segmenter(cut)


def test_card_that_does_not_match(exported, tmp_path):
    import shutil

    path = tmp_path / "m.tflite"
    shutil.copy(exported["float32"], path)
    card = json.loads(exported["float32"].with_suffix(".json").read_text())
    card["class_names"] = ["a", "b"]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(KsegError, match="lists 2 classes but the model outputs 3"):
        Segmenter(path)
    card = json.loads(exported["float32"].with_suffix(".json").read_text())
    card["input"]["shape"] = [1, 32, 32, 3]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(KsegError, match="says input 32×32 but the model takes 16×16"):
        Segmenter(path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(KsegError, match="not valid JSON"):
        Segmenter(path)


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8, 3), np.float32), "dtype is float32"),
    (np.zeros((8, 8, 4), np.uint8), r"shape is \(8, 8, 4\)"),
    (np.zeros((8, 8), np.uint8), r"shape is \(8, 8\)"),
    ([[0, 0, 0]], "got list"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
])
def test_bad_images(exported, image, message):
    seg = Segmenter(exported["uint8"])
    with pytest.raises(KsegError, match=message):
        seg.segment(image)


def test_runtime_does_not_import_keras():
    import os
    import subprocess
    import sys

    code = "import sys, kseg.runtime; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.stdout.split() == ["False", "False"]


SHIPPED_INSTANCES = Path(__file__).resolve().parents[1] / "exports" / "person-instances.tflite"


@pytest.mark.skipif(not SHIPPED_INSTANCES.is_file(), reason="exports/person-instances.tflite not shipped")
def test_instance_model_is_named_as_such():
    with pytest.raises(KsegError, match=r"person-instances.tflite is an instance-segmentation model"):
        Segmenter(SHIPPED_INSTANCES)


# --- test-time flip -------------------------------------------------------------------------------


def lopsided_model(channels=3):
    """Not mirror-symmetric: each pixel's logits look at its right-hand neighbours (a 1×3 kernel
    with unequal taps), so a mirrored image does not give a mirrored map."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    conv = keras.layers.Conv2D(channels, (1, 3), padding="same", name="logits")
    model = keras.Model(inp, conv(x), name="lopsided")
    rng = np.random.default_rng(3)
    conv.set_weights([rng.normal(0, 2, (1, 3, 3, channels)).astype(np.float32), np.zeros(channels, np.float32)])
    return model


def _softmax_np(y):
    e = np.exp(y - y.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_flip_averages_the_frame_and_its_mirror_by_hand():
    m = lopsided_model()
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    plain = _softmax_np(np.asarray(m(rgb[None].astype(np.float32)))[0])
    mirrored = _softmax_np(np.asarray(m(rgb[None, :, ::-1].astype(np.float32)))[0])[:, ::-1]
    want = 0.5 * (plain + mirrored)
    assert np.abs(plain - want).max() > 0.05  # the model is lopsided enough for the test to mean something
    got = Segmenter(m, card={"class_names": ["a", "b", "c"]}, flip=True).segment(rgb).confidence
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert Segmenter(m, flip=False).segment(rgb).confidence == pytest.approx(plain, abs=1e-5)
    # with left/right classes: the mirrored map's channels 0 and 2 trade places before the mean
    swapped = Segmenter(m, card={"flip_pairs": [[0, 2]]}, flip=True).segment(rgb).confidence
    np.testing.assert_allclose(swapped, 0.5 * (plain + mirrored[..., [2, 1, 0]]), atol=1e-5)


@pytest.mark.parametrize("pairs", [None, [[0, 2]]])
def test_flip_makes_a_tflite_model_mirror_equivariant(tmp_path, pairs):
    from kseg.export import to_tflite

    card = {"class_names": ["a", "b", "c"], **({"flip_pairs": pairs} if pairs else {})}
    path = to_tflite(lopsided_model(), tmp_path / "lop.tflite", "float32", card=card)
    img = np.random.default_rng(1).integers(0, 256, (30, 44, 3)).astype(np.uint8)
    seg = Segmenter(path, num_threads=1, flip=True)
    a = seg.segment(img).confidence
    b = seg.segment(np.ascontiguousarray(img[:, ::-1])).confidence[:, ::-1]
    if pairs:
        b = b[..., [2, 1, 0]]
    np.testing.assert_allclose(a, b, atol=1e-4)
    # logits() with flip: log-probabilities whose softmax is the averaged map (at the model's size: no resize)
    small = img[:SIZE, :SIZE].copy()
    np.testing.assert_allclose(_softmax_np(seg.logits(small)), seg.segment(small).confidence, atol=1e-5)
    np.testing.assert_allclose(np.exp(seg.logits(small)).sum(-1), 1.0, atol=1e-4)
    plain = Segmenter(path, num_threads=1)
    assert np.abs(plain.segment(img).confidence - a).max() > 0.01


def test_flip_of_a_sigmoid_model_averages_probabilities():
    m = lopsided_model(channels=1)
    rgb = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    sig = lambda y: 1.0 / (1.0 + np.exp(-y))
    p = sig(np.asarray(m(rgb[None].astype(np.float32)))[0])
    q = sig(np.asarray(m(rgb[None, :, ::-1].astype(np.float32)))[0])[:, ::-1]
    seg = Segmenter(m, flip=True)
    np.testing.assert_allclose(sig(seg.logits(rgb)), 0.5 * (p + q), atol=1e-5)
    np.testing.assert_allclose(seg.segment(rgb).confidence[..., 1:], 0.5 * (p + q), atol=1e-5)


@pytest.mark.parametrize("pairs", [[[0, 3]], [[1, 1]], [[0, 1], [1, 2]], [[0]], [["a", "b"]]])
def test_bad_flip_pairs_are_one_line(exported, tmp_path, pairs):
    import shutil

    path = tmp_path / "m.tflite"
    shutil.copy(exported["float32"], path)
    card = json.loads(Path(str(exported["float32"])[: -len(".tflite")] + ".json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, "flip_pairs": pairs}))
    with pytest.raises(KsegError, match=r"m\.json: flip_pairs: .* \[\[LEFT, RIGHT\]"):
        Segmenter(path)


def test_evaluate_flips_a_keras_model_as_the_segmenter_does(tmp_path):
    from kseg.evaluate import evaluate

    m = lopsided_model()
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8) for _ in range(3)]
    seg = Segmenter(m, card={"class_names": ["a", "b", "c"], "flip_pairs": [[0, 2]]}, flip=True)
    masks = [seg.segment(im).category_mask for im in images]

    class DS:
        num_classes, class_names, name, colors = 3, ("a", "b", "c"), "mem", None
        samples = [type("S", (), {"image": f"im{i}.png"})() for i in range(3)]

        def __len__(self):
            return 3

        def load(self, i):
            return images[i], masks[i]

    flipped = evaluate(m, DS(), batch_size=2, flip=True, flip_pairs=[[0, 2]], saliency=False)
    assert flipped.to_dict()["miou"] == pytest.approx(1.0)  # the Keras path predicts what the Segmenter did
    plain = evaluate(m, DS(), batch_size=2, saliency=False)
    assert plain.to_dict()["miou"] < 0.99
    with pytest.raises(KsegError, match="open the Segmenter with flip=True"):
        evaluate(Segmenter(m), DS(), flip=True)


def test_cli_refuses_flip_for_an_instance_model(tmp_path, capsys):
    from kseg.cli import main

    exports = Path(__file__).resolve().parents[1] / "exports" / "person-instances.tflite"
    if not exports.is_file():
        pytest.skip("exports/person-instances.tflite absent")
    rc = main(["evaluate", str(exports), str(tmp_path), "--flip"])
    assert rc != 0
    assert "--flip is for semantic models" in capsys.readouterr().err


def test_pick_fastest_takes_the_lowest_or_the_first_close_to_it():
    from kseg.runtime.segmenter import pick_fastest

    assert pick_fastest([10.0, 9.8, 5.0]) == 2
    assert pick_fastest([6.0, 5.0]) == 1
    assert pick_fastest([5.2, 5.0]) == 0  # within 5%: the earlier (preferred) file
    assert pick_fastest([5.2, 5.0], tolerance=0.0) == 1
    assert pick_fastest([7.0]) == 0


def test_fastest_times_each_export_and_keeps_the_one_it_measured_fastest(exported, monkeypatch):
    from kseg.runtime import segmenter

    paths = [exported["uint8"], exported["float32"]]
    seg = Segmenter.fastest(paths, num_threads=1, rounds=2, invokes=2)
    assert list(seg.timings_ms) == paths and all(t > 0 for t in seg.timings_ms.values())
    assert seg.path == paths[segmenter.pick_fastest(list(seg.timings_ms.values()))]
    mask = seg.segment(blocks_image()).category_mask  # the kept one runs: red | green | blue
    assert mask[:, 5].tolist() == [0] * 40 and mask[:, 30].tolist() == [1] * 40 and mask[:, 55].tolist() == [2] * 40
    # the choice follows the clock: make every invoke of the float file 2 ms longer
    real = segmenter._TFLiteBackend.logits

    def logits(self, x):
        if self.input_dtype == np.float32:
            import time

            time.sleep(0.002)
        return real(self, x)

    monkeypatch.setattr(segmenter._TFLiteBackend, "logits", logits)
    seg = Segmenter.fastest([exported["float32"], exported["uint8"]], rounds=1, invokes=2)
    assert seg.path == exported["uint8"] and seg.timings_ms[exported["float32"]] > 2.0


def test_fastest_refuses_files_of_different_models(exported, tmp_path):
    import shutil

    other = tmp_path / "other.tflite"
    shutil.copy(exported["float32"], other)
    (tmp_path / "other.json").write_text(json.dumps({"class_names": ["sky", "road", "car"]}))
    with pytest.raises(KsegError, match=r"other.tflite has classes \['sky', 'road', 'car'\] but .*exports of one model"):
        Segmenter.fastest([exported["float32"], other], rounds=1, invokes=1)
    with pytest.raises(KsegError, match="at least one model file"):
        Segmenter.fastest([])


def test_kseg_predict_takes_an_exported_tflite_and_colours_from_its_card(exported, tmp_path):
    import cv2

    from kseg.cli import main

    img = tmp_path / "blocks.png"
    cv2.imwrite(str(img), cv2.cvtColor(blocks_image(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "pred"
    assert main(["predict", str(exported["uint8"]), str(img), "--out", str(out), "--threads", "1"]) == 0
    mask = cv2.imread(str(out / "blocks_mask.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(mask, Segmenter(exported["uint8"]).segment(blocks_image()).category_mask)
    assert mask[:, 5].tolist() == [0] * 40 and mask[:, 55].tolist() == [2] * 40
    overlay = cv2.cvtColor(cv2.imread(str(out / "blocks_overlay.png")), cv2.COLOR_BGR2RGB)
    # the card's blue (0, 0, 255) blended half into the blue block (30, 30, 200)
    np.testing.assert_allclose(overlay[20, 55], [15, 15, 227], atol=1)
    assert main(["predict", str(exported["uint8"]), str(img), "--out", str(out), "--size", "32", "32"]) == 2
