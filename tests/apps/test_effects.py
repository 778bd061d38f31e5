"""Effects over short clips with a fake segmenter whose masks are known rectangles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from apps.common.pipeline import Pipeline
from apps.common.refine import MaskEstimator
from apps.common.sources import ArraySource
from apps.effects import BackgroundSwap, Compositor, MaskOverlay, Portrait, TryOn, disc_kernel, make_effect, recolor
from kseg.errors import KsegError
from tests.apps.fakes import (
    MARGIN, CLOTHES, H, HAIR, PERSON, SKIN, W, FakeSegmenter, ListSink, interior, outside, parsing_segmenter, textured_frame,
)

CLIP = [textured_frame(seed=i) for i in range(6)]


def run_clip(effect, segmenter=None, frames=CLIP, threaded=False):
    seg = segmenter or FakeSegmenter()
    est = MaskEstimator(seg, names=effect.needs)
    sink = ListSink()
    stats = Pipeline(ArraySource(frames), [sink], effect, est, threaded=threaded).run()
    assert stats.frames == len(frames) and sink.closed
    return sink.frames


def test_compositor_is_exact_at_0_and_1_and_averages_at_half():
    rng = np.random.default_rng(0)
    fg, bg = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    comp = Compositor()
    np.testing.assert_array_equal(comp(fg, bg, np.ones((8, 8), np.float32)), fg)
    np.testing.assert_array_equal(comp(fg, bg, np.zeros((8, 8), np.float32)), bg)
    half = comp(fg, bg, np.full((8, 8), 0.5, np.float32)).astype(int)
    assert np.abs(half - (fg.astype(int) + bg) / 2).max() <= 1.5


def test_disc_kernel_is_a_normalized_round_disc():
    k = disc_kernel(3)
    assert k.shape == (7, 7)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1])
    assert k[0, 0] == 0 and k[3, 3] == k.max()  # corners outside the disc, flat inside
    assert k[3, 0] > 0  # the rim at distance 3 is (partly) inside


def test_portrait_keeps_person_and_blurs_background():
    outs = run_clip(Portrait(strength=0.8))
    for frame, out in zip(CLIP, outs):
        ys, xs = interior(PERSON, MARGIN)
        assert np.abs(out[ys, xs].astype(int) - frame[ys, xs]).max() <= 1
        bg = outside(PERSON, MARGIN)
        diff = np.abs(out[bg].astype(int) - frame[bg]).mean()
        assert diff > 30  # noise of std ~74 blurred to its local mean
        # blurred: the background's pixel-to-pixel variation collapses
        assert np.abs(np.diff(out.astype(int), axis=1))[bg[:, 1:]].mean() < 0.3 * np.abs(
            np.diff(frame.astype(int), axis=1))[bg[:, 1:]].mean()


def test_portrait_strength_zero_changes_nothing_much_and_more_strength_blurs_more():
    frame = CLIP[0]
    masks = np.zeros((H, W, 1), np.float32)
    bg = np.ones((H, W), bool)
    errs = [np.abs(Portrait(strength=s).apply(frame, masks).astype(int) - frame)[bg].mean() for s in (0.2, 0.5, 1.0)]
    assert errs[0] < errs[1] < errs[2]


def test_swap_colour_replaces_background_exactly_and_keeps_person():
    outs = run_clip(BackgroundSwap("0,177,64"))
    for frame, out in zip(CLIP, outs):
        ys, xs = interior(PERSON, MARGIN)
        np.testing.assert_array_equal(out[ys, xs], frame[ys, xs])
        assert (out[outside(PERSON, MARGIN)] == (0, 177, 64)).all()


def test_swap_image_and_video_backgrounds(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (255, 0, 0)  # left half red (RGB), right half black
    cv2.imwrite(str(tmp_path / "bg.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = BackgroundSwap(str(tmp_path / "bg.png")).apply(CLIP[0], np.zeros((H, W, 1), np.float32))
    # 48×64 scaled by 16/3 to 256×341 and centre-cropped by 42 columns: red ends at column 128.7
    assert (out[:, :124] == (255, 0, 0)).all() and (out[:, 134:] == 0).all()

    writer = cv2.VideoWriter(str(tmp_path / "bg.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for v in (0, 250):
        writer.write(np.full((48, 64, 3), v, np.uint8))
    writer.release()
    swap = BackgroundSwap(str(tmp_path / "bg.avi"))
    means = [swap.apply(CLIP[0], np.zeros((H, W, 1), np.float32)).mean() for _ in range(3)]
    swap.close()
    assert means[0] < 10 and means[1] > 240 and means[2] < 10  # frame 0, 1, then looped to 0


@pytest.mark.parametrize("bad", ["missing.png", "broken.png"])
def test_swap_unreadable_background_image_is_one_line_error(tmp_path, bad):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(KsegError, match="background image") as e:
        BackgroundSwap(str(tmp_path / bad))
    assert "\n" not in str(e.value)


def test_bad_colour_is_one_line_error():
    with pytest.raises(KsegError, match="not a colour"):
        make_effect("tryon", color="#12345")


def test_tryon_changes_only_clothes_and_keeps_shading():
    effect = TryOn(color="#2a6fdb")
    outs = run_clip(effect, parsing_segmenter())
    target_lab = cv2.cvtColor(np.array([[[0x2A, 0x6F, 0xDB]]], np.uint8), cv2.COLOR_RGB2LAB)[0, 0].astype(int)
    for frame, out in zip(CLIP, outs):
        keep = outside(CLOTHES, MARGIN)
        np.testing.assert_array_equal(out[keep], frame[keep])  # background, hair, face untouched
        ys, xs = interior(CLOTHES, MARGIN)
        lab_in = cv2.cvtColor(frame[ys, xs], cv2.COLOR_RGB2LAB).astype(float)
        lab_out = cv2.cvtColor(out[ys, xs], cv2.COLOR_RGB2LAB).astype(float)
        # colour moved to the target's chroma (orange a,b ≈ (165, 190) → blue ≈ (138, 76))
        assert np.abs(lab_out[..., 1:].mean((0, 1)) - target_lab[1:]).max() < 8
        # shading kept: lightness still ramps left→right as before
        corr = np.corrcoef(lab_in[..., 0].ravel(), lab_out[..., 0].ravel())[0, 1]
        assert corr > 0.98
        assert np.ptp(lab_out[..., 0].mean(0)) > 0.7 * np.ptp(lab_in[..., 0].mean(0))


def test_tryon_hair_colour_changes_hair_only():
    outs = run_clip(TryOn(color="#2a6fdb", hair_color="#e8c07d"), parsing_segmenter())
    frame, out = CLIP[-1], outs[-1]
    ys, xs = interior(HAIR, 6)
    assert np.abs(out[ys, xs].astype(int) - frame[ys, xs]).mean() > 15
    keep = outside(CLOTHES, MARGIN) & outside(HAIR, MARGIN)
    np.testing.assert_array_equal(out[keep], frame[keep])
    ys, xs = interior(SKIN, MARGIN)
    np.testing.assert_array_equal(out[ys, xs], frame[ys, xs])


def test_recolor_keeps_lightness_deviations():
    ramp = np.repeat(np.linspace(60, 220, 32, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(4, 0)
    out = recolor(ramp, np.ones(ramp.shape[:2], np.float32), "#d62839", lightness=0.0)
    l_in = cv2.cvtColor(ramp, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
    l_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
    assert np.abs(l_out - l_in)[:, 4:-4].mean() < 8  # lightness=0: L preserved (up to gamut clipping)


def test_mask_overlay_tints_background_only():
    outs = run_clip(MaskOverlay(strength=0.6, color="#ff0000"))
    frame, out = CLIP[0], outs[0]
    ys, xs = interior(PERSON, MARGIN)
    np.testing.assert_array_equal(out[ys, xs], frame[ys, xs])
    bg = outside(PERSON, MARGIN)
    expected = 0.4 * frame[bg].astype(float) + 0.6 * np.array([255, 0, 0])
    assert np.abs(out[bg] - expected).mean() < 1.5


def test_no_person_in_view_is_graceful():
    nobody = FakeSegmenter(regions={})
    est = MaskEstimator(nobody)
    masks = est(CLIP[0])
    assert masks.max() < 0.01 and est.person_fraction < 0.01
    out = Portrait(0.8).apply(CLIP[0], masks)
    assert np.isfinite(out).all() and np.abs(out.astype(int) - CLIP[0]).mean() > 30  # everything blurred
    parse_nobody = FakeSegmenter(parsing_segmenter().class_names, regions={})
    pm = MaskEstimator(parse_nobody, names=TryOn.needs)(CLIP[0])
    np.testing.assert_array_equal(TryOn().apply(CLIP[0], pm), CLIP[0])


def test_threaded_and_sequential_pipelines_give_the_same_frames():
    a = run_clip(Portrait(0.5), threaded=False)
    b = run_clip(Portrait(0.5), threaded=True)
    assert len(a) == len(b) == len(CLIP)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_tryon_texture_puts_the_pattern_on_the_clothes_only(tmp_path):
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, :4] = (20, 60, 200)  # blue | white vertical stripes, 4 px each
    stripes[:, 4:] = (240, 240, 240)
    cv2.imwrite(str(tmp_path / "t.png"), cv2.cvtColor(stripes, cv2.COLOR_RGB2BGR))
    outs = run_clip(TryOn(texture=str(tmp_path / "t.png")), parsing_segmenter())
    frame, out = CLIP[0], outs[0]
    keep = outside(CLOTHES, MARGIN)
    np.testing.assert_array_equal(out[keep], frame[keep])
    ys, xs = interior(CLOTHES, MARGIN)
    lab = cv2.cvtColor(out[ys, xs], cv2.COLOR_RGB2LAB).astype(int)
    cols = np.arange(xs.start, xs.stop)
    blue = (cols % 8) < 4  # tiled from the frame's origin
    # blue stripes have a strongly negative b* (LAB b < 128), white ones neutral
    assert lab[:, blue, 2].mean() < 100 and abs(lab[:, ~blue, 2].mean() - 128) < 12


def test_tryon_unreadable_texture_is_one_line_error(tmp_path):
    with pytest.raises(KsegError, match="texture image .*not found"):
        TryOn(texture=str(tmp_path / "none.png"))


def test_mask_overlay_colours_each_instance():
    """Two people side by side (the right one scoring lower, overlapping the left by 8 columns)
    and a third detection lying inside the first: two colours, the overlap to the better score,
    the hidden detection dropped (kseg.runtime.combine_panoptic); the detector in the frame
    path (threaded=False), so the first frame has its detection."""
    from kseg.runtime import instance_colors

    y0, y1, x0, x1 = PERSON

    def detector(rgb):
        masks = np.zeros((3, H, W), np.uint8)
        masks[0, y0:y1, x0:128] = 1
        masks[1, y0:y1, 120:x1] = 1
        masks[2, y0 + 20:y0 + 60, x0:100] = 1
        return {"masks": masks, "scores": np.array([0.9, 0.8, 0.7]), "boxes": np.zeros((3, 4))}

    effect = MaskOverlay(strength=0.6, color="#ff0000", instances=detector, threaded=False)
    outs = run_clip(effect, frames=CLIP[:2])
    frame, out = CLIP[0], outs[0]
    c0, c1 = instance_colors(2).astype(float)
    assert np.abs(c0 - c1).sum() > 100
    # the semantic mask (the PERSON rectangle, soft for a few pixels) shared at column 128
    assert [p["id"] for p in effect.people] == [1, 2]
    for p, want in zip(effect.people, [(y1 - y0) * (128 - x0), (y1 - y0) * (x1 - 128)]):
        assert abs(p["area"] - want) < 0.05 * want
    rows = slice(y0 + MARGIN, y1 - MARGIN)
    for cols, c in ((slice(x0 + 8, 118), c0), (slice(121, 124), c0), (slice(132, x1 - 8), c1)):
        want = np.rint(0.5 * frame[rows, cols].astype(float) + 0.5 * c)
        assert np.abs(out[rows, cols].astype(float) - want).max() <= 1, cols
    bg = outside(PERSON, MARGIN)
    expected = 0.4 * frame[bg].astype(float) + 0.6 * np.array([255, 0, 0])
    assert np.abs(out[bg] - expected).mean() < 1.5  # the background as without instances
    assert effect.describe().endswith("2 people")
    effect.close()
