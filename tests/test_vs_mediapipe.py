"""benchmarks/vs_mediapipe.py: multiply-adds counted from a .tflite graph, both MediaPipe models as references
in one run, and the latency/IoU chart drawn again from a run's --json."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vs():
    return load_benchmark("vs_mediapipe")


def _row(name, ms1, ms2, iou, free=None):
    row = {"model": name, "input": [192, 192], "macs": 1, "params": 1, "ms": {"1": [ms1], "2": [ms2]},
           "iou": {"portraits": iou, "people-masks": iou - 0.1}, "n": {"portraits": 132, "people-masks": 20}}
    if free is not None:
        row["person_free"] = {"labelled_share": free, "images_over_1pct": 0.5, "by_source": {}}
    return row


def test_replot_draws_a_panel_per_set_from_the_json(vs, tmp_path):
    rows = [_row("MediaPipe selfie", 3.2, 2.2, 0.949, 0.25), _row("portrait", 3.3, 2.0, 0.935, 0.12)]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"machine": "test CPU", "rounds": 1, "invokes": 1, "rows": rows}))
    out = tmp_path / "chart.png"
    vs.main(["--replot", str(saved), "--chart", str(out)])
    from PIL import Image

    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[1] > 3 * image.shape[0] / 2  # three panels in a row: portraits, people-masks, person-free
    assert (image < 128).mean() > 0.005  # something is drawn


def test_a_run_without_iou_has_nothing_to_chart(vs, tmp_path):
    rows = [_row("MediaPipe selfie", 3.2, 2.2, 0.9)]
    for r in rows:
        r["iou"] = {}
    with pytest.raises(SystemExit, match="nothing to chart"):
        vs.chart(rows, "test CPU", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_graph_stats_counts_multiply_adds_and_parameters_by_hand(vs, tmp_path):
    import keras

    from kseg.export import to_tflite

    x = inputs = keras.Input((16, 16, 3))
    b = {"bias_initializer": "random_normal"}  # zero biases of one shape would share one constant buffer
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", **b)(x)  # 8x8x8 outputs x 27: 13,824; 224 params
    x = keras.layers.DepthwiseConv2D(3, padding="same", **b)(x)  # 8x8x8 x 9: 4,608; 80 params
    outputs = keras.layers.Conv2D(2, 1, **b)(x)  # 8x8x2 x 8: 1,024; 18 params
    path = to_tflite(keras.Model(inputs, outputs), tmp_path / "tiny.tflite", "float32")
    st = vs.graph_stats(path)
    assert st["macs"] == 13824 + 4608 + 1024
    assert st["params"] == 224 + 80 + 18
    assert st["macs_by_stride"] == {2: 13824 + 4608 + 1024}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(st["ops"])


def _peers(shared_data):
    peers = Path(shared_data).parent / "peers"
    square, landscape = peers / "selfie_segmentation.tflite", peers / "selfie_segmentation_landscape.tflite"
    if not (square.is_file() and landscape.is_file()):
        pytest.skip(f"MediaPipe's models not in {peers}")
    return square, landscape


def test_both_mediapipe_models_are_references_in_one_run(vs, shared_data, tmp_path, capsys):
    square, landscape = _peers(shared_data)
    out = tmp_path / "run.json"
    vs.main([str(ROOT / "exports" / "portrait-fast.tflite"), "--mediapipe", str(square), str(landscape),
             "--skip-iou", "--rounds", "1", "--invokes", "3", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["MediaPipe selfie", "MediaPipe landscape", "portrait-fast"]
    assert [r["reference"] for r in rows] == [True, True, False]
    assert rows[1]["input"] == [144, 256]
    ours = rows[2]
    for ref in rows[:2]:
        assert ref["ratio_to"][ref["model"]]["1"] == pytest.approx(1.0)
        assert ours["ratio_to"][ref["model"]]["2"] == pytest.approx(ours["median_ms"]["2"] / ref["median_ms"]["2"])
    assert ours["ratio_to_mediapipe"] == ours["ratio_to"]["MediaPipe selfie"]
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("model"))
    assert "x MP 1T" in header and "x MPL 2T" in header


def test_a_missing_mediapipe_model_is_one_clear_line(vs, tmp_path):
    with pytest.raises(SystemExit, match=r"nope\.tflite: no MediaPipe model there; give --mediapipe"):
        vs.main(["--mediapipe", str(tmp_path / "nope.tflite"), "--skip-iou"])


def test_the_chart_draws_every_reference_in_grey(vs, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    scatter = Axes.scatter

    def spy(self, x, y, **kw):
        drawn.append((kw["label"], kw["color"], x[0], y[0]))
        return scatter(self, x, y, **kw)

    monkeypatch.setattr(Axes, "scatter", spy)
    rows = [_row("MediaPipe selfie", 3.2, 2.2, 0.949, 0.25), _row("MediaPipe landscape", 1.7, 1.0, 0.947, 0.22),
            _row("portrait", 3.3, 2.0, 0.935, 0.12)]
    for r, ref in zip(rows, (True, True, False)):
        r["reference"] = ref
    out = tmp_path / "chart.png"
    vs.chart(rows, "test CPU", out)
    assert out.stat().st_size > 0
    portraits = [d for d in drawn if d[3] in (0.949, 0.947, 0.935)]  # the portraits panel
    assert portraits == [("MediaPipe selfie", "black", 3.2, 0.949), ("MediaPipe landscape", "dimgrey", 1.7, 0.947),
                         ("portrait", portraits[2][1], 3.3, 0.935)]
    assert portraits[2][1] not in ("black", "dimgrey")
    assert len(drawn) == 3 * 3  # portraits, people-masks, person-free


def test_write_cards_records_the_figures_against_each_reference(vs, tmp_path):
    rows = [_row("MediaPipe selfie", 3.2, 2.0, 0.949, 0.25), _row("MediaPipe landscape", 1.7, 1.0, 0.947, 0.22),
            _row("portrait", 3.3, 1.8, 0.935, 0.12), _row("no-card", 2.0, 1.2, 0.9, 0.1)]
    model = tmp_path / "portrait.tflite"
    model.write_bytes(b"")
    (tmp_path / "portrait.json").write_text(json.dumps({"name": "portrait", "vs_mediapipe": {"old": 1}}))
    for r, ref, f in zip(rows, (True, True, False, False), ("mp.tflite", "mpl.tflite", model, tmp_path / "no-card.tflite")):
        r["reference"], r["file"], r["macs"] = ref, str(f), 58_000_000 if ref else 198_000_000
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"machine": "test CPU", "date": "2026-11-30 14:00 UTC", "command": "vs_mediapipe.py x",
                                 "rounds": 5, "invokes": 100, "rows": rows}))
    vs.main(["--replot", str(saved), "--write-cards"])
    card = json.loads((tmp_path / "portrait.json").read_text())
    assert card["name"] == "portrait"
    square, land = card["vs_mediapipe"], card["vs_mediapipe_landscape"]
    assert "old" not in square
    assert square["person_iou"] == {"portraits": 0.935, "people-masks": 0.835}
    assert square["mediapipe_person_iou"]["portraits"] == 0.949 and land["mediapipe_person_iou"]["portraits"] == 0.947
    assert square["latency_ms"] == {"1_threads": 3.3, "2_threads": 1.8}
    assert land["mediapipe_latency_ms"] == {"1_threads": 1.7, "2_threads": 1.0}
    assert square["person_free_pixels"] == 0.12 and land["mediapipe_person_free_pixels"] == 0.22
    assert square["machine"] == "test CPU (2026-11-30 14:00 UTC)" and square["command"] == "vs_mediapipe.py x"
    assert not (tmp_path / "no-card.json").exists()


def test_write_cards_needs_iou(vs, tmp_path):
    rows = [_row("MediaPipe selfie", 3.2, 2.2, 0.9), _row("portrait", 3.3, 2.0, 0.9)]
    for r in rows:
        r["iou"], r["file"] = {}, str(tmp_path / "x.tflite")
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"machine": "m", "rows": rows}))
    with pytest.raises(SystemExit, match="nothing to write into the cards"):
        vs.main(["--replot", str(saved), "--write-cards"])


def test_models_of_one_name_are_told_apart_by_their_run(vs):
    assert vs.run_label("exports/portrait.tflite") == "portrait"
    assert vs.run_label("/root/kseg-runs/runs/portrait_tiny/export-int8/portrait.tflite") == "portrait_tiny/portrait"
    assert vs.run_label("runs/x/portrait.tflite") == "x/portrait"


def test_paired_differences_by_hand_and_from_a_saved_run(vs, tmp_path, capsys):
    base = {"model": "portrait-fast", "file": "exports/portrait-fast.tflite",
            "iou_per_image": {"portraits": [0.9, 0.8, 0.7, 0.6], "coco-val": [0.5, 0.5]}}
    new = {"model": "new", "file": "runs/new/portrait-fast.tflite",
           "iou_per_image": {"portraits": [0.92, 0.82, 0.72, 0.62], "coco-val": [0.6, 0.4]}}
    figs = vs.paired([base, new], "exports/portrait-fast.tflite")
    p = figs["new"]["portraits"]
    # every image +0.02: the mean and both ends of the interval are +0.02
    assert p["mean_diff"] == pytest.approx(0.02) and p["ci95"] == pytest.approx([0.02, 0.02])
    assert (p["better"], p["worse"], p["n"]) == (4, 0, 4)
    c = figs["new"]["coco-val"]
    assert c["mean_diff"] == pytest.approx(0.0, abs=1e-12) and c["ci95"][0] < 0 < c["ci95"][1]
    assert (c["better"], c["worse"]) == (1, 1)
    assert list(figs) == ["new"]  # the base itself is not compared
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"machine": "test CPU", "rows": [base, new]}))
    vs.main(["--replot", str(saved), "--paired", "portrait-fast"])
    out = capsys.readouterr().out
    assert "portraits +0.020 [+0.020, +0.020] (4/0)" in out
    with pytest.raises(SystemExit, match="no single model"):
        vs.paired([base, new], "nope.tflite")
    with pytest.raises(SystemExit):  # refused before anything is timed
        vs.main(["--paired", "portrait-fast", "--skip-iou", "--mediapipe", str(tmp_path / "none.tflite")])
    assert "--paired compares per-image IoU" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="every image's IoU"):
        vs.paired([{"model": "old", "file": "old.tflite", "iou": {}}, new], "old")


def test_a_run_keeps_every_images_iou_for_pairing(vs, shared_data, tmp_path, capsys):
    out = tmp_path / "run.json"
    square, _ = _peers(shared_data)
    vs.main([str(ROOT / "exports" / "portrait-fast.tflite"), "--mediapipe", str(square), "--sets", "portraits",
             "--limit", "4", "--rounds", "1", "--invokes", "2", "--paired", "MediaPipe selfie", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    ours = rows[1]
    assert len(ours["iou_per_image"]["portraits"]) == 4
    assert ours["iou"]["portraits"] == pytest.approx(np.mean(ours["iou_per_image"]["portraits"]))
    diff = np.mean(ours["iou_per_image"]["portraits"]) - np.mean(rows[0]["iou_per_image"]["portraits"])
    assert ours["paired"]["against"] == "MediaPipe selfie"
    assert ours["paired"]["by_set"]["portraits"]["mean_diff"] == pytest.approx(diff)
    assert "paired against MediaPipe selfie" in capsys.readouterr().out
