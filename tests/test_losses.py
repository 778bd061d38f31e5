"""Losses against hand-computed values."""

import math

import keras
import numpy as np
import pytest

from kseg import losses as L
from kseg.errors import KsegError

# one image, 2x2 pixels, 2 classes; labels [[0, 1], [1, 255]]
Y = np.array([[[0, 1], [1, 255]]], np.int32)
LOGITS = np.array([[[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [5.0, -5.0]]]], np.float32)


def _p(a, b):  # softmax probability of the first of two logits
    return math.exp(a) / (math.exp(a) + math.exp(b))


# per-pixel CE for the three valid pixels
CE0 = -math.log(_p(2, 0))
CE1 = -math.log(_p(1, 0))
CE2 = -math.log(0.5)


def test_cross_entropy_by_hand():
    got = float(L.SparseCategoricalCrossEntropy()(Y, LOGITS))
    assert got == pytest.approx((CE0 + CE1 + CE2) / 3, rel=1e-6)


def test_ignored_pixels_have_no_effect():
    other = LOGITS.copy()
    other[0, 1, 1] = [-30.0, 40.0]
    for loss in (L.SparseCategoricalCrossEntropy(), L.DiceLoss(2), L.FocalLoss(), L.CEDiceLoss(2)):
        assert float(loss(Y, LOGITS)) == pytest.approx(float(loss(Y, other)), rel=1e-6)


def test_weighted_cross_entropy_by_hand():
    w = [0.5, 2.0]
    got = float(L.SparseCategoricalCrossEntropy(class_weights=w)(Y, LOGITS))
    assert got == pytest.approx((0.5 * CE0 + 2 * CE1 + 2 * CE2) / (0.5 + 2 + 2), rel=1e-6)


def test_label_smoothing_by_hand():
    eps = 0.2
    got = float(L.SparseCategoricalCrossEntropy(label_smoothing=eps)(Y, LOGITS))
    def sm(a, b, y):  # target (1-eps) onehot + eps/2
        lp = [math.log(_p(a, b)), math.log(_p(b, a))]
        t = [eps / 2, eps / 2]
        t[y] += 1 - eps
        return -(t[0] * lp[0] + t[1] * lp[1])
    want = (sm(2, 0, 0) + sm(0, 1, 1) + sm(1, 1, 1)) / 3
    assert got == pytest.approx(want, rel=1e-6)


def test_dice_by_hand_including_absent_class():
    p0 = [_p(2, 0), _p(0, 1), 0.5]  # P(class 0) at the valid pixels
    p1 = [1 - v for v in p0]
    t0, t1 = [1, 0, 0], [0, 1, 1]
    d0 = (2 * sum(a * b for a, b in zip(p0, t0)) + 1) / (sum(p0) + sum(t0) + 1)
    d1 = (2 * sum(a * b for a, b in zip(p1, t1)) + 1) / (sum(p1) + sum(t1) + 1)
    assert float(L.DiceLoss(2)(Y, LOGITS)) == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    # a third class absent from truth and (nearly) from prediction scores ~1 and costs ~nothing
    logits3 = np.concatenate([LOGITS, np.full((1, 2, 2, 1), -40.0, np.float32)], -1)
    d2 = (0 + 1) / (0 + 0 + 1)
    assert float(L.DiceLoss(3)(Y, logits3)) == pytest.approx(1 - (d0 + d1 + d2) / 3, rel=1e-5)


def test_focal_by_hand_and_gamma_zero_is_ce():
    py = [_p(2, 0), _p(1, 0), 0.5]
    want = sum(-(1 - p) ** 2 * math.log(p) for p in py) / 3
    assert float(L.FocalLoss(gamma=2.0)(Y, LOGITS)) == pytest.approx(want, rel=1e-6)
    assert float(L.FocalLoss(gamma=0.0)(Y, LOGITS)) == pytest.approx((CE0 + CE1 + CE2) / 3, rel=1e-6)
    alpha = [0.25, 0.75]
    want_a = (0.25 * -(1 - py[0]) ** 2 * math.log(py[0]) + 0.75 * -(1 - py[1]) ** 2 * math.log(py[1])
              + 0.75 * -(1 - py[2]) ** 2 * math.log(py[2])) / 3
    assert float(L.FocalLoss(alpha=alpha)(Y, LOGITS)) == pytest.approx(want_a, rel=1e-6)


def test_ce_dice_is_the_sum():
    ce = float(L.SparseCategoricalCrossEntropy()(Y, LOGITS))
    dice = float(L.DiceLoss(2)(Y, LOGITS))
    assert float(L.CEDiceLoss(2, ce_weight=1.0, dice_weight=0.5)(Y, LOGITS)) == pytest.approx(ce + 0.5 * dice, rel=1e-6)


def test_perfect_prediction_is_the_minimum():
    y = np.array([[[0, 1], [1, 0]]], np.int32)
    logits = np.where(np.eye(2, dtype=bool)[y], 30.0, -30.0).astype(np.float32)
    assert float(L.SparseCategoricalCrossEntropy()(y, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.DiceLoss(2)(y, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.FocalLoss()(y, logits)) == pytest.approx(0.0, abs=1e-6)


def test_median_frequency_weights_by_hand():
    # two images: image A has 6 px of class 0 and 2 px of class 1; image B has 8 px of class 0
    masks = [np.array([[0, 0, 0, 0], [0, 0, 1, 1]]), np.array([[0, 0, 0, 0], [0, 0, 0, 0]]),
             np.array([[255, 255]])]
    counts, present = L.class_pixel_counts(masks, 3)
    assert list(counts) == [14, 2, 0] and list(present) == [16, 8, 0]
    w = L.compute_class_weights(counts, "median_frequency", present)
    f0, f1 = 14 / 16, 2 / 8
    med = (f0 + f1) / 2
    np.testing.assert_allclose(w, [med / f0, med / f1, 0.0], rtol=1e-6)
    inv = L.compute_class_weights(counts, "inverse_frequency")
    raw = np.array([16 / 14, 16 / 2])
    np.testing.assert_allclose(inv[:2], raw / raw.mean(), rtol=1e-6)
    assert inv[2] == 0.0
    # softened balancing: each weight to the power, absent classes stay 0, inverse renormalised
    sq = L.compute_class_weights(counts, "median_frequency", present, power=0.5)
    np.testing.assert_allclose(sq, [(med / f0) ** 0.5, (med / f1) ** 0.5, 0.0], rtol=1e-6)
    inv_sq = L.compute_class_weights(counts, "inverse_frequency", power=0.5)
    np.testing.assert_allclose(inv_sq[:2], raw ** 0.5 / (raw ** 0.5).mean(), rtol=1e-6)
    with pytest.raises(KsegError, match="power must be > 0"):
        L.compute_class_weights(counts, "median_frequency", present, power=0)


def test_serialization_round_trip():
    for loss in (L.SparseCategoricalCrossEntropy(class_weights=[1, 2], label_smoothing=0.1),
                 L.DiceLoss(2, smooth=0.5), L.FocalLoss(gamma=1.5, alpha=[0.3, 0.7]), L.CEDiceLoss(2, dice_weight=0.3)):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(again) is type(loss) and again.get_config() == loss.get_config()
        assert float(again(Y, LOGITS)) == pytest.approx(float(loss(Y, LOGITS)), rel=1e-6)


def test_get_loss_errors():
    with pytest.raises(KsegError, match="unknown loss"):
        L.get_loss("dicey")
    with pytest.raises(KsegError, match="needs class weights"):
        L.get_loss("weighted_ce")


def test_float16_logits_give_float32_loss_of_the_same_value():
    half = LOGITS.astype(np.float16)  # these logits are exact in float16
    for loss in (L.SparseCategoricalCrossEntropy(), L.DiceLoss(2), L.FocalLoss(), L.CEDiceLoss(2)):
        out = loss(Y, half)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        assert float(out) == pytest.approx(float(loss(Y, LOGITS)), rel=1e-6)


def test_labels_with_a_channel_axis_and_uint8():
    y = Y.astype(np.uint8)[..., None]  # (B, H, W, 1) uint8, 255 still ignored
    assert float(L.SparseCategoricalCrossEntropy()(y, LOGITS)) == pytest.approx((CE0 + CE1 + CE2) / 3, rel=1e-6)


def test_all_pixels_ignored_gives_zero_not_nan():
    y = np.full((1, 2, 2), 255, np.int32)
    for loss in (L.SparseCategoricalCrossEntropy(class_weights=[1, 2]), L.FocalLoss()):
        assert float(loss(y, LOGITS)) == 0.0
    assert float(L.DiceLoss(2)(y, LOGITS)) == pytest.approx(0.0, abs=1e-7)  # every class (0+1)/(0+1)


def test_get_loss_by_name():
    assert isinstance(L.get_loss("ce", num_classes=3), L.SparseCategoricalCrossEntropy)
    assert L.get_loss("weighted_ce", class_weights=[1, 2]).class_weights == [1.0, 2.0]
    assert L.get_loss("focal", num_classes=2, class_weights=[0.25, 0.75]).alpha == [0.25, 0.75]
    assert L.get_loss("dice", num_classes=2, class_weights=None).class_weights is None
    ce_dice = L.get_loss("ce_dice", num_classes=2, dice_weight=0.5)
    assert isinstance(ce_dice, L.CEDiceLoss) and ce_dice.dice_weight == 0.5
    from kseg.errors import KsegError
    with pytest.raises(KsegError, match="needs num_classes"):
        L.get_loss("dice")


def test_class_pixel_counts_streams_tf_batches_and_channel_masks():
    import tensorflow as tf

    batch = tf.constant([[[0, 0], [1, 255]], [[2, 2], [2, 2]]], tf.uint8)  # two images in one batch
    single = np.array([[1], [1]], np.uint8)[..., None]  # one (H, W, 1) = (2, 1, 1) mask
    counts, present = L.class_pixel_counts([batch, single], 3)
    # image 1: 0,0,1 (3 valid px); image 2: 2,2,2,2 (4 px); image 3: 1,1 (2 px)
    assert list(counts) == [2, 3, 4] and list(present) == [3, 3 + 2, 4]


def test_unknown_class_weight_method():
    from kseg.errors import KsegError
    with pytest.raises(KsegError, match="median_frequency or inverse_frequency"):
        L.compute_class_weights([1, 2], "sqrt")
    with pytest.raises(KsegError, match="no labelled pixel"):
        L.compute_class_weights([0, 0])


def test_train_class_weight_power_softens_the_configs_weights(tmp_path, capsys):
    from kseg.config import load_config
    from kseg.data.readers import open_dataset
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.train import dataset_class_weights, make_loss

    data = tmp_path / "shapes"
    write_shapes_dataset(data, 8, size=(32, 32), num_classes=3, seed=8)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: shapes\ndata:\n  train:\n    - {{path: {data}, format: masks}}\n  size: [32, 32]\n"
                   "train:\n  loss: ce\n  class_weights: median_frequency\n  class_weight_power: 0.5\n")
    train_set = open_dataset(data, "masks")
    loss = make_loss(load_config(cfg), 3, train_set)
    full = dataset_class_weights(train_set, 3, "median_frequency")
    assert not np.allclose(full, full[0])
    np.testing.assert_allclose(loss.get_config()["class_weights"], full ** 0.5, rtol=1e-5)
    assert "class weights (median_frequency, power 0.5)" in capsys.readouterr().err


def _lovasz_term(probs_c, fg):
    """One class's Lovász term (Berman et al.'s reference, numpy): errors sorted in decreasing
    order, weighted by the Lovász extension's gradient of the Jaccard loss."""
    errors = np.abs(fg - probs_c)
    order = np.argsort(-errors, kind="stable")
    fg_sorted = fg[order]
    gts = fg_sorted.sum()
    jaccard = 1.0 - (gts - np.cumsum(fg_sorted)) / (gts + np.cumsum(1.0 - fg_sorted))
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.dot(errors[order], jaccard))


def _lovasz_reference(probs, labels, ignore=255):
    """Berman et al.'s lovasz_softmax_flat (classes='present') in numpy, one image or one batch."""
    keep = labels != ignore
    probs, labels = probs[keep], labels[keep]
    terms = [_lovasz_term(probs[:, c], (labels == c).astype(np.float64))
             for c in range(probs.shape[1]) if (labels == c).any()]
    return float(np.mean(terms)) if terms else None


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_lovasz_matches_the_papers_reference_per_image_and_per_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 5, 4)).astype(np.float32) * 2
    y = rng.integers(0, 4, size=(3, 6, 5)).astype(np.int32)
    y[0][y[0] == 3] = 2                       # image 0 lacks class 3: left out of its mean
    y[1, :2] = 255                             # ignored pixels
    probs = _softmax(logits.astype(np.float64))
    per_image = np.mean([_lovasz_reference(probs[b], y[b]) for b in range(3)])
    assert float(L.LovaszSoftmaxLoss()(y, logits)) == pytest.approx(per_image, rel=1e-5)
    batch = _lovasz_reference(probs.reshape(-1, 4), y.reshape(-1))
    assert float(L.LovaszSoftmaxLoss(per_image=False)(y, logits)) == pytest.approx(batch, rel=1e-5)
    # probabilities in, the same value
    assert float(L.LovaszSoftmaxLoss(from_logits=False)(y, probs.astype(np.float32))) == pytest.approx(per_image, rel=1e-5)


def test_lovasz_on_crisp_predictions_is_one_minus_the_mean_iou():
    y = np.array([[[0, 0, 1, 1], [0, 1, 1, 255]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.int32)
    pred = np.array([[[0, 1, 1, 1], [0, 0, 1, 1]], [[0, 0, 1, 0], [0, 0, 0, 0]]])
    logits = np.where(np.eye(2, dtype=bool)[pred], 40.0, -40.0).astype(np.float32)
    # image 0: background IoU 2/4, person IoU 3/5 (the ignored pixel counts for neither);
    # image 1: only background is present, IoU 7/8; the false person pixel costs through it
    expected = ((1 - 2 / 4) + (1 - 3 / 5)) / 2 / 2 + (1 - 7 / 8) / 2
    assert float(L.LovaszSoftmaxLoss()(y, logits)) == pytest.approx(expected, abs=1e-6)
    perfect = np.where(np.eye(2, dtype=bool)[np.where(y == 255, 0, y)], 40.0, -40.0).astype(np.float32)
    assert float(L.LovaszSoftmaxLoss()(y, perfect)) == pytest.approx(0.0, abs=1e-6)


def test_lovasz_ignores_what_it_should_and_weights_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=(1, 4, 4)).astype(np.int32)
    y[0, 0] = 255
    changed = logits.copy()
    changed[0, 0] = rng.normal(size=(4, 3)) * 10      # the ignored pixels' logits do not matter
    loss = L.LovaszSoftmaxLoss()
    assert float(loss(y, changed)) == pytest.approx(float(loss(y, logits)), rel=1e-6)
    assert float(loss(np.full((1, 4, 4), 255, np.int32), logits)) == 0.0
    # class weights weight the per-class terms: weight only class 1 and the loss is its term
    only1 = float(L.LovaszSoftmaxLoss(class_weights=[0, 1, 0])(y, logits))
    probs = _softmax(logits.astype(np.float64))[0].reshape(-1, 3)
    keep = y.reshape(-1) != 255
    fg = (y.reshape(-1)[keep] == 1).astype(np.float64)
    assert only1 == pytest.approx(_lovasz_term(probs[keep, 1], fg), rel=1e-5)


def test_lovasz_gradient_lowers_the_loss_and_ce_lovasz_is_the_sum():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(2, 8, 8)).astype(np.int32)
    logits = tf.Variable(rng.normal(size=(2, 8, 8, 2)).astype(np.float32))
    loss = L.LovaszSoftmaxLoss()
    with tf.GradientTape() as tape:
        before = loss(y, logits)
    grad = tape.gradient(before, logits)
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0
    logits.assign_sub(5.0 * grad)
    assert float(loss(y, logits)) < float(before)
    ce = float(L.SparseCategoricalCrossEntropy()(Y, LOGITS))
    lov = float(L.LovaszSoftmaxLoss()(Y, LOGITS))
    mixed = L.CELovaszLoss(ce_weight=1.0, lovasz_weight=0.5)
    assert float(mixed(Y, LOGITS)) == pytest.approx(ce + 0.5 * lov, rel=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(mixed))
    assert again.get_config() == mixed.get_config()
    by_name = L.get_loss("ce_lovasz", num_classes=2, class_weights=[1, 2], per_image=False)
    assert isinstance(by_name, L.CELovaszLoss) and by_name.class_weights == [1.0, 2.0] and not by_name.per_image
    assert isinstance(L.get_loss("lovasz", num_classes=2), L.LovaszSoftmaxLoss)
