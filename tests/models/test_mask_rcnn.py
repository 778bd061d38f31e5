"""Mask R-CNN: boxes and anchors, targets on hand-made cases, multi-level RoIAlign against
kseg.ops.roi_align, shapes, a falling loss on synthetic instances, pasting and COCO AP."""

import math

import keras
import numpy as np
import pytest

from kseg.data.instances import (hflip, instance_batches, letterbox, letterbox_target, make_instance_dataset,
                                 write_coco_gt)
from kseg.data.readers import InstanceDataset
from kseg.data.synthetic import make_instances
from kseg.errors import KsegError
from kseg.models.mask_rcnn import MaskRCNN, box_iou, decode_boxes, encode_boxes, make_anchors, multilevel_roi_align
from kseg.evaluate_instances import coco_eval, coco_results, predict_coco
from kseg.models.mask_rcnn.rpn import nms_padded, nms_padded_ops
from kseg.models.mask_rcnn.targets import roi_targets, rpn_targets, sample_balanced
from kseg.ops import roi_align
from kseg.runtime import paste_masks

TINY = dict(encoder="tiny", fpn_channels=16, anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_train=200,
            rpn_post_nms_train=64, rpn_pre_nms_test=200, rpn_post_nms_test=64, rpn_batch_size=128,
            roi_batch_size=32, box_head_dim=64, mask_head_channels=16, mask_head_convs=2, max_detections=10)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---- boxes and anchors --------------------------------------------------------------------------
def test_anchors_order_and_geometry():
    a = make_anchors((64, 64), strides=(32, 64), sizes=(32, 64), ratios=(1.0,))
    np.testing.assert_allclose(a, [[0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64], [32, 32, 64, 64], [0, 0, 64, 64]])
    b = make_anchors((128, 64), strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512), ratios=(0.5, 1.0, 2.0))
    assert len(b) == 3 * (32 * 16 + 16 * 8 + 8 * 4 + 4 * 2 + 2 * 1)
    w, h = b[:3, 2] - b[:3, 0], b[:3, 3] - b[:3, 1]
    np.testing.assert_allclose(h / w, [0.5, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(w * h, [32 * 32] * 3, rtol=1e-5)
    np.testing.assert_allclose((b[0, :2] + b[0, 2:]) / 2, [2, 2])  # first P2 centre: (0.5 · 4, 0.5 · 4)


def test_iou_and_delta_round_trip():
    iou = _np(box_iou([[0, 0, 2, 2], [0, 0, 0, 5]], [[1, 0, 3, 2], [0, 0, 2, 2]]))
    np.testing.assert_allclose(iou, [[1 / 3, 1.0], [0.0, 0.0]], atol=1e-6)
    anchors = np.array([[0, 0, 10, 20], [5, 5, 15, 15]], np.float32)
    boxes = np.array([[2, 4, 12, 14], [0, 0, 30, 10]], np.float32)
    d = _np(encode_boxes(boxes, anchors, (10, 10, 5, 5)))
    # box 0: centre (7, 9) vs (5, 10), size 10×10 vs 10×20
    np.testing.assert_allclose(d[0], [10 * 2 / 10, 10 * -1 / 20, 0.0, 5 * math.log(0.5)], atol=1e-5)
    np.testing.assert_allclose(_np(decode_boxes(d, anchors, (10, 10, 5, 5))), boxes, atol=1e-4)


def test_nms_padded_keeps_best_of_overlaps():
    boxes = np.array([[[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, -2.0]], np.float32)  # IoU(0, 1) = 9/11 > 0.5
    idx, valid = nms_padded(boxes, scores, 4, 0.5, score_threshold=-0.5)
    assert list(_np(idx)[0][_np(valid)[0]]) == [0, 2]
    assert _np(valid)[0].tolist() == [True, True, False, False]


# ---- targets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("iou, score_threshold, max_output", [(0.7, -0.5, 50), (0.5, 0.3, 20), (0.3, 0.0, 400)])
def test_nms_in_keras_ops_selects_what_tensorflow_selects(iou, score_threshold, max_output):
    # the JAX path of nms_padded against NonMaxSuppressionV5: same boxes kept, same order, same padding
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, (2, 300, 2))
    wh = rng.uniform(2, 80, (2, 300, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    boxes[0, :5] = boxes[0, 5:10] + 1.0  # near-duplicates
    boxes[1, 7, 2:] = boxes[1, 7, :2]  # an empty box
    scores = rng.uniform(-0.2, 1, (2, 300)).astype(np.float32)
    want_idx, want_valid = nms_padded(boxes, scores, max_output, iou, score_threshold)
    got_idx, got_valid = nms_padded_ops(boxes, scores, max_output, iou, score_threshold)
    assert _np(got_idx).shape == (2, max_output) and _np(got_idx).dtype == np.int32
    np.testing.assert_array_equal(_np(got_valid), _np(want_valid))
    np.testing.assert_array_equal(_np(got_idx), _np(want_idx))
    assert 0 < _np(want_valid).sum(1).min() and (_np(want_valid).sum(1) < 300).all()


def test_sample_balanced_quotas():
    pos = np.zeros((2, 20), bool)
    neg = np.zeros((2, 20), bool)
    pos[0, :10], neg[0, 10:] = True, True  # many positives: capped at 4
    pos[1, :1], neg[1, 1:] = True, True  # one positive: negatives fill the rest
    tp, tn = (_np(t) for t in sample_balanced(pos, neg, 8, 0.5, seed=1))
    assert tp.sum(1).tolist() == [4, 1] and tn.sum(1).tolist() == [4, 7]
    assert not (tp & ~pos).any() and not (tn & ~neg).any()


def test_rpn_targets_hand_made():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [5, 5, 15, 15], [50, 50, 60, 60]], np.float32)
    gt = np.array([[[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, True, False]])
    # IoUs with gt 0: 1, 0.5, 0, 25/175, 0; anchor 2 has IoU 0.25 with gt 1 but is its best anchor
    t = {k: _np(v) for k, v in rpn_targets(anchors, gt, valid, num_samples=256, positive_fraction=0.5, seed=0).items()}
    assert t["labels"][0].tolist() == [1, 0, 1, 0, 0]
    assert t["sampled"][0].tolist() == [1, 0, 1, 1, 1]  # anchor 1 (IoU 0.5) is ignored
    np.testing.assert_allclose(t["deltas"][0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(t["deltas"][0, 2], [0.5, 0.5, math.log(2), math.log(2)], atol=1e-6)


def test_roi_targets_hand_made():
    proposals = np.array([[[0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 4], [30, 30, 40, 40]]], np.float32)
    pvalid = np.array([[True, True, True, False]])
    gt = np.array([[[0, 0, 10, 8], [0, 0, 0, 0]]], np.float32)
    cls = np.array([[3, 0]], np.int32)
    # IoU with the gt: 0.8, 0.75, 0.5, (invalid); the gt box itself is added (IoU 1)
    t = {k: _np(v) for k, v in roi_targets(proposals, pvalid, gt, cls, num_samples=8, positive_fraction=0.5, seed=0).items()}
    assert t["valid"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # 4 positives, no negative, 1 invalid
    assert t["classes"][0, :4].tolist() == [3, 3, 3, 3] and t["classes"][0, 4:].tolist() == [0] * 4
    rois = {tuple(r) for r in t["rois"][0, :4].tolist()}
    assert rois == {(0, 0, 10, 10), (0, 0, 10, 6), (0, 0, 10, 4), (0, 0, 10, 8)}
    k = [tuple(r) for r in t["rois"][0].tolist()].index((0, 0, 10, 8))
    np.testing.assert_allclose(t["deltas"][0, k], 0.0, atol=1e-6)
    # a 0.4-IoU proposal becomes background at quota 1 positive
    t2 = roi_targets(np.array([[[0, 0, 10, 20]]], np.float32), np.array([[True]]), gt, cls, num_samples=2,
                     positive_fraction=0.5, seed=0)
    assert _np(t2["classes"])[0].tolist() == [3, 0] and _np(t2["valid"])[0].tolist() == [1, 1]


# ---- RoIAlign over levels -----------------------------------------------------------------------
def test_multilevel_roi_align_equals_roi_align_on_each_level():
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(2, 32 // s, 48 // s, 3)).astype("float32") for s in (1, 2, 4)]
    strides = (4, 8, 16)
    boxes = rng.uniform(-10, 150, size=(12, 4)).astype("float32")
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 90, size=(12, 2))
    idx, lv = rng.integers(0, 2, 12), rng.integers(0, 3, 12)
    out = _np(multilevel_roi_align(feats, boxes, idx, lv, strides, 7))
    for k in range(12):
        ref = _np(roi_align(feats[lv[k]], boxes[k:k + 1], idx[k:k + 1], 7, spatial_scale=1 / strides[lv[k]], sampling_ratio=2))
        np.testing.assert_allclose(out[k], ref[0], atol=1e-5)


# ---- model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 128])
def test_shapes_at_two_sizes(size):
    model = MaskRCNN(num_classes=3, input_shape=(size, size, 3), **TINY)
    out = model(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32"))
    assert tuple(out["boxes"].shape) == (2, 10, 4) and tuple(out["masks"].shape) == (2, 10, 28, 28)
    assert tuple(out["scores"].shape) == (2, 10) and tuple(out["classes"].shape) == (2, 10)
    n = _np(out["num_detections"])
    boxes, cls, scores = _np(out["boxes"]), _np(out["classes"]), _np(out["scores"])
    for b in range(2):
        assert (cls[b, : n[b]] >= 1).all() and (cls[b, n[b]:] == 0).all() and (scores[b, : n[b]] >= 0.05).all()
        assert (boxes[b] >= 0).all() and (boxes[b] <= size).all()
    feats = model.backbone(np.zeros((1, size, size, 3), np.float32))
    assert tuple(feats["p2"].shape) == (1, size // 4, size // 4, 16) and tuple(feats["p6"].shape) == (1, size // 64, size // 64, 16)
    assert feats["rpn_logits"].shape[1] == len(model.anchors)


def test_bad_input_shape_is_one_line_error():
    with pytest.raises(KsegError, match="multiples of 64"):
        MaskRCNN(input_shape=(100, 100, 3), **TINY)


def test_keras_round_trip(tmp_path):
    model = MaskRCNN(num_classes=3, input_shape=(64, 64, 3), **TINY)
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    a, b = model(x), loaded(x)
    for k in a:
        np.testing.assert_array_equal(_np(a[k]), _np(b[k]))


def _synthetic_instances(n, size, seed):
    samples = make_instances(n, size=(size, size), num_classes=3, seed=seed, max_shapes=3)
    targets = [{"masks": s["masks"], "boxes": s["boxes"], "category_ids": s["class_ids"],
                "iscrowd": np.zeros(len(s["class_ids"]), bool)} for s in samples]
    return samples, targets


def test_loss_falls_on_synthetic_instances():
    samples, targets = _synthetic_instances(8, 64, seed=0)
    m = 3
    boxes = np.zeros((8, m, 4), np.float32)
    cls = np.zeros((8, m), np.int32)
    masks = np.zeros((8, m, 64, 64), np.uint8)
    for i, (s, t) in enumerate(zip(samples, targets)):
        k = len(t["category_ids"])
        boxes[i, :k], cls[i, :k], masks[i, :k] = t["boxes"], t["category_ids"], t["masks"]
    images = np.stack([s["image"] for s in samples]).astype(np.float32)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "classes": cls, "masks": masks})).batch(4, drop_remainder=True).repeat()
    model = MaskRCNN(num_classes=3, input_shape=(64, 64, 3), **TINY)
    model.compile(keras.optimizers.Adam(2e-3))
    first = {k: float(v) for k, v in model.compute_losses(images[:4], {"boxes": boxes[:4], "classes": cls[:4], "masks": masks[:4]}).items()}
    hist = model.fit(ds, steps_per_epoch=10, epochs=3, verbose=0, shuffle=False).history
    assert set(hist) == {"loss", "rpn_cls", "rpn_box", "cls", "box", "mask"}
    assert all(np.isfinite(v).all() for v in hist.values())
    assert hist["loss"][-1] < 0.7 * first["loss"], (first, hist)
    assert hist["rpn_cls"][-1] < first["rpn_cls"] and hist["cls"][-1] < first["cls"]


# ---- data, pasting, COCO --------------------------------------------------------------------------
def test_letterbox_and_flip_move_boxes_with_masks():
    image = np.zeros((50, 100, 3), np.uint8)
    mask = np.zeros((1, 50, 100), np.uint8)
    mask[0, 10:30, 20:60] = 1
    out, scale = letterbox(image, 64)
    assert out.shape == (64, 64, 3) and scale == 0.64
    t = letterbox_target({"masks": mask, "boxes": [[20, 10, 60, 30]], "category_ids": [2]}, 64, scale, 3)
    np.testing.assert_allclose(t["boxes"][0], [12.8, 6.4, 38.4, 19.2], atol=1e-5)
    assert t["classes"].tolist() == [2, 0, 0] and t["masks"][1:].sum() == 0
    ys, xs = np.nonzero(t["masks"][0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (13, 38, 6, 19)
    _, f = hflip(out, t)
    np.testing.assert_allclose(f["boxes"][0], [64 - 38.4, 6.4, 64 - 12.8, 19.2], atol=1e-5)
    np.testing.assert_array_equal(f["masks"][0], t["masks"][0][:, ::-1])
    assert (f["boxes"][1:] == 0).all()


def test_instance_dataset_batches():
    samples, targets = _synthetic_instances(5, 64, seed=3)
    inst = InstanceDataset("shapes", ("background", "circle", "rectangle"), [None] * 5,
                           [lambda t=t: t for t in targets])
    inst.load = lambda i: (samples[i]["image"], targets[i])
    ds = make_instance_dataset(inst, size=128, batch_size=2, max_instances=4, training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    img, t = batches[0]
    assert img.shape == (2, 128, 128, 3) and t["masks"].shape == (2, 4, 128, 128)
    k = len(targets[0]["category_ids"])
    assert int((t["classes"][0] > 0).numpy().sum()) == k
    # 2× scale: every pasted mask has 4× the pixels of the original
    assert int(t["masks"][0].numpy().sum()) == 4 * int(targets[0]["masks"].sum())


@pytest.mark.parametrize("training", [False, True])
def test_numpy_batches_equal_the_tf_data_batches(training):
    # instance_batches (no TensorFlow, for JAX) yields what make_instance_dataset yields
    samples, targets = _synthetic_instances(5, 64, seed=4)
    inst = InstanceDataset("shapes", ("background", "circle", "rectangle"), [None] * 5,
                           [lambda t=t: t for t in targets])
    inst.load = lambda i: (samples[i]["image"], targets[i])
    kw = dict(size=96, batch_size=2, max_instances=4, training=training, seed=3, scale_range=(0.6, 1.4))
    tf_batches = list(make_instance_dataset(inst, **kw).take(5))
    np_batches = [b for _, b in zip(range(5), instance_batches(inst, **kw))]
    assert len(np_batches) == len(tf_batches) == (3 if not training else 5)
    for (ti, tt), (ni, nt) in zip(tf_batches, np_batches):
        assert isinstance(ni, np.ndarray) and ni.dtype == np.uint8
        np.testing.assert_array_equal(ti.numpy(), ni)
        for k in ("boxes", "classes", "masks"):
            assert nt[k].dtype == tt[k].numpy().dtype
            np.testing.assert_array_equal(tt[k].numpy(), nt[k])


def test_paste_masks_fills_its_box_at_image_size():
    m = np.ones((1, 28, 28), np.float32)
    full = paste_masks(m, [[10, 20, 30, 40]], (50, 60))
    assert full.shape == (1, 50, 60) and full.sum() == 400
    assert full[0, 20:40, 10:30].all()
    half = np.zeros((1, 28, 28), np.float32)
    half[:, :, :14] = 1.0  # left half of the box
    full = paste_masks(half, [[10, 20, 30, 40]], (50, 60))
    assert full.sum() == 200 and full[0, 20:40, 10:20].all()


def test_perfect_predictions_score_ap_one(tmp_path):
    samples, targets = _synthetic_instances(6, 64, seed=5)
    gt = write_coco_gt(tmp_path / "gt.json", [{"image_id": i + 1, "masks": t["masks"], "category_ids": t["category_ids"]}
                                              for i, t in enumerate(targets)], ("background", "circle", "rectangle"))
    results = []
    for i, t in enumerate(targets):
        results += coco_results(i + 1, t["boxes"], np.ones(len(t["boxes"])), t["category_ids"], t["masks"])
    segm = coco_eval(gt, results, "segm")
    bbox = coco_eval(gt, results, "bbox")
    assert segm["AP"] == pytest.approx(1.0) and segm["AP50"] == pytest.approx(1.0)
    assert bbox["AP"] == pytest.approx(1.0)
    # the left half of every mask, boxes still exact: mask AP collapses, box AP stays 1
    halves = []
    for i, t in enumerate(targets):
        cut = t["masks"].copy()
        for m, b in zip(cut, t["boxes"]):
            m[:, int((b[0] + b[2]) / 2):] = 0
        halves += coco_results(i + 1, t["boxes"], np.ones(len(cut)), t["category_ids"], cut)
    assert coco_eval(gt, halves, "segm")["AP"] < 0.15
    assert coco_eval(gt, halves, "bbox")["AP"] == pytest.approx(1.0)
    assert coco_eval(gt, [], "segm")["AP"] == 0.0


def test_predict_coco_masks_at_original_size(monkeypatch):
    from pycocotools import mask as mask_utils

    from kseg.data import readers

    samples, targets = _synthetic_instances(2, 96, seed=7)
    inst = InstanceDataset("shapes", ("background", "circle", "rectangle"), ["0", "1"], [lambda t=t: t for t in targets])
    monkeypatch.setattr(readers, "read_image", lambda p: samples[int(p)]["image"])
    model = MaskRCNN(num_classes=3, input_shape=(64, 64, 3), score_threshold=0.0, **TINY)
    results = predict_coco(model, inst, batch_size=2)
    assert len(results) > 0 and {r["image_id"] for r in results} <= {0, 1}
    for r in results:
        assert mask_utils.decode(r["segmentation"]).shape == (96, 96)  # the original size, not 64
        x, y, w, h = r["bbox"]
        assert 0 <= x and x + w <= 96 + 1e-3 and 0 <= y and y + h <= 96 + 1e-3
        assert r["category_id"] in (1, 2)


def test_tflite_export_builtin_ops_and_parity(tmp_path):
    from kseg.export_instances import export_tflite
    from kseg.runtime import TFLiteMaskRCNN

    model = MaskRCNN(num_classes=3, input_shape=(64, 64, 3), score_threshold=0.0, **TINY)
    info = export_tflite(model, tmp_path / "m.tflite")
    assert info["non_builtin"] == [] and "NON_MAX_SUPPRESSION_V5" in info["ops"] and "GATHER" in info["ops"]
    x = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype("float32")
    lite = TFLiteMaskRCNN(tmp_path / "m.tflite", num_threads=1).detect(x)
    ref = {k: _np(v)[0] for k, v in model(x[None]).items()}
    assert int(lite["num_detections"]) == int(ref["num_detections"]) > 0
    np.testing.assert_array_equal(lite["classes"], ref["classes"])
    np.testing.assert_allclose(lite["boxes"], ref["boxes"], atol=1e-3)
    np.testing.assert_allclose(lite["masks"], ref["masks"], atol=1e-4)
    # one call from an RGB frame of any size to image-size instances, Keras or TFLite alike
    from kseg.runtime import detect_instances

    frame = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    a = detect_instances(model, frame, min_score=0.0)
    b = detect_instances(TFLiteMaskRCNN(tmp_path / "m.tflite", num_threads=1), frame, min_score=0.0)
    assert a["masks"].shape[1:] == (48, 80) and len(a["scores"]) == len(b["scores"]) > 0
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    assert (a["boxes"][:, [0, 2]] <= 80).all() and (a["boxes"][:, [1, 3]] <= 48).all()  # clipped to the frame


def test_shrink_scales_boxes_and_masks_together():
    from kseg.data.instances import shrink

    image = np.full((64, 64, 3), 255, np.uint8)
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 8:40, 16:48] = 1
    masks[1, 0:1, 0:1] = 1  # one pixel: gone at half size
    t = {"boxes": np.array([[16, 8, 48, 40], [0, 0, 1, 1]], np.float32), "classes": np.array([1, 1], np.int32), "masks": masks}
    out, s = shrink(image, t, 0.5)
    assert out[:32, :32].min() == 255 and out[32:].max() == 0 and out[:, 32:].max() == 0
    np.testing.assert_allclose(s["boxes"][0], [8, 4, 24, 20])
    ys, xs = np.nonzero(s["masks"][0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (8, 24, 4, 20)
    assert s["classes"].tolist() == [1, 0] and s["masks"][1].sum() == 0


def test_zoom_crops_boxes_and_masks_together():
    from kseg.data.instances import zoom

    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:40, 16:48] = 200  # the first person's pixels
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[0, 8:40, 16:48] = 1
    masks[1, 60:64, 0:4] = 1  # a corner person that a 2x zoom must cut away or keep, never move
    t = {"boxes": np.array([[16, 8, 48, 40], [0, 60, 4, 64], [0, 0, 0, 0]], np.float32),
         "classes": np.array([1, 1, 0], np.int32), "masks": masks}
    for _ in range(20):
        out, z = zoom(image, t, 2.0, rng)
        assert out.shape == image.shape and z["masks"].shape == masks.shape and z["classes"][2] == 0
        for k in np.nonzero(z["classes"])[0]:
            ys, xs = np.nonzero(z["masks"][k])
            # the box is the clipped, scaled box; the mask lies inside it and on the person's pixels
            assert xs.min() >= z["boxes"][k, 0] - 1 and xs.max() + 1 <= z["boxes"][k, 2] + 1
            assert ys.min() >= z["boxes"][k, 1] - 1 and ys.max() + 1 <= z["boxes"][k, 3] + 1
            if k == 0:
                # the same pixels as the image (edge pixels are blends of 200 and 0 in both)
                assert out[ys, xs].min() >= 90 and out[ys, xs].mean() > 180
                assert (out[z["masks"][0] == 0] > 110).sum() == 0
        dropped = np.nonzero(z["classes"] == 0)[0]
        assert all(z["masks"][k].sum() == 0 and not z["boxes"][k].any() for k in dropped)
    out, z = zoom(image, t, 1.0, rng)  # no zoom: the sample as it was
    assert out is image and z is t


# ---- light-model options (issue 13) ---------------------------------------------------------------
def test_multilevel_roi_align_sampling_ratio_one_equals_roi_align():
    rng = np.random.default_rng(2)
    feats = [rng.normal(size=(1, 32 // s, 32 // s, 2)).astype("float32") for s in (1, 2)]
    boxes = np.array([[3.0, 5.0, 30.0, 21.0], [10.0, 2.0, 60.0, 40.0]], np.float32)
    out = _np(multilevel_roi_align(feats, boxes, np.zeros(2, np.int32), np.array([0, 1]), (4, 8), 7, sampling_ratio=1))
    for k, (lv, s) in enumerate(((0, 4), (1, 8))):
        ref = _np(roi_align(feats[lv], boxes[k:k + 1], np.zeros(1, np.int32), 7, spatial_scale=1 / s, sampling_ratio=1))
        np.testing.assert_allclose(out[k], ref[0], atol=1e-5)
    # one sample per bin reads the bin centre: a 28-px box at stride 4 spans feature x in [-0.5, 6.5]
    # (half-pixel aligned), so its 7 bin centres are at x = 0..6, where the ramp equals x
    ramp = np.broadcast_to(np.arange(16, dtype="float32")[None, None, :, None], (1, 16, 16, 1)).copy()
    one = _np(multilevel_roi_align([ramp], np.array([[0.0, 0.0, 28.0, 28.0]], np.float32), np.zeros(1, np.int32),
                                   np.zeros(1, np.int32), (4,), 7, sampling_ratio=1))
    np.testing.assert_allclose(one[0, 0, :, 0], np.arange(7), atol=1e-6)


def test_light_options_shapes_config_and_cost():
    """People anchors (h/w 1, 2, 3), fewer test proposals, narrow heads, sampling 1: the graph follows them."""
    light = dict(TINY, anchor_ratios=(1.0, 2.0, 3.0), rpn_pre_nms_test=100, rpn_post_nms_test=20, max_detections=5,
                 roi_sampling_ratio=1, box_head_dim=32, mask_head_channels=8, mask_head_convs=1)
    model = MaskRCNN(num_classes=2, input_shape=(64, 64, 3), **light)
    a = model.anchors[:3]
    np.testing.assert_allclose((a[:, 3] - a[:, 1]) / (a[:, 2] - a[:, 0]), [1.0, 2.0, 3.0], rtol=1e-6)
    out = model(np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32"))
    assert tuple(out["masks"].shape) == (1, 5, 28, 28) and int(_np(out["num_detections"])[0]) <= 5
    cfg = model.get_config()
    assert cfg["roi_sampling_ratio"] == 1 and cfg["anchor_ratios"] == (1.0, 2.0, 3.0)
    assert MaskRCNN.from_config(cfg).get_config() == cfg
    # box head: 7·7·16 → 32 → 32 → 2 + 8; mask head: one 3×3 conv of 8, deconv 8, 1×1 to 2
    assert model.box_head.count_params() == (7 * 7 * 16 + 1) * 32 + 33 * 32 + 33 * 2 + 33 * 8
    assert model.mask_head.count_params() == (9 * 16 + 1) * 8 + (4 * 8 + 1) * 8 + (8 + 1) * 2
    # a model saved before roi_sampling_ratio existed loads with the old behaviour (2)
    old = {k: v for k, v in cfg.items() if k != "roi_sampling_ratio"}
    assert MaskRCNN.from_config(old).roi_sampling_ratio == 2


@pytest.mark.slow
def test_int8_export_uint8_input_and_float_islands(tmp_path):
    """int8 PTQ of the convolutional parts: uint8 input, builtin ops, the box arithmetic, NMS and
    RoIAlign sampling left in float, and the runtime feeds RGB bytes and returns the usual outputs."""
    from kseg.export_instances import export_tflite, float_ops
    from kseg.runtime import TFLiteMaskRCNN, detect_instances

    keras.utils.set_random_seed(0)
    model = MaskRCNN(num_classes=2, input_shape=(64, 64, 3), score_threshold=0.0, **TINY)
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    info = export_tflite(model, tmp_path / "m.tflite", quantization="int8", representative_images=calib)
    assert info["non_builtin"] == [] and "NON_MAX_SUPPRESSION_V5" in info["ops"]
    fl = float_ops(info["path"])
    assert "NON_MAX_SUPPRESSION_V5" in fl and not {"CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"} & set(fl)
    runner = TFLiteMaskRCNN(info["path"], num_threads=1)
    assert runner.input["dtype"] == np.uint8
    lite = runner.detect(calib[0])
    n = int(lite["num_detections"])
    assert lite["boxes"].shape == (10, 4) and lite["masks"].dtype == np.float32 and n > 0
    # box arithmetic stays float: real boxes (quantizing it gave zero-width boxes and no detections)
    assert (lite["boxes"][:n, 2] - lite["boxes"][:n, 0] > 0.5).all() and (lite["boxes"][:n, 3] - lite["boxes"][:n, 1] > 0.5).all()
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(info["ops"]) and "TOPK_V2" in fl and "GATHER" in fl
    # the same image as float 0..255 or as bytes gives the same detections
    np.testing.assert_array_equal(runner.detect(calib[0].astype(np.float32))["boxes"], lite["boxes"])
    people = detect_instances(runner, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), min_score=0.0)
    assert people["masks"].shape[1:] == (48, 80)
