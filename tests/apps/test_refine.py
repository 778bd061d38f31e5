"""Mask estimator: class selection, temporal smoothing (hand-computed), guided filter behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from apps.common.refine import MaskEstimator, TemporalSmoother, guided_filter
from kseg.errors import KsegError
from tests.apps.fakes import MARGIN, CLOTHES, H, HAIR, PERSON, SKIN, W, FakeSegmenter, interior, outside, parsing_segmenter, textured_frame


def test_two_class_person_mask_is_the_sigmoid_of_the_logit_gap():
    seg = FakeSegmenter()
    est = MaskEstimator(seg, refine=False, smoothing=0.0)
    m = est(textured_frame())
    assert m.shape == (H, W, 1) and m.dtype == np.float32
    ys, xs = interior(PERSON, MARGIN)
    np.testing.assert_allclose(m[ys, xs, 0], 1 / (1 + np.exp(-8.0)), atol=1e-5)
    np.testing.assert_allclose(m[outside(PERSON, MARGIN), 0], 1 / (1 + np.exp(8.0)), atol=1e-5)
    y0, y1, x0, x1 = PERSON
    assert est.person_fraction == pytest.approx((y1 - y0) * (x1 - x0) / (H * W), abs=0.02)


def test_parsing_model_person_is_one_minus_background_and_sums_classes():
    est = MaskEstimator(parsing_segmenter(), names=("person", "upper_clothes+dress", "hair"), refine=False, smoothing=0)
    m = est(textured_frame())
    z = np.exp(8) + 7  # the painted class has logit 8, the seven others 0
    for box in (HAIR, SKIN, CLOTHES):
        ys, xs = interior(box, 6)
        np.testing.assert_allclose(m[ys, xs, 0], 1 - 1 / z, atol=1e-4)  # person = 1 - P(background)
    ys, xs = interior(CLOTHES, MARGIN)
    np.testing.assert_allclose(m[ys, xs, 1], (np.exp(8) + 1) / z, atol=1e-4)  # upper_clothes + dress
    np.testing.assert_allclose(m[ys, xs, 2], 1 / z, atol=1e-4)
    ys, xs = interior(HAIR, MARGIN)
    np.testing.assert_allclose(m[ys, xs, 2], np.exp(8) / z, atol=1e-4)
    np.testing.assert_allclose(m[outside(PERSON, MARGIN) & outside(HAIR, MARGIN), 0], 1 - np.exp(8) / z, atol=1e-4)


def test_unknown_class_names_the_model_classes():
    with pytest.raises(KsegError, match="no class 'upper_clothes'.*background, person"):
        MaskEstimator(FakeSegmenter(), names=("upper_clothes",))


def test_ema_on_alternating_input_has_the_hand_computed_amplitude():
    # steady state of m += w (x - m) for x = 1, 0, 1, 0...: high 1/(2-w), amplitude w/(2-w)
    w = 0.4
    sm = TemporalSmoother(strength=1 - w, adaptive=False)
    vals = [float(sm(np.full((2, 2), float(i % 2 == 0), np.float32))[0, 0]) for i in range(60)]
    hi, lo = max(vals[-2:]), min(vals[-2:])
    assert hi == pytest.approx(1 / (2 - w), abs=1e-5)
    assert hi - lo == pytest.approx(w / (2 - w), abs=1e-5)


def test_adaptive_smoothing_damps_wobble_but_follows_motion_at_once():
    sm = TemporalSmoother(strength=0.6, adaptive=True)
    sm(np.zeros((1, 1), np.float32))
    # a wobble of 0.1: weight (1 - 0.6) + 0.6 * 0.1 / 0.5 = 0.52
    assert float(sm(np.full((1, 1), 0.1, np.float32))[0, 0]) == pytest.approx(0.052, abs=1e-6)
    # a real movement (change ≥ 0.5) is taken whole
    assert float(sm(np.ones((1, 1), np.float32))[0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_guided_filter_keeps_constants_and_follows_guide_edges():
    rng = np.random.default_rng(0)
    guide = rng.random((32, 32)).astype(np.float32)
    np.testing.assert_allclose(guided_filter(guide, np.full((32, 32), 0.3, np.float32), 3, 1e-3), 0.3, atol=1e-5)
    # a step in both guide and input survives; a box blur of the same radius smears it
    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0
    q = guided_filter(step, step, 3, 1e-4)
    assert np.abs(q - step).max() < 0.02
    # a coarse (blocky) mask snaps to the guide's edge
    coarse = np.zeros((32, 32), np.float32)
    coarse[:, 14:] = 1.0
    q = guided_filter(step, coarse, 4, 1e-4)
    assert q[:, 16:].min() > 0.99 and q[:, :6].max() < 0.01
    assert (q[:, 16] - q[:, 15]).min() > 0.4  # the transition jumps where the guide's edge is


def test_estimator_flicker_reduced_by_smoothing():
    frame = textured_frame()

    class Flicker(FakeSegmenter):
        def logits(self, rgb):
            out = super().logits(rgb)
            out[..., 1] += 2.0 if self.calls % 2 else -2.0  # logit noise on a still scene
            return out

    def flicker(smoothing):
        est = MaskEstimator(Flicker(), smoothing=smoothing, adaptive=False, refine=False)
        ms = [est(frame).copy() for _ in range(12)]
        return np.mean([np.abs(a - b).mean() for a, b in zip(ms[6:], ms[7:])])

    raw, smooth = flicker(0.0), flicker(0.6)
    assert smooth < 0.5 * raw
    assert smooth == pytest.approx(raw * 0.4 / 1.6, rel=0.35)  # EMA amplitude ratio w/(2-w) for w=0.4


def test_person_gate_removes_parsing_masks_where_nobody_is():
    """Try-on's masks are multiplied by the person model's probability: clothes the parsing model
    'sees' where the person model sees nobody (walls, furniture) are dropped."""
    from kseg.errors import KsegError

    nobody_left = (112, 256, 128, 176)  # the person model finds a person only in the right part of the clothes
    gate = FakeSegmenter(regions={"person": nobody_left})
    est = MaskEstimator(parsing_segmenter(), names=("upper_clothes",), refine=False, smoothing=0, gate=gate)
    m = est(textured_frame())[..., 0]
    p_gate = np.exp(8) / (np.exp(8) + 1)
    p_clothes = np.exp(8) / (np.exp(8) + 7)
    ys, xs = interior(nobody_left, 8)
    np.testing.assert_allclose(m[ys, xs], p_clothes * p_gate, atol=1e-3)  # both agree: kept
    ys, xs = interior((112, 256, 80, 120), 8)  # clothes to the parsing model, nobody to the gate
    assert m[ys, xs].max() < 1e-3
    ungated = MaskEstimator(parsing_segmenter(), names=("upper_clothes",), refine=False, smoothing=0)(textured_frame())
    assert ungated[ys, xs, 0].min() > 0.99
    with pytest.raises(KsegError, match="no person class"):
        MaskEstimator(parsing_segmenter(), names=("hair",), gate=parsing_segmenter())


class SigmoidSegmenter(FakeSegmenter):
    """MediaPipe's head: one channel, the person logit l1 - l0 of the two-class fake."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.binary_sigmoid = True

    def logits(self, rgb):
        two = super().logits(rgb)
        return two[..., 1:] - two[..., :1]


@pytest.mark.parametrize("refine", [False, True])
def test_a_one_channel_sigmoid_model_gives_the_two_class_masks(refine):
    frame = textured_frame()
    two = MaskEstimator(FakeSegmenter(), refine=refine, smoothing=0.0)(frame)
    one = MaskEstimator(SigmoidSegmenter(), refine=refine, smoothing=0.0)(frame)
    np.testing.assert_allclose(one, two, atol=1e-5)
    # as try-on's person gate too
    gated = MaskEstimator(parsing_segmenter(), names=("upper_clothes",), refine=False, smoothing=0, gate=SigmoidSegmenter())
    reference = MaskEstimator(parsing_segmenter(), names=("upper_clothes",), refine=False, smoothing=0, gate=FakeSegmenter())
    np.testing.assert_allclose(gated(frame), reference(frame), atol=1e-5)
