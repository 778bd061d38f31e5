"""benchmarks/vs_mediapipe.py draws its latency/IoU chart again from a run's --json."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_mediapipe", ROOT / "benchmarks" / "vs_mediapipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
