"""Every file in exports/ is what its card says: full-int8 with uint8 input and builtin ops only,
its card names it, its data and licences, and figures measured on held-out data; the "-fast"
files are the same network as their full-size twin, so on a real photo they label the same."""

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
    assert card["quantization"] in ("int8", "qat")  # post-training or quantization-aware: full integer either way
    interp = Interpreter(model_path=str(path))
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
