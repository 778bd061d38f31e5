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


def test_counts_are_exact_past_float32_range():
    m = M.ConfusionMatrix(2)
    if keras.backend.standardize_dtype(m.cm.dtype) != "float64":
        pytest.skip("float64 counts need jax_enable_x64 under JAX")
    m.update_state(np.array([[0]]), np.array([[0]]), sample_weight=np.array([2.0**24]))
    m.update_state(np.array([[0]]), np.array([[0]]))
    assert float(np.asarray(m.cm)[0, 0]) == 2.0**24 + 1  # float32 would stay at 2**24


def test_channel_axis_labels_sample_weights_and_float16_logits():
    logits16 = (np.eye(3, dtype=np.float16)[P] * 5).astype(np.float16)
    m = M.ConfusionMatrix(3)
    m.update_state(T[..., None].astype(np.uint8), logits16)  # (B, H, W, 1) uint8 labels
    np.testing.assert_array_equal(np.asarray(m.result()), CM)
    # per-image weights: the batch twice, second image weighted 0 -> the same matrix
    w = M.ConfusionMatrix(3)
    w.update_state(np.concatenate([T, T]), np.concatenate([P, P]), sample_weight=np.array([1.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(w.result()), CM)


def test_changing_predictions_at_ignored_pixels_changes_nothing():
    p2 = P.copy()
    p2[0, 1, 2] = 2  # the pixel whose truth is 255
    np.testing.assert_array_equal(M.confusion_matrix(T, p2, 3), CM)
    m = M.MeanIoU(3)
    m.update_state(T, p2)
    assert float(m.result()) == pytest.approx(M.scores_from_confusion(CM)["miou"], rel=1e-6)


def test_perfect_prediction_scores_one():
    s = M.scores_from_confusion(M.confusion_matrix(T, np.where(T == 255, 0, T), 3))
    assert s["miou"] == s["pixel_accuracy"] == s["mean_dice"] == s["class_accuracy"] == 1.0


def test_saved_model_round_trip_without_custom_objects(tmp_path):
    import kseg.losses as L

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile("adam", loss=L.CEDiceLoss(3, dice_weight=0.5, class_weights=[1, 2, 3]),
                  metrics=[M.MeanIoU(3), M.PixelAccuracy(3), M.MeanDice(3), M.ClassAverageAccuracy(3)])
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, 4, 4)).astype("int32")
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects
    assert isinstance(again.loss, L.CEDiceLoss) and again.loss.class_weights == [1.0, 2.0, 3.0]
    a = model.evaluate(x, y, verbose=0, return_dict=True)
    b = again.evaluate(x, y, verbose=0, return_dict=True)
    for k in ("loss", "mean_iou", "pixel_accuracy", "mean_dice", "class_accuracy"):
        assert b[k] == pytest.approx(a[k], rel=1e-5), k


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_fit_step_under_mirrored_strategy_and_mixed_precision():
    import tensorflow as tf

    import kseg.losses as L

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            inputs = keras.Input((8, 8, 3))
            logits = keras.layers.Conv2D(3, 1)(inputs)
            model = keras.Model(inputs, logits)
            loss = L.get_loss("ce_dice", num_classes=3, class_weights=[1.0, 2.0, 0.5])
            model.compile("adam", loss=loss, metrics=[M.MeanIoU(3), M.PixelAccuracy(3)])
        assert keras.backend.standardize_dtype(logits.dtype) == "float16"
        x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
        y = np.random.default_rng(1).integers(0, 3, (4, 8, 8)).astype("int32")
        y[:, 0] = 255
        h = model.fit(x, y, batch_size=2, epochs=1, verbose=0, validation_data=(x, y))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(h.history["loss"][0])
    assert 0.0 <= h.history["val_mean_iou"][0] <= 1.0 and "val_pixel_accuracy" in h.history
    # the reported validation figures equal the numpy confusion matrix of the same predictions
    pred = np.argmax(np.asarray(model.predict(x, verbose=0), np.float32), -1)
    s = M.scores_from_confusion(M.confusion_matrix(y, pred, 3))
    assert h.history["val_mean_iou"][0] == pytest.approx(s["miou"], rel=1e-5)
    assert h.history["val_pixel_accuracy"][0] == pytest.approx(s["pixel_accuracy"], rel=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function graph mode")
def test_losses_and_metrics_in_graph_mode_equal_eager():
    import tensorflow as tf

    import kseg.losses as L

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, (2, 4, 4)).astype("int32")
    y[0, 0] = 255
    logits = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    for loss in (L.get_loss(n, num_classes=3, class_weights=[1.0, 2.0, 0.5])
                 for n in ("ce", "weighted_ce", "dice", "focal", "ce_dice", "lovasz", "ce_lovasz")):
        graph = tf.function(lambda a, b, f=loss: f(a, b), input_signature=[
            tf.TensorSpec((None, None, None), tf.int32), tf.TensorSpec((None, None, None, 3), tf.float32)])
        assert float(graph(y, logits)) == pytest.approx(float(loss(y, logits)), rel=1e-6), loss.name
    m = M.MeanIoU(3)
    tf.function(m.update_state)(y, logits)
    s = M.scores_from_confusion(M.confusion_matrix(y, logits.argmax(-1), 3))
    assert float(m.result()) == pytest.approx(s["miou"], rel=1e-6)


def _square(h, w, y0, x0, size):
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + size, x0:x0 + size] = 1
    return m


def test_coco_mask_ap(tmp_path):
    import json

    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    gt_mask = _square(20, 20, 2, 2, 10)
    rle = mask_utils.encode(np.asfortranarray(gt_mask))
    rle["counts"] = rle["counts"].decode()
    gt = {"images": [{"id": 1, "height": 20, "width": 20}], "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 100.0,
                           "bbox": [2, 2, 10, 10], "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    perfect = [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.9}]
    assert M.coco_mask_ap(tmp_path / "gt.json", perfect)["AP"] == pytest.approx(1.0)
    # shifted by 4 px: IoU = 60/140 = 0.43 < 0.5 -> no match at any threshold
    off = mask_utils.encode(np.asfortranarray(_square(20, 20, 2, 6, 10)))
    off["counts"] = off["counts"].decode()
    bad = [{"image_id": 1, "category_id": 1, "segmentation": off, "score": 0.9}]
    assert M.coco_mask_ap(tmp_path / "gt.json", bad)["AP"] == 0.0
    assert M.coco_mask_ap(tmp_path / "gt.json", [])["AP50"] == 0.0
