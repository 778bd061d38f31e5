"""RoIAlign / RoIPool against a line-by-line transcription of torchvision's CPU kernels."""

import math

import numpy as np
import pytest

from kseg.ops import fpn_level, roi_align, roi_pool


# ---- reference: torchvision/csrc/ops/cpu/roi_align_kernel.cpp and roi_pool_kernel.cpp, NHWC ----
def _bilinear(f, y, x):
    H, W = f.shape[:2]
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return np.zeros(f.shape[-1])
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= H - 1:
        y_high = y_low = H - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_high = x_low = W - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high] + ly * hx * f[y_high, x_low] + ly * lx * f[y_high, x_high]


def ref_roi_align(feat, boxes, idx, out, scale, ratio, aligned):
    K, C = len(boxes), feat.shape[-1]
    res = np.zeros((K, out, out, C))
    off = 0.5 if aligned else 0.0
    for k, (b, (x1, y1, x2, y2)) in enumerate(zip(idx, boxes)):
        sw, sh, ew, eh = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out, rw / out
        gh = ratio if ratio > 0 else math.ceil(rh / out)
        gw = ratio if ratio > 0 else math.ceil(rw / out)
        count = max(gh * gw, 1)
        for ph in range(out):
            for pw in range(out):
                acc = np.zeros(C)
                for iy in range(gh):
                    y = sh + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sw + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(feat[b], y, x)
                res[k, ph, pw] = acc / count
    return res


def ref_roi_pool(feat, boxes, idx, out, scale):
    K, C = len(boxes), feat.shape[-1]
    H, W = feat.shape[1:3]
    rnd = lambda v: math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)  # std::round  # noqa: E731
    res = np.zeros((K, out, out, C))
    for k, (b, (x1, y1, x2, y2)) in enumerate(zip(idx, boxes)):
        sw, sh, ew, eh = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        bh, bw = rh / out, rw / out
        for ph in range(out):
            for pw in range(out):
                hs = min(max(math.floor(ph * bh) + sh, 0), H)
                he = min(max(math.ceil((ph + 1) * bh) + sh, 0), H)
                ws = min(max(math.floor(pw * bw) + sw, 0), W)
                we = min(max(math.ceil((pw + 1) * bw) + sw, 0), W)
                if he <= hs or we <= ws:
                    continue
                res[k, ph, pw] = feat[b, hs:he, ws:we].reshape(-1, C).max(0)
    return res


def _random_case(seed, K=12, B=2, H=13, W=17, C=3):
    rng = np.random.default_rng(seed)
    feat = rng.normal(size=(B, H, W, C)).astype("float32")
    # image is 4x the feature map; boxes cross borders, are tiny, huge, and degenerate
    x1 = rng.uniform(-20, 4 * W, K)
    y1 = rng.uniform(-20, 4 * H, K)
    w = rng.choice([0.0, 0.5, 3.0, 17.0, 60.0, 150.0], K)
    h = rng.choice([0.0, 0.5, 3.0, 17.0, 60.0, 150.0], K)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype("float32")
    idx = rng.integers(0, B, K).astype("int32")
    return feat, boxes, idx


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, 1, 0, -1])
def test_roi_align_matches_torchvision_definition(aligned, ratio):
    for seed in range(3):
        feat, boxes, idx = _random_case(seed)
        got = np.asarray(roi_align(feat, boxes, idx, 5, spatial_scale=0.25, sampling_ratio=ratio, aligned=aligned))
        want = ref_roi_align(feat, boxes, idx, 5, 0.25, ratio, aligned)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_roi_align_non_square_output_and_batch_routing():
    feat, boxes, idx = _random_case(7, K=4, B=3)
    got = np.asarray(roi_align(feat, boxes, idx, (3, 6), spatial_scale=0.25, sampling_ratio=2))
    assert got.shape == (4, 3, 6, 3)
    # each box reads only its own image: changing another image changes nothing
    other = feat.copy()
    other[(idx[0] + 1) % 3] += 100.0
    got2 = np.asarray(roi_align(other, boxes[:1], idx[:1], (3, 6), spatial_scale=0.25))
    np.testing.assert_allclose(got2, got[:1], atol=1e-5)


def test_roi_align_on_a_ramp_is_exact():
    # f(y, x) = x: the aligned RoIAlign of box [2, 0, 6, 4] with 2 bins gives the bin centres'
    # continuous x coordinate minus 0.5 (pixel centres sit at +0.5): 3 - 0.5 and 5 - 0.5.
    W = 10
    feat = np.tile(np.arange(W, dtype="float32")[None, :], (8, 1))[None, ..., None]
    got = np.asarray(roi_align(feat, [[2.0, 0.0, 6.0, 4.0]], [0], 2, sampling_ratio=2))[0, ..., 0]
    np.testing.assert_allclose(got, [[2.5, 4.5], [2.5, 4.5]], atol=1e-6)


def test_roi_pool_matches_torchvision_definition():
    for seed in range(3):
        feat, boxes, idx = _random_case(seed)
        got = np.asarray(roi_pool(feat, boxes, idx, 4, spatial_scale=0.25))
        want = ref_roi_pool(feat, boxes, idx, 4, 0.25)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_roi_pool_quantises_where_roi_align_does_not():
    # a box shifted by a fraction of a feature pixel: RoIPool cannot see the shift (its edges
    # round to the same pixels) while RoIAlign follows it linearly.
    W = 16
    feat = np.tile(np.arange(W, dtype="float32")[None, :], (16, 1))[None, ..., None]
    pool = [float(np.asarray(roi_pool(feat, [[4 + d, 4, 12 + d, 12]], [0], 1))[0, 0, 0, 0]) for d in (0.0, 0.3)]
    align = [float(np.asarray(roi_align(feat, [[4 + d, 4, 12 + d, 12]], [0], 1))[0, 0, 0, 0]) for d in (0.0, 0.3)]
    assert pool[0] == pool[1] == 12.0  # max over columns 4..12 either way
    assert align[1] - align[0] == pytest.approx(0.3, abs=1e-5)
    assert align[0] == pytest.approx(7.5, abs=1e-5)  # mean x over [4, 12) minus half a pixel


def test_fpn_level():
    boxes = np.array([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 10, 10], [0, 0, 2000, 2000]], "float32")
    assert list(np.asarray(fpn_level(boxes))) == [4, 3, 5, 2, 5]
