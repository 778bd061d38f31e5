"""Metrics against hand-computed values."""

import keras
import numpy as np
import pytest

from kseg import metrics as M

# truth / prediction over 8 pixels (one 255), 3 classes; class 2 never appears in the truth
T = np.array([[[0, 0, 1, 1], [1, 0, 255, 1]]], np.int32)
P = np.array([[[0, 1, 1, 1], [2, 0, 0, 1]]], np.int32)
# valid pixels (t, p): (0,0) (0,1) (1,1) (1,1) (1,2) (0,0) (1,1)
CM = np.array([[2, 1, 0], [0, 3, 1], [0, 0, 0]])


def test_confusion_matrix_numpy_and_keras():
    np.testing.assert_array_equal(M.confusion_matrix(T, P, 3), CM)
    m = M.ConfusionMatrix(3)
    m.update_state(T, P)
    np.testing.assert_array_equal(np.asarray(m.result()), CM)


def test_scores_by_hand():
    s = M.scores_from_confusion(CM)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    iou = [2 / 3, 3 / 5, 0.0]  # class 2: tp 0, union 1 (predicted once)
    np.testing.assert_allclose(s["per_class_iou"], iou)
    assert s["miou"] == pytest.approx(sum(iou) / 3)
    np.testing.assert_allclose(s["per_class_dice"], [4 / 5, 6 / 8, 0.0])
    assert s["class_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)  # class 2 not in truth


def test_keras_metrics_match_numpy_and_accept_logits():
    logits = np.eye(3, dtype=np.float32)[P] * 5.0
    s = M.scores_from_confusion(CM)
    for metric, want in ((M.MeanIoU(3), s["miou"]), (M.PixelAccuracy(3), s["pixel_accuracy"]),
                         (M.ClassAverageAccuracy(3), s["class_accuracy"]), (M.MeanDice(3), s["mean_dice"])):
        metric.update_state(T, logits)
        assert float(metric.result()) == pytest.approx(want, rel=1e-6), metric.name
    per = M.PerClassIoU(3)
    per.update_state(T, P)
    np.testing.assert_allclose(np.asarray(per.result()), [2 / 3, 3 / 5, 0.0], rtol=1e-6)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    t = np.array([[0, 1]]); p = np.array([[0, 1]])
    m = M.MeanIoU(5)
    m.update_state(t, p)
    assert float(m.result()) == pytest.approx(1.0)  # classes 2..4 never seen: not counted as 0
    assert np.isnan(M.scores_from_confusion(M.confusion_matrix(t, p, 5))["per_class_iou"][3])


def test_streaming_equals_one_batch_and_reset():
    m = M.MeanIoU(3)
    m.update_state(T[:, :1], P[:, :1])
    m.update_state(T[:, 1:], P[:, 1:])
    assert float(m.result()) == pytest.approx(M.scores_from_confusion(CM)["miou"], rel=1e-6)
    m.reset_state()
    assert float(np.asarray(m.cm).sum()) == 0.0


def test_metric_serialization_and_fit_step():
    import kseg.losses as L

    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(M.MeanIoU(4)))
    assert isinstance(again, M.MeanIoU) and again.num_classes == 4
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile("adam", loss=L.CEDiceLoss(3), metrics=[M.MeanIoU(3), M.PixelAccuracy(3)])
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (4, 8, 8)).astype("int32")
    y[0, 0, 0] = 255
    h = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert 0.0 <= h.history["mean_iou"][0] <= 1.0 and "pixel_accuracy" in h.history
