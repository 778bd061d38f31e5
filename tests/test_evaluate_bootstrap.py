"""Bootstrap intervals of class IoU over images (kseg.metrics.iou_bootstrap) and kseg evaluate
--compare/--bootstrap on semantic models."""

import json

import keras
import numpy as np
import pytest

from kseg.cli import main
from kseg.errors import KsegError
from kseg.metrics import confusion_matrix, iou_bootstrap, scores_from_confusion


def _per_image(rng, n=30, c=4, noise=0.2, size=(16, 16)):
    truth = rng.integers(0, c, (n, *size))
    wrong = rng.random((n, *size)) < noise
    pred = np.where(wrong, rng.integers(0, c, (n, *size)), truth)
    return truth, np.stack([confusion_matrix(t, p, c) for t, p in zip(truth, pred)])


def test_full_figures_equal_the_dataset_scores_and_the_interval_holds_them():
    rng = np.random.default_rng(0)
    _, cms = _per_image(rng)
    b = iou_bootstrap(cms, class_names="abcd", resamples=500)
    s = scores_from_confusion(cms.sum(0))
    assert b["miou"] == pytest.approx(s["miou"]) and b["images"] == 30 and b["resamples"] == 500
    for k, name in enumerate("abcd"):
        v, lo, hi = b["per_class_iou"][name]
        assert v == pytest.approx(s["per_class_iou"][k]) and lo < v < hi
    assert b["miou_ci"][0] < b["miou"] < b["miou_ci"][1]
    assert "diff_miou" not in b
    # one image drawn N times: the interval collapses onto that image's IoU
    one = iou_bootstrap(cms[:1], resamples=20)
    assert one["miou_ci"][0] == pytest.approx(one["miou"]) == pytest.approx(one["miou_ci"][1])


def test_paired_difference_against_itself_and_a_worse_model():
    rng = np.random.default_rng(1)
    truth, good = _per_image(rng, noise=0.1)
    pred_bad = np.where(rng.random(truth.shape) < 0.4, rng.integers(0, 4, truth.shape), truth)
    bad = np.stack([confusion_matrix(t, p, 4) for t, p in zip(truth, pred_bad)])
    same = iou_bootstrap(good, good, resamples=200)
    assert same["diff_miou"] == 0.0 and same["diff_miou_ci"] == [0.0, 0.0] and same["p_not_better"] == 1.0
    b = iou_bootstrap(good, bad, resamples=400, seed=3)
    assert b["diff_miou"] == pytest.approx(b["miou"] - b["baseline_miou"]) and b["diff_miou"] > 0.1
    assert 0.0 < b["diff_miou_ci"][0] < b["diff_miou"] < b["diff_miou_ci"][1] and b["p_not_better"] == 0.0
    for name, (d, lo, hi) in b["per_class_diff"].items():
        assert lo < d < hi and d > 0, name
    assert iou_bootstrap(good, bad, resamples=400, seed=3) == b  # the seed fixes the draws


def test_a_class_missing_from_some_draws_and_bad_shapes():
    cms = np.zeros((10, 3, 3), np.int64)
    cms[:, 0, 0] = 100
    cms[:, 1, 1] = 50
    cms[0, 2, 2], cms[0, 2, 0] = 5, 5  # class 2 only in the first image
    b = iou_bootstrap(cms, resamples=300)
    v, lo, hi = b["per_class_iou"]["2"]
    assert v == pytest.approx(0.5) and lo == hi == pytest.approx(0.5)  # the draws that hold it: always 0.5
    assert b["miou_ci"][0] <= b["miou"] <= b["miou_ci"][1]
    with pytest.raises(KsegError, match="not of the same images"):
        iou_bootstrap(cms, cms[:5])
    with pytest.raises(KsegError, match=r"\(N, C, C\)"):
        iou_bootstrap(cms[0])


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.models.unet import UNet

    root = tmp_path_factory.mktemp("cmp")
    write_shapes_dataset(root / "shapes", 10, size=(32, 32), num_classes=3, seed=2)
    paths = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        UNet(num_classes=3, input_shape=(32, 32, 3), filters=4, depth=2).save(root / f"m{seed}.keras")
        paths.append(root / f"m{seed}.keras")
    return root, paths


def _evaluate(argv, capsys):
    rc = main(["evaluate", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_evaluate_compare_on_the_cli(two_models, capsys):
    root, (a, b) = two_models
    data = [root / "shapes", "--format", "masks"]
    rc, out, err = _evaluate([a, *data, "--compare", b, "--bootstrap", "200", "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    rc, out_a, _ = _evaluate([a, *data, "--json"], capsys)
    rc, out_b, _ = _evaluate([b, *data, "--json"], capsys)
    ra, rb = json.loads(out_a), json.loads(out_b)
    assert "bootstrap" not in ra and "compare" not in ra
    assert r["miou"] == pytest.approx(ra["miou"]) and r["compare"]["miou"] == pytest.approx(rb["miou"])
    assert r["compare"]["model"] == str(b)
    boot = r["bootstrap"]
    assert boot["resamples"] == 200 and boot["images"] == 10
    assert boot["diff_miou"] == pytest.approx(ra["miou"] - rb["miou"])
    for name in ("background",):
        assert boot["per_class_iou"][name][0] == pytest.approx(ra["per_class_iou"][name])
    # text: both tables and the paired intervals; --flip applies to MODEL only
    rc, out, err = _evaluate([a, *data, "--compare", a, "--flip", "--bootstrap", "50"], capsys)
    assert rc == 0, err
    assert f"--compare {a}:" in out and "differences paired" in out and out.count("mIoU ") >= 3
    rc, out, _ = _evaluate([a, *data, "--flip", "--json"], capsys)
    rc, out2, _ = _evaluate([a, *data, "--compare", a, "--flip", "--bootstrap", "0", "--json"], capsys)
    flipped, both = json.loads(out), json.loads(out2)
    assert both["miou"] == pytest.approx(flipped["miou"]) and both["compare"]["miou"] == pytest.approx(ra["miou"])
    assert "bootstrap" not in both


def test_compare_errors_are_one_line(two_models, capsys):
    root, (a, _) = two_models
    data = [root / "shapes", "--format", "masks"]
    for argv, expect in (([a, *data, "--compare", "exports/person-instances.tflite"], "is an instance model"),
                         ([a, *data, "--compare", "exports/portrait.tflite"], "2 classes"),
                         ([a, *data, "--bootstrap", "-1"], "--bootstrap -1")):
        rc, _, err = _evaluate(argv, capsys)
        assert rc == 2 and err.count("\n") == 1 and expect in err and "Traceback" not in err, err
