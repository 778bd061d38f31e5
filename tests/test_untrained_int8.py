"""benchmarks/untrained_int8.py: a config's network as an int8 file of each input size, for timing only."""

import json

import cv2
import numpy as np
import pytest

from tests.conftest import load_benchmark


def test_each_config_and_size_gives_an_int8_file_whose_card_says_untrained(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(photos / f"{i}.png"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    cfg = tmp_path / "small.yaml"
    cfg.write_text("name: small\nmodel: {name: unet, kwargs: {filters: 4, depth: 2}, init_from: /nowhere/best.keras}\n")
    bench = load_benchmark("untrained_int8")
    assert bench.main([str(cfg), "--sizes", "32x32", "32x64", "--out", str(tmp_path / "out"),
                       "--images", str(photos)]) == 0
    from ai_edge_litert.interpreter import Interpreter

    for h, w in ((32, 32), (32, 64)):
        path = tmp_path / "out" / f"small-{h}x{w}.tflite"
        inp = Interpreter(model_path=str(path)).get_input_details()[0]
        assert tuple(inp["shape"]) == (1, h, w, 3) and inp["dtype"] == np.uint8
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["training_data"].startswith("untrained") and card["quantization"] == "int8"
    assert bench.main([str(cfg), "--sizes", "32x32", "--out", str(tmp_path / "o2"), "--images", str(tmp_path)]) == 2
    assert "no .jpg or .png photos" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main([str(cfg), "--sizes", "32", "--out", str(tmp_path / "o3")])
