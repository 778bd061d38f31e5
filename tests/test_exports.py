"""Every file in exports/ is what its card says: full-int8 with uint8 input and builtin ops only
(or, for a NAME-float16.tflite, the float16 companion of NAME.tflite for CPUs where int8 is slower),
its card names it, its data and licences, and figures measured on held-out data; the "-fast"
files are the same network as their full-size twin, and a float16 companion the same weights as
its int8 file, so on a real photo they label the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kseg.runtime import nonbuiltin_ops, tflite_ops

EXPORTS = Path(__file__).resolve().parent.parent / "exports"
FILES = sorted(EXPORTS.glob("*.tflite"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_export_is_full_int8_with_builtin_ops_and_an_honest_card(path):
    from ai_edge_litert.interpreter import Interpreter

    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == path.stem and card["file"] == path.name and card["size_bytes"] == path.stat().st_size
    interp = Interpreter(model_path=str(path))
    if card["quantization"] == "float16":  # a float companion: named after, and beside, its int8 file
        assert path.stem.endswith("-float16") and (EXPORTS / f"{path.stem[:-len('-float16')]}.tflite").is_file()
        assert interp.get_input_details()[0]["dtype"] == np.float32
    else:
        assert card["quantization"] in ("int8", "qat")  # post-training or quantization-aware: full integer either way
        assert interp.get_input_details()[0]["dtype"] == np.uint8
        if card.get("task", "semantic_segmentation") == "semantic_segmentation":
            assert interp.get_output_details()[0]["dtype"] == np.uint8
    assert not nonbuiltin_ops(tflite_ops(path))
    for field in ("training_data", "data_licence", "command"):
        assert card.get(field), f"{path.name}: card has no {field}"
    assert card.get("training_time") or card.get("training"), f"{path.name}: card does not say its CPU time"
    # held out: parsing's validation split, portrait's side by side with MediaPipe, instances' COCO val AP
    held_out = card.get("validation") or card.get("vs_mediapipe") or card.get("comparison", {}).get("coco-mini val person mask AP")
    assert held_out, f"{path.name}: no held-out figures in its card"


@pytest.mark.parametrize("full,fast", [("portrait", "portrait-fast"), ("parsing", "parsing-fast"),
                                       ("portrait-selfie", "portrait-selfie-fast")])
def test_the_fast_file_is_the_same_network_at_a_smaller_input(shared_data, full, fast):
    from kseg.runtime import Segmenter

    a, b = Segmenter(EXPORTS / f"{full}.tflite", num_threads=2), Segmenter(EXPORTS / f"{fast}.tflite", num_threads=2)
    assert a.class_names == b.class_names and b.input_size[0] < a.input_size[0]
    assert json.loads((EXPORTS / f"{full}.json").read_text())["params"] == json.loads(
        (EXPORTS / f"{fast}.json").read_text())["params"]
    import cv2

    agree = []
    for name in sorted((shared_data / "people-parsing" / "images").iterdir())[-5:]:  # five real photos: the two files need only agree
        rgb = cv2.cvtColor(cv2.imread(str(name)), cv2.COLOR_BGR2RGB)
        agree.append(np.mean(a.segment(rgb).category_mask == b.segment(rgb).category_mask))
    assert np.mean(agree) > 0.9, agree


FLOAT16 = sorted(p for p in FILES if p.stem.endswith("-float16"))


@pytest.mark.parametrize("path", FLOAT16, ids=[p.stem for p in FLOAT16])
def test_a_float16_companion_is_its_int8_file_in_float(shared_data, path):
    from kseg.runtime import Segmenter

    f16, q8 = Segmenter(path, num_threads=2), Segmenter(EXPORTS / f"{path.stem[:-len('-float16')]}.tflite", num_threads=2)
    assert f16.class_names == q8.class_names and f16.input_size == q8.input_size
    import cv2

    ious = []
    for name in sorted((shared_data / "portraits" / "images").iterdir())[-5:]:  # five webcam-like photos
        rgb = cv2.cvtColor(cv2.imread(str(name)), cv2.COLOR_BGR2RGB)
        a = f16.segment(rgb).category_mask == f16.person_index
        b = q8.segment(rgb).category_mask == q8.person_index
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert min(ious) > 0.9, ious  # int8 rounding moves the edge by a pixel or two, not the person
