"""kseg evaluate / export / benchmark on Mask R-CNN models (tiny models, synthetic COCO data)."""

import json

import cv2
import keras
import numpy as np
import pytest
import yaml

from kseg.cli import main
from kseg.data.instances import write_coco_gt
from kseg.data.synthetic import make_instances
from kseg.evaluate_instances import evaluate_instances
from kseg.metrics import coco_mask_ap
from kseg.models.mask_rcnn import MaskRCNN
from kseg.runtime import InstanceModel, model_kind

TINY = dict(encoder="tiny", fpn_channels=16, anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_train=200,
            rpn_post_nms_train=64, rpn_pre_nms_test=200, rpn_post_nms_test=64, rpn_batch_size=128,
            roi_batch_size=32, box_head_dim=64, mask_head_channels=16, mask_head_convs=2, max_detections=10,
            score_threshold=0.0)
NAMES = ["background", "circle", "rectangle"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny MaskRCNN as .keras, .weights.h5 + config and .tflite (via the CLI), and a COCO folder."""
    root = tmp_path_factory.mktemp("inst")
    keras.utils.set_random_seed(0)
    model = MaskRCNN(num_classes=3, input_shape=(64, 64, 3), **TINY)
    model.save(root / "m.keras")
    (root / "classes.json").write_text(json.dumps({"class_names": NAMES}))  # as kseg train writes beside a run
    model.save_weights(root / "m.weights.h5")
    (root / "m.yaml").write_text(yaml.safe_dump({"name": "tiny", "class_names": NAMES,
                                                 "model": {"num_classes": 3, "input_shape": [64, 64, 3], **TINY}}))
    coco = root / "coco"
    (coco / "val2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    samples = make_instances(3, size=(80, 80), num_classes=3, seed=3, max_shapes=2)
    for i, s in enumerate(samples):
        cv2.imwrite(str(coco / "val2017" / f"{i + 1}.png"), s["image"][..., ::-1])
    write_coco_gt(coco / "annotations" / "instances_val2017.json",
                  [{"image_id": i + 1, "masks": s["masks"], "category_ids": s["class_ids"]} for i, s in enumerate(samples)],
                  NAMES)
    assert main(["export", str(root / "m.keras"), "--quantization", "float32", "--out", str(root / "m.tflite"),
                 "--data", str(coco), "--parity", "2", "--threads", "1"]) == 0
    return root


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- pycocotools through evaluate_instances: exact detections score 1 -------------------------
class _Exact(InstanceModel):
    """Returns hand-made boxes with full masks (exact for axis-aligned rectangles)."""

    def __init__(self, dets):
        self.dets = iter(dets)
        super().__init__(type("M", (), {"image_shape": (64, 64, 3), "num_classes": 2})(), ("background", "person"),
                         "exact", "keras")

    def raw(self, boxed):
        boxes = np.asarray(next(self.dets), np.float32)
        n = len(boxes)
        return {"boxes": boxes, "scores": np.full(n, 0.9, np.float32), "classes": np.ones(n, np.int32),
                "masks": np.ones((n, 28, 28), np.float32), "num_detections": np.int32(n)}


def _rect_coco(tmp_path):
    """Two 64×48 images: rectangles of 'person' (id 1) and 'dog' (id 18)."""
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    people = [[[4, 6, 24, 40], [30, 2, 60, 20]], [[10, 10, 50, 44]]]  # x1, y1, x2, y2
    dogs = [[[40, 30, 62, 46]], []]
    images, anns = [], []
    for i in range(2):
        cv2.imwrite(str(tmp_path / "val2017" / f"{i + 1}.png"), np.zeros((48, 64, 3), np.uint8))
        images.append({"id": i + 1, "width": 64, "height": 48, "file_name": f"{i + 1}.png"})
        for cat, boxes in ((1, people[i]), (18, dogs[i])):
            for x1, y1, x2, y2 in boxes:
                poly = [x1, y1, x2, y1, x2, y2, x1, y2]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0,
                             "segmentation": [poly], "area": float((x2 - x1) * (y2 - y1)), "bbox": [x1, y1, x2 - x1, y2 - y1]})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    return people


def test_exact_detections_score_one_and_cat_ids_choose_the_average(tmp_path):
    people = _rect_coco(tmp_path)
    res_file = tmp_path / "res.json"
    r = evaluate_instances(_Exact(people), tmp_path, categories=None, results_path=res_file)
    # the model's classes found in the file: person only; dog is not averaged in
    assert r["categories"] == ["person"] and r["images"] == 2 and r["detections"] == 3
    assert r["segm"]["AP"] == pytest.approx(1.0) and r["bbox"]["AP"] == pytest.approx(1.0)
    results = json.loads(res_file.read_text())
    assert sorted(x["bbox"] for x in results) == sorted([[4, 6, 20, 34], [30, 2, 30, 18], [10, 10, 40, 34]])
    assert {x["category_id"] for x in results} == {1}
    gt = tmp_path / "annotations" / "instances_val2017.json"
    # pycocotools alone averages over every GT category: dog (found nothing) has AP 0, the mean 0.5
    assert coco_mask_ap(gt, results)["AP"] == pytest.approx(0.5)
    assert coco_mask_ap(gt, results, cat_ids=[1])["AP"] == pytest.approx(1.0)
    assert coco_mask_ap(gt, results, cat_ids=[18])["AP"] == pytest.approx(0.0)


def test_partial_boxes_score_by_their_iou(tmp_path):
    people = _rect_coco(tmp_path)
    ann = tmp_path / "annotations" / "instances_val2017.json"
    # the left half of each person: IoU 0.5 exactly, a match at the 0.50 threshold only
    halves = [[[x1, y1, (x1 + x2) / 2, y2] for x1, y1, x2, y2 in img] for img in people]
    r = evaluate_instances(_Exact(halves), ann, categories=("person",))
    assert r["segm"]["AP50"] == pytest.approx(1.0) and r["segm"]["AP75"] == pytest.approx(0.0)
    assert r["segm"]["AP"] == pytest.approx(0.1) and r["bbox"]["AP"] == pytest.approx(0.1)  # 1 of 10 thresholds
    # the left quarter: IoU 0.25, nothing matches
    quarters = [[[x1, y1, x1 + (x2 - x1) / 4, y2] for x1, y1, x2, y2 in img] for img in people]
    assert evaluate_instances(_Exact(quarters), ann, categories=("person",))["segm"]["AP"] == pytest.approx(0.0)


# ---- the CLI ----------------------------------------------------------------------------------
def test_model_kind(files):
    assert model_kind(files / "m.keras") == "instance"
    assert model_kind(files / "m.weights.h5") == "instance"
    assert model_kind(files / "m.tflite") == "instance"
    assert model_kind("exports/portrait.tflite") == "semantic"


def test_export_card(files):
    card = json.loads((files / "m.json").read_text())
    assert card["task"] == "instance_segmentation" and card["class_names"] == NAMES
    assert card["input"]["shape"] == [1, 64, 64, 3] and "letterbox" in card["input"] and card["quantization"] == "float32"
    assert set(card["outputs"]) == {"boxes", "scores", "classes", "masks", "num_detections"}
    assert card["outputs"]["masks"]["shape"] == [1, 10, 28, 28]
    assert card["builtin_only"] and "NON_MAX_SUPPRESSION_V5" in card["ops"]
    p = card["parity"]
    assert p["images"] == 2 and p["matched"] == p["keras_detections"] > 0 and p["max_box_diff"] < 1e-2
    assert p["mean_mask_iou"] > 0.999
    assert card["size_bytes"] == (files / "m.tflite").stat().st_size


def test_evaluate_keras_weights_and_tflite_agree(files, capsys, tmp_path):
    coco = files / "coco"
    reports = {}
    for name, extra in (("keras", [files / "m.keras"]), ("weights", [files / "m.weights.h5", "--config", files / "m.yaml"]),
                        ("tflite", [files / "m.tflite"])):
        res = tmp_path / f"{name}.json"
        rc, out, err = _run(["evaluate", extra[0], coco, *extra[1:], "--json", "--results", res], capsys)
        assert rc == 0, err
        assert err.splitlines()[-1].startswith("evaluation: 3/3 images in "), err  # progress, as a log sees it
        reports[name] = json.loads(out)
        dets = json.loads(res.read_text())
        assert len(dets) == reports[name]["detections"] > 0
        from pycocotools import mask as mask_utils

        assert all(mask_utils.decode(d["segmentation"]).shape == (80, 80) for d in dets)  # original size, not 64
        assert {d["category_id"] for d in dets} <= {1, 2}
    assert reports["keras"]["categories"] == ["circle", "rectangle"] and reports["keras"]["images"] == 3
    for k in ("segm", "bbox"):
        for stat in ("AP", "AP50", "AR100"):
            assert reports["keras"][k][stat] == pytest.approx(reports["weights"][k][stat])
            assert reports["keras"][k][stat] == pytest.approx(reports["tflite"][k][stat], abs=1e-3)
    rc, out, _ = _run(["evaluate", files / "m.keras", coco, "--categories", "rectangle"], capsys)
    assert rc == 0 and "| mask |" in out and "| box |" in out and "categories rectangle" in out


def test_benchmark_instance_tflite(files, capsys, tmp_path):
    rc, out, err = _run(["benchmark", files / "m.tflite", "--runs", "3", "--warmup", "1", "--threads", "1",
                         "--data", files / "coco", "--json", tmp_path / "b.json"], capsys)
    assert rc == 0, err
    row = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert row["task"] == "instance_segmentation" and row["builtin_only"] is True
    assert row["latency"]["runs"] == 3 and row["median_ms"] > 0 and row["num_images"] == 3
    assert 0.0 <= row["mask_ap"] <= 1.0 and "mask AP" in out
    assert row["input_dtype"] == "float32"  # read from the file: the shipped int8 file takes uint8
    rc, out, err = _run(["benchmark", "exports/person-instances.tflite", "--runs", "2", "--warmup", "1",
                         "--json", tmp_path / "s.json"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["models"][0]["input_dtype"] == "uint8"
    assert "uint8/float32" in out


@pytest.mark.parametrize("case", ["semantic_keras", "semantic_tflite", "no_annotations", "truncated", "no_config",
                                  "int8", "qat", "unknown_category", "compare_semantic", "bootstrap_negative"])
def test_one_line_errors(files, capsys, tmp_path, case):
    coco = files / "coco"
    ann = coco / "annotations" / "instances_val2017.json"
    if case == "semantic_keras":
        m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 1)])
        m.save(tmp_path / "sem.keras")
        argv, expect = ["evaluate", tmp_path / "sem.keras", ann], "semantic segmentation model"
    elif case == "semantic_tflite":
        argv, expect = ["evaluate", "exports/portrait.tflite", ann], "semantic segmentation model"
    elif case == "no_annotations":
        argv, expect = ["evaluate", files / "m.tflite", tmp_path / "missing.json"], "not found"
    elif case == "truncated":
        data = (files / "m.tflite").read_bytes()
        (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
        (tmp_path / "cut.json").write_text((files / "m.json").read_text())
        argv, expect = ["evaluate", tmp_path / "cut.tflite", coco], "cut.tflite"
    elif case == "no_config":
        argv, expect = ["evaluate", files / "m.weights.h5", coco], "--config"
    elif case == "int8":  # int8 calibrates on train images; this COCO folder has only val
        argv = ["export", files / "m.keras", "--quantization", "int8", "--out", tmp_path / "x.tflite",
                "--data", coco]
        expect = "int8 export calibrates on train images"
    elif case == "qat":
        argv = ["export", files / "m.keras", "--quantization", "qat", "--out", tmp_path / "x.tflite"]
        expect = "QAT is not offered"
    elif case == "compare_semantic":
        argv, expect = ["evaluate", files / "m.tflite", coco, "--compare", "exports/portrait.tflite"], "portrait.tflite"
    elif case == "bootstrap_negative":
        argv, expect = ["evaluate", files / "m.tflite", coco, "--bootstrap", "-5"], "--bootstrap -5"
    else:
        argv, expect = ["evaluate", files / "m.keras", coco, "--categories", "zebra"], "zebra"
    rc, out, err = _run(argv, capsys)
    assert rc == 2, err
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err


# ---- bootstrap intervals and the paired comparison ----------------------------------------------
def _noisy_results(samples, rng, drop=0.3, shift=4, extra=0.5):
    """COCO results from the ground truth: some instances missed, masks shifted, false positives."""
    from kseg.evaluate_instances import coco_results

    res = []
    for i, s in enumerate(samples):
        keep = [k for k in range(len(s["class_ids"])) if rng.random() > drop]
        masks = [np.roll(s["masks"][k], int(rng.integers(-shift, shift + 1)), axis=1) for k in keep]
        classes = [int(s["class_ids"][k]) for k in keep]
        if rng.random() < extra:  # a false positive: a square where there may be nothing
            m = np.zeros_like(s["masks"][0])
            y, x = rng.integers(0, m.shape[0] - 12, 2)
            m[y:y + 12, x:x + 12] = 1
            masks.append(m)
            classes.append(int(rng.integers(1, 3)))
        if not masks:
            continue
        masks = np.stack(masks).astype(np.uint8)
        ys, xs = [np.nonzero(m.any(1))[0] for m in masks], [np.nonzero(m.any(0))[0] for m in masks]
        boxes = np.array([[x[0], y[0], x[-1] + 1, y[-1] + 1] for x, y in zip(xs, ys)], np.float32)
        scores = rng.uniform(0.05, 1.0, len(masks)).astype(np.float32)
        res += coco_results(i + 1, boxes, scores, np.array(classes), masks.astype(np.float32))
    return res


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("boot")
    samples = make_instances(12, size=(64, 64), num_classes=3, seed=5, max_shapes=3)
    gt = write_coco_gt(root / "gt.json", [{"image_id": i + 1, "masks": s["masks"], "category_ids": s["class_ids"]}
                                          for i, s in enumerate(samples)], NAMES)
    rng = np.random.default_rng(0)
    return root, samples, gt, _noisy_results(samples, rng), _noisy_results(samples, rng, drop=0.5, shift=8)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_bootstrap_equals_pycocotools_on_every_image_and_on_a_draw_with_repeats(noisy, iou_type):
    from kseg.evaluate_instances import _average_precision, _matches_per_image, coco_bootstrap, coco_eval

    root, samples, gt, res, _ = noisy
    b = coco_bootstrap(gt, res, iou_type=iou_type, resamples=200)
    ref = coco_eval(gt, res, iou_type)
    assert 0.2 < ref["AP"] < 0.9  # a non-trivial case
    assert b["AP"] == pytest.approx(ref["AP"], abs=1e-12) and b["AP50"] == pytest.approx(ref["AP50"], abs=1e-12)
    assert b["AP_ci"][0] < b["AP"] < b["AP_ci"][1] and b["images"] == 12 and b["resamples"] == 200
    # one draw with repeats = pycocotools on a data set in which the drawn images are copied
    draw = [0, 0, 3, 5, 5, 5, 7, 9, 10, 11, 11, 2]
    ids, ious, recalls, rows = _matches_per_image(gt, res, iou_type, None)
    samples2 = [{"image_id": j + 1, "masks": samples[i]["masks"], "category_ids": samples[i]["class_ids"]}
                for j, i in enumerate(draw)]
    gt2 = write_coco_gt(root / f"gt_draw_{iou_type}.json", samples2, NAMES)
    by_image = {}
    for r in res:
        by_image.setdefault(r["image_id"], []).append(r)
    res2 = [dict(r, image_id=j + 1) for j, i in enumerate(draw) for r in by_image.get(i + 1, [])]
    ref2 = coco_eval(gt2, res2, iou_type)
    assert ids == list(range(1, 13))
    ap, ap50 = _average_precision(rows, np.array(draw), ious, recalls)
    assert ap == pytest.approx(ref2["AP"], abs=1e-12) and ap50 == pytest.approx(ref2["AP50"], abs=1e-12)


def test_paired_bootstrap_of_a_model_against_itself_and_a_worse_one(noisy):
    from kseg.evaluate_instances import coco_bootstrap, coco_eval

    _, _, gt, good, bad = noisy
    same = coco_bootstrap(gt, good, baseline=good, resamples=300)
    assert same["diff_AP"] == 0.0 and same["diff_AP_ci"] == [0.0, 0.0] and same["p_not_better"] == 1.0
    b = coco_bootstrap(gt, good, baseline=bad, resamples=300, seed=1)
    assert b["baseline_AP"] == pytest.approx(coco_eval(gt, bad, "segm")["AP"], abs=1e-12)
    assert b["diff_AP"] == pytest.approx(b["AP"] - b["baseline_AP"])
    assert b["diff_AP"] > 0.1 and 0.0 < b["diff_AP_ci"][0] < b["diff_AP"] < b["diff_AP_ci"][1]
    assert b["p_not_better"] < 0.025
    assert coco_bootstrap(gt, good, baseline=bad, resamples=300, seed=1) == b  # the seed fixes the draws
    # a model that found nothing: AP 0 on every draw, and the comparison still runs
    empty = coco_bootstrap(gt, [], baseline=good, resamples=50)
    assert empty["AP"] == 0.0 and empty["AP_ci"] == [0.0, 0.0] and empty["diff_AP"] == -empty["baseline_AP"] < 0


def test_evaluate_compare_and_bootstrap_on_the_cli(files, capsys, tmp_path):
    coco = files / "coco"
    rc, out, err = _run(["evaluate", files / "m.tflite", coco, "--compare", files / "m.keras", "--bootstrap", "100",
                         "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert r["compare"]["model"].endswith("m.keras") and r["compare"]["detections"] > 0
    for kind in ("segm", "bbox"):
        b = r["bootstrap"][kind]
        assert b["resamples"] == 100 and b["images"] == 3
        assert b["AP"] == pytest.approx(r[kind]["AP"]) and b["baseline_AP"] == pytest.approx(r["compare"][kind]["AP"])
        assert abs(b["diff_AP"]) < 1e-3  # a float32 file against its own Keras model
    rc, out, err = _run(["evaluate", files / "m.tflite", coco, "--compare", files / "m.keras", "--bootstrap", "50"],
                        capsys)
    assert rc == 0, err
    assert "| mask, " in out and "bootstrap over the 3 images (50 draws" in out and "paired" in out
    rc, out, _ = _run(["evaluate", files / "m.tflite", coco, "--json"], capsys)
    assert "bootstrap" not in json.loads(out) and "compare" not in json.loads(out)
