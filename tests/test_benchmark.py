"""kseg benchmark: latency statistics, table, mIoU against kseg evaluate, person IoU, plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.benchmark import (
    benchmark, format_table, latency_stats, parse_reference, person_iou, plot_pareto, time_calls,
)
from kseg.errors import KsegError

SIZE = 32


def small_model(num_classes=3):
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Conv2D(num_classes, 1)(x)
    return keras.Model(inp, x, name="tiny_seg")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-class shapes dataset on disk (32×32); a seeded untrained model as .keras, float32, int8.

    Untrained on purpose (speed): its seeded random weights already predict all three classes
    on these images, so equal mIoUs mean equal predictions, not "everything is background".
    """
    from kseg.data.synthetic import make_shapes, write_shapes_dataset
    from kseg.export import to_tflite

    d = tmp_path_factory.mktemp("bench")
    ds = write_shapes_dataset(d / "data", 12, size=(SIZE, SIZE), num_classes=3, seed=1)
    images, _ = make_shapes(16, size=(SIZE, SIZE), num_classes=3, seed=0)
    model = small_model()
    card = {"class_names": list(ds.class_names), "params": model.count_params()}
    keras_path = d / "tiny.keras"
    model.save(keras_path)
    f32 = to_tflite(model, d / "tiny_f32.tflite", "float32", card=card)
    i8 = to_tflite(model, d / "tiny_int8.tflite", "int8", representative_data=images.astype("float32"), card=card)
    return {"dir": d, "ds": ds, "model": model, "keras": keras_path, "f32": f32, "int8": i8}


def test_latency_stats_are_median_and_p90_of_the_list():
    s = latency_stats([4.0, 1.0, 3.0, 2.0, 10.0])
    assert s == {"median_ms": 3.0, "p90_ms": pytest.approx(7.6), "runs": 5}  # 4 + 0.6 * (10 - 4)
    with pytest.raises(KsegError, match="runs >= 1"):
        latency_stats([])


def test_time_calls_skips_warmup_and_uses_the_clock():
    ticks = iter(np.arange(100, dtype=float) * 0.5)  # each clock() is 0.5 s after the last
    calls = []
    times = time_calls(lambda: calls.append(1), runs=3, warmup=2, clock=lambda: next(ticks))
    assert len(calls) == 5 and times == [500.0, 500.0, 500.0]


def test_injected_clock_gives_median_and_p90_of_the_timed_calls(setup):
    # each timed call reads the clock twice (start, end); warm-up calls do not read it
    durations = [1.0, 4.0, 2.0, 3.0]  # ms
    ticks = iter([v for k, d in enumerate(durations) for v in (k, k + d / 1000)])
    row = benchmark([setup["int8"]], runs=4, warmup=2, clock=lambda: next(ticks))[0]
    assert row["median_ms"] == pytest.approx(2.5) and row["p90_ms"] == pytest.approx(3.7)
    assert row["latency"]["threads"] == 2 and row["latency"]["warmup"] == 2


def test_person_iou_per_image():
    p = np.array([[1, 1, 0, 0]], bool)
    t = np.array([[0, 1, 1, 0]], bool)
    assert person_iou(p, t) == pytest.approx(1 / 3)
    assert person_iou(~p & ~t, np.zeros_like(t)) == 0.0  # predicted person, none there
    assert person_iou(np.zeros_like(p), np.zeros_like(t)) == 1.0  # both empty
    # the third pixel is ignore (255) in the labels: it does not count
    assert person_iou(p, t, valid=np.array([[1, 1, 0, 1]], bool)) == pytest.approx(1 / 2)


def test_table_rows_latency_and_miou_equal_evaluate(setup):
    from kseg.evaluate import evaluate

    paths = [setup["f32"], setup["int8"], setup["keras"]]
    rows = benchmark(paths, threads=2, runs=5, warmup=1, data=setup["dir"] / "data", format="masks")
    assert [r["model"] for r in rows] == ["tiny_f32", "tiny_int8", "tiny"]
    for r in rows:
        assert r["p90_ms"] >= r["median_ms"] > 0 and r["latency"]["runs"] == 5
        assert r["size_mb"] == pytest.approx(Path(r["path"]).stat().st_size / 1e6)
        assert r["num_images"] == 12 and r["input_size"] == [SIZE, SIZE]
        assert r["params"] == setup["model"].count_params()
    f32, i8, ks = rows
    assert (f32["input_dtype"], i8["input_dtype"], i8["output_dtype"]) == ("float32", "uint8", "uint8")
    assert f32["builtin_only"] and i8["builtin_only"] and ks["builtin_only"] is None
    assert (f32["quantization"], i8["quantization"]) == ("float32", "int8")
    # same model, same data, no resizing (32×32 images): evaluate's mIoU exactly
    report = evaluate(setup["model"], setup["ds"])
    ref = report.scores
    assert (report.confusion.sum(0) > 100).all()  # every class is predicted on many pixels
    assert ks["miou"] == pytest.approx(ref["miou"], abs=1e-9)
    assert f32["miou"] == pytest.approx(ref["miou"], abs=2e-3)
    assert abs(i8["miou"] - ref["miou"]) < 0.05
    assert list(f32["per_class_iou"]) == list(setup["ds"].class_names)
    assert f32["person_iou"] is None  # three shape classes: not a person model

    table = format_table(rows).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["model", "quant", "size MB", "params", "input", "I/O", "builtin ops", "median ms",
                      "p90 ms", "mIoU %", "person IoU %"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:5]]
    assert [b[0] for b in body] == ["tiny_f32", "tiny_int8", "tiny"]
    assert body[1][5] == "uint8/uint8" and body[1][6] == "yes" and body[2][6] == "n/a"
    assert body[0][9] == f"{100 * f32['miou']:.2f}" and body[0][10] == "n/a"
    assert "2 threads" in format_table(rows) and "Interpreter.invoke only" in format_table(rows)

    png = plot_pareto(rows, setup["dir"] / "pareto.png", references=["MediaPipe selfie:3.8:0.878"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_person_model_reports_mean_per_image_person_iou(setup, tmp_path):
    from kseg.data.readers import open_masks
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.export import to_tflite
    from kseg.runtime import Segmenter

    ds = write_shapes_dataset(tmp_path / "p", 6, size=(SIZE, SIZE), num_classes=2, seed=3)
    ds = open_masks(tmp_path / "p", class_names=("background", "person"))
    path = to_tflite(small_model(2), tmp_path / "person.tflite", "float32", card={"class_names": ["background", "person"]})
    row = benchmark([path], runs=2, warmup=0, data=ds)[0]
    seg = Segmenter(path, num_threads=2)
    per_image = []
    for i in range(len(ds)):
        image, mask = ds.load(i)
        pred = seg.segment(image).category_mask == 1
        truth = mask == 1
        union = (pred | truth).sum()
        per_image.append(1.0 if union == 0 else (pred & truth).sum() / union)
    assert row["person_iou"] == pytest.approx(np.mean(per_image))
    assert row["person_iou"] != pytest.approx(row["per_class_iou"]["person"])  # per image, not pooled


def test_cli_json_and_plot(setup, tmp_path, capsys):
    from kseg.cli import main

    out, png = tmp_path / "b.json", tmp_path / "b.png"
    code = main(["benchmark", str(setup["int8"]), "--runs", "3", "--warmup", "1", "--data",
                 str(setup["dir"] / "data"), "--format", "masks", "--limit", "5", "--json", str(out),
                 "--plot", str(png), "--reference", "ref:1.5:0.5"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| tiny_int8 | int8 |" in text
    doc = json.loads(out.read_text())
    assert doc["models"][0]["num_images"] == 5 and doc["settings"]["threads"] == 2
    assert doc["references"] == [{"name": "ref", "median_ms": 1.5, "score": 0.5}]
    assert set(doc["models"][0]["per_class_iou"]) == set(setup["ds"].class_names)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    from kseg.cli import main

    with pytest.raises(KsegError, match="not found"):
        benchmark([tmp_path / "missing.tflite"])
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    with pytest.raises(KsegError, match="not a TFLite model"):
        benchmark([text])
    data = setup["int8"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(KsegError, match="cut.tflite"):
        benchmark([cut], runs=1, warmup=0)
    with pytest.raises(KsegError, match="NAME:LATENCY_MS:SCORE"):
        parse_reference("MediaPipe-3.8")
    with pytest.raises(KsegError, match="between 0 and 1"):
        parse_reference("MediaPipe:3.8:87.8")
    assert main(["benchmark", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kseg: error:") and "\n" not in err
