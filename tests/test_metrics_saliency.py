"""SaliencyMetrics: hand-computed cases, and agreement with the reference ``pysodmetrics``.

The reference pins numpy < 2.3.5 and opencv < 5, which kseg's lock does not allow, so it
lives in its own venv under ``~/.cache/kseg/venvs/`` (made on first use with pip) and runs in
a subprocess; the comparison tests skip when that venv cannot be made (no network).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.metrics import SaliencyMetrics
from kseg.metrics_saliency import KEYS

REFERENCE = "pysodmetrics==1.6.2"
VENV = Path.home() / ".cache" / "kseg" / "venvs" / "pysodmetrics-1.6.2"

REFERENCE_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
import py_sod_metrics as m
data = np.load(sys.argv[1])
fm, em, sm, wfm, mae = m.Fmeasure(beta=0.3), m.Emeasure(), m.Smeasure(alpha=0.5), m.WeightedFmeasure(), m.MAE()
fm2 = m.FmeasureV2({"f": m.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)})
for i in range(len(data.files) // 2):
    p, g = data[f"p{i}"], data[f"g{i}"]
    for metric in (fm, fm2, em, sm, wfm, mae):
        metric.step(p, g)
f, e, f2 = fm.get_results()["fm"], em.get_results()["em"], fm2.get_results()["f"]
out = dict(mae=mae.get_results()["mae"], s_measure=sm.get_results()["sm"],
           max_e_measure=e["curve"].max(), mean_e_measure=e["curve"].mean(), adaptive_e_measure=e["adp"],
           max_f_beta=f["curve"].max(), mean_f_beta=f["curve"].mean(), adaptive_f_beta=f["adp"],
           weighted_f_beta=wfm.get_results()["wfm"],
           v2_max_f_beta=f2["dynamic"].max(), v2_mean_f_beta=f2["dynamic"].mean(), v2_adaptive_f_beta=f2["adaptive"])
print(json.dumps({k: float(v) for k, v in out.items()}))
"""


def _reference_python():
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import py_sod_metrics"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "-q", REFERENCE], check=True, capture_output=True,
                       timeout=600)
        subprocess.run(probe, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"cannot make the {REFERENCE} venv at {VENV}: {err}")
    return py


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    py = _reference_python()
    folder = tmp_path_factory.mktemp("pysod")
    script = folder / "reference.py"
    script.write_text(REFERENCE_SCRIPT)

    def run(pairs):
        path = folder / "pairs.npz"
        np.savez(path, **{f"{k}{i}": a for i, (p, g) in enumerate(pairs) for k, a in (("p", p), ("g", g))})
        done = subprocess.run([str(py), str(script), str(path)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


def ours(pairs, **kwargs):
    sod = SaliencyMetrics(**kwargs)
    for p, g in pairs:
        sod.update(p, g)
    return sod.result()


def assert_agree(pairs, reference):
    want, got = reference(pairs), ours(pairs)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert abs(got[key] - want[key]) <= 1e-6, (key, got[key], want[key])
    for key in ("max_f_beta", "mean_f_beta", "adaptive_f_beta"):  # FmeasureV2 agrees with Fmeasure
        assert abs(want[f"v2_{key}"] - want[key]) <= 1e-12


# --- hand-computed -----------------------------------------------------------------------


def test_perfect_map():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 3:8] = 255  # 20 foreground pixels of 100
    r = ours([(gt.copy(), gt)])
    n = 100
    assert r["mae"] == 0
    assert r["s_measure"] == pytest.approx(1, abs=1e-12)
    # thresholds 255..1 binarize the map exactly (E = n / (n - 1) with MATLAB's normalisation);
    # at threshold 0 everything is foreground: every region's alignment is 0, so E = n/4/(n-1)
    assert r["max_e_measure"] == pytest.approx(n / (n - 1))
    assert r["mean_e_measure"] == pytest.approx((255 * n / (n - 1) + n / 4 / (n - 1)) / 256)
    assert r["adaptive_e_measure"] == pytest.approx(n / (n - 1))
    # F = 1 at 255 thresholds; at 0: precision 0.2, recall 1
    f0 = 1.3 * 0.2 / (0.3 * 0.2 + 1)
    assert r["max_f_beta"] == pytest.approx(1)
    assert r["mean_f_beta"] == pytest.approx((255 + f0) / 256)
    assert r["adaptive_f_beta"] == pytest.approx(1)
    assert r["weighted_f_beta"] == pytest.approx(1)


def test_all_zero_prediction():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 255  # top-left 2x2 of a 4x4
    r = ours([(np.zeros((4, 4), np.uint8), gt)])
    assert r["mae"] == pytest.approx(4 / 16)
    # object part: the foreground scores 0, the background 2/(1+1) = 1, weighted by 12/16;
    # region part: the centroid (0.5, 0.5) rounds to (0, 0), so the split is at (1, 1): only the
    # 1-pixel top-left quadrant (all foreground, predicted 0: SSIM's alpha and beta both 0 -> 1)
    # scores, with weight 1/16
    assert r["s_measure"] == pytest.approx(0.5 * 12 / 16 + 0.5 * 1 / 16)
    # F-beta is 0 at thresholds 255..1; at 0 (and at the adaptive threshold 2 * 0) everything is
    # foreground: precision 4/16, recall 1
    f0 = 1.3 * 0.25 / (0.3 * 0.25 + 1)
    assert r["max_f_beta"] == pytest.approx(f0) and r["mean_f_beta"] == pytest.approx(f0 / 256)
    assert r["adaptive_f_beta"] == pytest.approx(f0)
    # weighted F-beta: the error is 1 on the object, and a background pixel takes its nearest
    # object pixel's error, so the error map is all ones; smoothed by the 7x7 Gaussian (sigma 5)
    # with zeros outside the image it drops below 1 on the object, which is the only error left
    # (background errors are 0). Recall = 1 - mean smoothed error on the object, precision = 1.
    y, x = np.mgrid[-3:4, -3:4]
    k = np.exp(-(x ** 2 + y ** 2) / 50)
    k /= k.sum()
    inside = lambda i, j: k[max(0, 3 - i):7 - max(0, i + 4 - 4), max(0, 3 - j):7 - max(0, j + 4 - 4)].sum()  # noqa: E731
    recall = 1 - np.mean([inside(i, j) for i in (0, 1) for j in (0, 1)])
    assert r["weighted_f_beta"] == pytest.approx(2 * recall / (recall + 1), rel=1e-9)


def test_empty_truth_and_empty_prediction():
    zeros = np.zeros((8, 8), np.uint8)
    r = ours([(zeros, zeros)])
    assert r["mae"] == 0 and r["s_measure"] == 1
    assert r["max_e_measure"] == pytest.approx(64 / 63)
    assert r["mean_e_measure"] == pytest.approx(255 / 256 * 64 / 63)  # threshold 0 calls it all foreground
    # the reference's conventions: the adaptive threshold of a zero map is 0 (everything
    # foreground), and F-beta / weighted F-beta are 0 without a foreground
    assert r["adaptive_e_measure"] == 0
    assert r["max_f_beta"] == 0 and r["weighted_f_beta"] == 0


def test_known_mae_with_min_max_stretch_and_streaming_mean():
    pred = np.array([[0, 255], [51, 255]], np.uint8)
    gt = np.array([[0, 255], [0, 0]], np.uint8)
    assert ours([(pred, gt)])["mae"] == pytest.approx((0.2 + 1) / 4)
    # a prediction on 50..150 is stretched to 0..1 first, so it scores like the 0..255 one
    stretched = np.array([[50, 150], [70, 150]], np.uint8)
    assert ours([(stretched, gt)])["mae"] == pytest.approx(0.3)
    # a constant map is not stretched: 100/255 everywhere
    flat = np.full((2, 2), 100, np.uint8)
    assert ours([(flat, gt)])["mae"] == pytest.approx((3 * 100 / 255 + (1 - 100 / 255)) / 4)
    # images are averaged, each with its own size
    both = ours([(pred, gt), (np.zeros((3, 3), np.uint8), np.full((3, 3), 255, np.uint8))])
    assert both["mae"] == pytest.approx((0.3 + 1) / 2)


def test_batches_channels_and_errors():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, (3, 12, 10, 1), dtype=np.uint8)
    gt = (rng.random((3, 12, 10)) > 0.6).astype(np.uint8) * 255
    one_by_one = ours(zip(pred[..., 0], gt))
    batched = SaliencyMetrics()
    batched.update(pred, gt[..., None])
    assert batched.count == 3 and batched.result() == one_by_one
    batched.reset()
    assert np.isnan(batched.result()["mae"])
    with pytest.raises(KsegError, match=r"prediction is \(12, 10\) but its ground truth is \(10, 12\)"):
        batched.update(pred[0, ..., 0], gt[0].T)


# --- against pysodmetrics ----------------------------------------------------------------


def _centroid_on_last_row_or_column(gt):
    if not gt.any() or gt.all():
        return False
    cy, cx = np.argwhere(gt > 128).mean(axis=0).round()
    return cy + 1 == gt.shape[0] or cx + 1 == gt.shape[1]


def _blob(rng, h, w):
    """A random ellipse whose centroid is off the last row and column (see the NaN test)."""
    yy, xx = np.mgrid[:h, :w]
    while True:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
        gt = ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < 1).astype(np.uint8) * 255
        if not _centroid_on_last_row_or_column(gt):
            return gt


def test_s_measure_with_an_empty_region_is_finite_where_the_reference_gives_nan(reference):
    gt = np.zeros((6, 6), np.uint8)
    gt[:, 5] = 255  # the centroid is on the last column: the two right regions are empty
    assert _centroid_on_last_row_or_column(gt)
    want, got = reference([(gt.copy(), gt)]), ours([(gt.copy(), gt)])
    assert np.isnan(want["s_measure"])
    assert got["s_measure"] == pytest.approx(1)  # a perfect map; the two non-empty halves score 1
    for key in set(KEYS) - {"s_measure"}:
        assert abs(got[key] - want[key]) <= 1e-6, key


def test_random_maps_agree_with_pysodmetrics(reference):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(24):
        h, w = rng.integers(5, 60, 2)
        gt = _blob(rng, h, w)
        if i % 3 == 0:  # noisy soft map near the truth
            pred = np.clip(gt * rng.uniform(0.3, 1) + rng.normal(0, 60, (h, w)), 0, 255).astype(np.uint8)
        elif i % 3 == 1:  # unrelated noise
            pred = rng.integers(0, 256, (h, w), dtype=np.uint8)
        else:  # a narrow range (stretched) with a few shared pixels
            pred = rng.integers(90, 110, (h, w), dtype=np.uint8)
        pairs.append((pred, gt))
    # edge cases: empty and full truths, constant and binary predictions
    z, f = np.zeros((16, 16), np.uint8), np.full((16, 16), 255, np.uint8)
    pairs += [(z, z), (f, z), (z, f), (f, f), (np.full((16, 16), 77, np.uint8), _blob(rng, 16, 16)),
              (_blob(rng, 16, 16), _blob(rng, 16, 16)), (rng.integers(0, 256, (16, 16), dtype=np.uint8), f)]
    assert_agree(pairs, reference)
    for p, g in pairs[-7:]:  # and image by image, where no average hides a difference
        assert_agree([(p, g)], reference)


@pytest.mark.shared_data
def test_real_maps_agree_with_pysodmetrics(reference, shared_data):
    import cv2

    masks = sorted((shared_data / "portraits" / "masks").glob("*.png"))[:12]
    assert masks, "no portrait masks"
    rng = np.random.default_rng(1)
    pairs = []
    for i, path in enumerate(masks):
        gt = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        soft = cv2.GaussianBlur(gt, (0, 0), sigmaX=float(rng.uniform(1, 8)))
        shifted = np.roll(soft, (int(rng.integers(-12, 13)), int(rng.integers(-12, 13))), axis=(0, 1))
        if i % 2:
            shifted = cv2.resize(cv2.resize(shifted, None, fx=0.25, fy=0.25), gt.shape[::-1])  # blocky
        pairs.append((shifted, gt))
    assert_agree(pairs, reference)
    r = ours(pairs)
    assert 0 < r["mae"] < 0.2 and r["s_measure"] > 0.7 and r["max_f_beta"] > 0.8  # near the truth
