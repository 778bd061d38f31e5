"""The apps with the shipped models on the bundled clip (skipped until exports/ has them)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from apps.common.refine import MaskEstimator
from apps.common.sources import VideoSource
from apps.effects import TryOn

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "book.mkv"
PORTRAIT = REPO / "exports" / "portrait.tflite"
PARSING = REPO / "exports" / "parsing.tflite"


def clip_frames(n=12):
    with VideoSource(CLIP) as src:
        return [f.copy() for _, f in zip(range(n), src)]


@pytest.mark.skipif(not PORTRAIT.is_file(), reason="exports/portrait.tflite not shipped yet")
def test_portrait_model_finds_the_signer():
    from kseg.runtime import Segmenter

    est = MaskEstimator(Segmenter(PORTRAIT, num_threads=2))
    for frame in clip_frames():
        m = est(frame)[..., 0]
    # the signer stands in the middle: person in the centre column, wall in the top corners
    assert m[200:460, 280:360].mean() > 0.9
    assert m[:120, :120].mean() < 0.05 and m[:120, -120:].mean() < 0.05
    assert 0.1 < est.person_fraction < 0.4


@pytest.mark.skipif(not PARSING.is_file(), reason="exports/parsing.tflite not shipped yet")
def test_tryon_with_the_parsing_model_recolours_the_jumper_only():
    from kseg.runtime import Segmenter

    est = MaskEstimator(Segmenter(PARSING, num_threads=2), names=TryOn.needs)
    effect = TryOn(color="#2a6fdb")
    for frame in clip_frames():
        masks = est(frame)
        out = effect.apply(frame, masks)
    clothes = masks[..., 0]
    far = clothes == 0
    assert far.mean() > 0.5
    np.testing.assert_array_equal(out[far], frame[far])  # where the clothes mask is 0 nothing changes
    core = clothes > 0.9  # confident: parsing_v2 (class-weighted CE + Dice) is less peaked than CE alone
    assert core.sum() > 5000  # the orange jumper is found
    hue_in = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)[..., 0][core].astype(int)
    hue_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 0][core].astype(int)
    assert np.median(hue_in) < 30 and 95 < np.median(hue_out) < 125  # orange → blue (OpenCV hue 0..179)


SELFIE_FAST = REPO / "exports" / "portrait-selfie-fast.tflite"
SELFIE_FAST_F16 = REPO / "exports" / "portrait-selfie-fast-float16.tflite"


@pytest.mark.skipif(not SELFIE_FAST_F16.is_file(), reason="exports/portrait-selfie-fast-float16.tflite not shipped")
def test_model_list_keeps_the_fastest_export_and_it_finds_the_signer(monkeypatch):
    """``--model A,B``: both files are timed on this CPU and the app runs the faster; either finds the signer."""
    from apps.webcam import App

    monkeypatch.chdir(REPO)
    app = App(model=f"exports/{SELFIE_FAST.name}, exports/{SELFIE_FAST_F16.name}", parsing_model=None,
              fast_model=None, threads=1)
    kept = app.person_models[0]
    seg = app.segmenter(kept)
    assert seg.path == kept and kept.resolve() in (SELFIE_FAST, SELFIE_FAST_F16)
    assert {p.resolve() for p in seg.timings_ms} == {SELFIE_FAST, SELFIE_FAST_F16}
    assert app.model_choice.startswith(f"model: {kept.name}, the fastest here (") and SELFIE_FAST_F16.name in app.model_choice
    est = app.estimator()
    for frame in clip_frames():
        m = est(frame)[..., 0]
    assert m[200:460, 280:360].mean() > 0.9 and m[:120, :120].mean() < 0.05


def test_model_list_with_a_missing_file_is_one_line(monkeypatch):
    from apps.webcam import App
    from kseg.errors import KsegError

    monkeypatch.chdir(REPO)
    with pytest.raises(KsegError, match=r"model .*no-such\.tflite not found \(--model exports/portrait\.tflite,no-such\.tflite\)"):
        App(model="exports/portrait.tflite,no-such.tflite", parsing_model=None, fast_model=None)
