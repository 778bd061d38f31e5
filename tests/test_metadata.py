"""kseg.metadata: TFLite Model Metadata written from the model card, read back, and harmless to LiteRT."""

from __future__ import annotations

import copy
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.metadata import embed_metadata, read_metadata

EXPORTS = Path(__file__).resolve().parent.parent / "exports"


def _load(name):
    # the shipped files carry metadata already: start from the bare converter output
    from kseg.metadata import strip_metadata

    bare = strip_metadata((EXPORTS / f"{name}.tflite").read_bytes())
    return bare, json.loads((EXPORTS / f"{name}.json").read_text())


def _model_metadata_entries(buf):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(buf, 0)
    return [(model.Metadata(i).Name().decode(), model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes())
            for i in range(model.MetadataLength())]


def _run(buf, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=buf, num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(o["index"]).copy() for o in it.get_output_details()]


def test_semantic_round_trip():
    raw, card = _load("portrait")
    assert read_metadata(raw) is None
    md = read_metadata(embed_metadata(raw, card))
    assert md["name"] == "portrait"
    assert md["version"] == "kseg 0.1.0"
    assert md["author"] == "kseg"
    assert md["license"] == "training data: " + card["data_licence"]
    h, w = card["input"]["shape"][1:3]
    assert f"semantic segmentation into 2 classes (background, person) at {h}x{w}" in md["description"]
    # custom metadata (SEGMENTER_METADATA) needs parser 1.5.0 (schema history)
    assert md["min_parser_version"] == "1.5.0"
    (inp,) = md["inputs"]
    assert (inp["content"], inp["color_space"]) == ("ImageProperties", "RGB")
    assert (inp["mean"], inp["std"], inp["min"], inp["max"]) == ([0.0], [1.0], [0.0], [255.0])
    (out,) = md["outputs"]
    assert (out["content"], out["color_space"], out["range"]) == ("ImageProperties", "GRAYSCALE", [1, 2])
    assert out["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS",
                                        "description": "Labels for categories that the model can recognize."}]
    assert md["activation"] == "SOFTMAX"  # the outputs are logits
    assert md["custom_metadata"] == ["SEGMENTER_METADATA"]
    assert md["labels"] == ["background", "person"]


def test_probabilities_output_gets_no_activation():
    raw, card = _load("portrait-fast")
    card = copy.deepcopy(card)
    card["output"]["meaning"] = "probabilities"
    assert read_metadata(embed_metadata(raw, card))["activation"] == "NONE"
    card["output"]["meaning"] = "scores"
    with pytest.raises(KsegError, match="output.meaning is 'scores'"):
        embed_metadata(raw, card)


def test_labels_file_is_a_stored_zip_after_the_model():
    raw, card = _load("parsing")
    packed = embed_metadata(raw, card)
    assert packed[4:8] == b"TFL3"
    with zipfile.ZipFile(io.BytesIO(packed)) as zf:
        (info,) = zf.infolist()
        assert info.filename == "labels.txt" and info.compress_type == zipfile.ZIP_STORED
        assert zf.read("labels.txt") == b"background\nskin\nhair\nupper_clothes\ndress\nlower_clothes\nfootwear\naccessories"
    # the archive follows the flatbuffer: its first local header is past the model's root table
    start = packed.index(b"PK\x03\x04")
    assert start > int.from_bytes(packed[:4], "little") and start >= len(raw)


def test_metadata_buffer_named_and_replaced_not_duplicated():
    raw, card = _load("portrait")
    once = embed_metadata(raw, card)
    twice = embed_metadata(once, card)
    assert twice == once
    entries = _model_metadata_entries(twice)
    names = [n for n, _ in entries]
    # the converter's own entries stay; TFLITE_METADATA is added once
    assert names == [n for n, _ in _model_metadata_entries(raw)] + ["TFLITE_METADATA"]
    data = dict(entries)["TFLITE_METADATA"]
    assert data[4:8] == b"M001"


@pytest.mark.parametrize("name", ["portrait-fast", "person-instances"])
def test_model_runs_identically_in_litert(name):
    from ai_edge_litert.interpreter import Interpreter

    raw, card = _load(name)
    packed = embed_metadata(raw, card)
    it = Interpreter(model_content=raw)
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, size=d["shape"]).astype(d["dtype"])
    before, after = _run(raw, x), _run(packed, x)
    assert len(before) == len(after) == (5 if name == "person-instances" else 1)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_segmenter_with_and_without_metadata(tmp_path):
    import kseg

    raw, card = _load("portrait-fast")
    (tmp_path / "with_card.tflite").write_bytes(embed_metadata(raw, card))
    shutil.copy(EXPORTS / "portrait-fast.json", tmp_path / "with_card.json")
    (tmp_path / "bare.tflite").write_bytes(embed_metadata(raw, card))
    yy, xx = np.mgrid[0:120, 0:90]
    rgb = np.stack([yy * 2, xx * 2, (yy + xx) % 256], -1).astype(np.uint8)
    ref = kseg.Segmenter(EXPORTS / "portrait-fast.tflite").segment(rgb)
    for path in ("with_card.tflite", "bare.tflite"):
        got = kseg.Segmenter(tmp_path / path).segment(rgb)
        assert got.category_mask.shape == (120, 90)
        assert np.array_equal(got.category_mask, ref.category_mask)
        assert np.allclose(got.confidence, ref.confidence)


def test_instance_model_outputs_described():
    raw, card = _load("person-instances")
    md = read_metadata(embed_metadata(raw, card))
    # subgraph output order, matched to the card through the signature's output names
    assert [t["name"] for t in md["outputs"]] == ["num_detections", "boxes", "classes", "scores", "masks"]
    by_name = {t["name"]: t for t in md["outputs"]}
    assert by_name["boxes"]["content"] == "BoundingBoxProperties"
    assert (by_name["boxes"]["box_type"], by_name["boxes"]["box_coordinates"]) == ("BOUNDARIES", "PIXEL")
    assert by_name["boxes"]["box_index"] == [0, 1, 2, 3]
    assert by_name["masks"]["description"] == card["outputs"]["masks"]["meaning"]
    assert by_name["classes"]["associated_files"][0]["type"] == "TENSOR_VALUE_LABELS"
    assert md["labels"] == ["background", "person"]
    assert md["activation"] is None and md["min_parser_version"] == "1.0.0"
    (inp,) = md["inputs"]
    # uint8 input fed RGB 0..255: identity normalisation, tensor range 0..255
    assert (inp["mean"], inp["std"], inp["min"], inp["max"]) == ([0.0], [1.0], [0.0], [255.0])
    assert "letterbox" in inp["description"]


@pytest.fixture(scope="module")
def float_input_model(tmp_path_factory):
    """A float32-input semantic model (every shipped export now takes uint8) and its card."""
    import keras

    from kseg.export import to_tflite

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 1)])
    path = to_tflite(model, tmp_path_factory.mktemp("float_in") / "tiny.tflite", quantization="float32",
                     card={"class_names": ["background", "person"]})
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())


@pytest.mark.parametrize("rng, mean, std, lo, hi", [([0, 1], 0.0, 255.0, 0.0, 1.0), ([-1, 1], 127.5, 127.5, -1.0, 1.0)])
def test_float_input_normalisation_from_card_range(float_input_model, rng, mean, std, lo, hi):
    raw, card = float_input_model
    card = copy.deepcopy(card)
    card["input"]["range"] = rng
    (inp,) = read_metadata(embed_metadata(raw, card))["inputs"]
    assert (inp["mean"], inp["std"], inp["min"], inp["max"]) == ([mean], [std], [lo], [hi])


def test_errors_say_what_is_wrong(tmp_path, float_input_model):
    raw, card = _load("portrait")
    with pytest.raises(KsegError, match="no 'TFL3' identifier"):
        embed_metadata(b"not a model at all", card)
    bad = dict(card, class_names=["a", "b", "c"])
    with pytest.raises(KsegError, match="lists 3 classes"):
        embed_metadata(raw, bad)
    inst_raw, inst_card = _load("person-instances")
    with pytest.raises(KsegError, match="has 5 outputs"):
        embed_metadata(inst_raw, dict(inst_card, task="semantic_segmentation"))
    float_raw, float_card = float_input_model
    odd = copy.deepcopy(float_card)
    odd["input"]["range"] = [0, 2]
    with pytest.raises(KsegError, match=r"give the card input.mean and input.std"):
        embed_metadata(float_raw, odd)
    with pytest.raises(KsegError, match="not found"):
        read_metadata(tmp_path / "missing.tflite")


def test_embed_metadata_file_in_place_updates_card_size(tmp_path):
    from kseg.metadata import embed_metadata_file

    shutil.copy(EXPORTS / "portrait-fast.tflite", tmp_path / "m.tflite")
    card = json.loads((EXPORTS / "portrait-fast.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps(card))
    written = embed_metadata_file(tmp_path / "m.tflite")
    size = (tmp_path / "m.tflite").stat().st_size
    assert written["size_bytes"] == size == json.loads((tmp_path / "m.json").read_text())["size_bytes"]
    assert {k: v for k, v in written.items() if k != "size_bytes"} == {k: v for k, v in card.items() if k != "size_bytes"}
    assert read_metadata(tmp_path / "m.tflite")["labels"] == ["background", "person"]
    embed_metadata_file(tmp_path / "m.tflite")  # again: same size, one metadata copy
    assert (tmp_path / "m.tflite").stat().st_size == size
    (tmp_path / "m.json").unlink()
    with pytest.raises(KsegError, match="has no model card"):
        embed_metadata_file(tmp_path / "m.tflite")


def test_strip_metadata_gives_back_a_bare_model_with_the_same_outputs():
    """Shipped exports carry metadata; stripping it leaves no metadata and the same inference."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from kseg.metadata import read_metadata, strip_metadata

    src = Path(__file__).resolve().parent.parent / "exports" / "portrait-fast.tflite"
    data = src.read_bytes()
    assert read_metadata(data) is not None
    bare = strip_metadata(data)
    assert read_metadata(bare) is None and bare[4:8] == b"TFL3" and len(bare) < len(data)
    assert strip_metadata(bare) == bare
    outs = []
    for content in (data, bare):
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.random.default_rng(0).integers(0, 256, d["shape"], dtype=np.uint8))
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[0], outs[1])
