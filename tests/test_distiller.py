"""Soft-target distillation (kseg.models.distiller, train.distill): the loss, the wrapper, and
kseg train with a teacher (the student is what the run saves, and it resumes)."""

import csv
import json

import keras
import numpy as np
import pytest

from kseg.cli import main
from kseg.data.synthetic import write_shapes_dataset
from kseg.errors import KsegError
from kseg.models.distiller import Distiller, soft_target_loss
from kseg.models.saving import single_output
from kseg.models.unet import UNet


def _kl(t, s, temp):
    def log_softmax(z):
        z = z / temp
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(t), log_softmax(s)
    return temp ** 2 * float(np.mean(np.sum(np.exp(lt) * (lt - ls), -1)))


def test_soft_target_loss_is_hintons_kl_per_pixel():
    rng = np.random.default_rng(0)
    t, s = rng.normal(0, 2, (2, 4, 5, 3)).astype("float32"), rng.normal(0, 2, (2, 4, 5, 3)).astype("float32")
    for temp in (1.0, 2.0, 4.0):
        assert float(soft_target_loss(t, s, temp)) == pytest.approx(_kl(t, s, temp), rel=1e-5)
    assert float(soft_target_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_target_loss(t, t + 5.0, 1.0)) == pytest.approx(0.0, abs=1e-5)  # logits up to a constant


def _unet(filters, seed):
    keras.utils.set_random_seed(seed)
    return UNet(num_classes=3, input_shape=(32, 32, 3), filters=filters, depth=2)


def test_distiller_trains_the_student_towards_the_teacher_and_never_the_teacher():
    teacher, student = _unet(8, 1), _unet(4, 2)
    t_weights = [w.copy() for w in teacher.get_weights()]
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.full((8, 32, 32), 255, "int32")  # no labels at all: only the teacher teaches
    model = Distiller(student, teacher, alpha=1.0, temperature=2.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=255))
    before = float(soft_target_loss(teacher(x), student(x), 2.0))
    hist = model.fit(x, y, batch_size=4, epochs=15, verbose=0)
    after = float(soft_target_loss(teacher(x), student(x), 2.0))
    assert after < 0.5 * before, (before, after)
    assert hist.history["loss"][-1] == pytest.approx(after, rel=0.3)  # the training loss is that term
    for a, b in zip(t_weights, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)  # frozen, BatchNorm statistics included
    assert single_output(model) is student
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(student(x)), atol=1e-5)


def test_distiller_refuses_a_teacher_of_other_classes_and_bad_weights():
    other = UNet(num_classes=2, input_shape=(32, 32, 3), filters=4, depth=2)
    with pytest.raises(KsegError, match="does not match the student"):
        Distiller(_unet(4, 0), other)
    with pytest.raises(KsegError, match="within 0..1"):
        Distiller(_unet(4, 0), _unet(4, 1), alpha=1.5)
    with pytest.raises(KsegError, match="temperature must be > 0"):
        Distiller(_unet(4, 0), _unet(4, 1), temperature=0)


def _write_config(path, shapes, name, out_dir, model, epochs, distill=""):
    path.write_text(
        f"name: {name}\nout_dir: {out_dir}\nmodel: {model}\n"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
        "  size: [32, 32]\n  batch_size: 4\n"
        f"train:\n  epochs: {epochs}\n  learning_rate: 0.01\n  verbose: 0\n  early_stop_patience: null\n{distill}")
    return path


def test_kseg_train_distils_saves_the_student_and_resumes(tmp_path, capsys):
    shapes = tmp_path / "shapes"
    ds = write_shapes_dataset(shapes, 16, size=(48, 64), num_classes=3, seed=1)
    (shapes / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    runs = tmp_path / "runs"
    # the teacher: trained at another input size (48), rebuilt at the student's 32
    teacher_cfg = _write_config(tmp_path / "teacher.yaml", shapes, "teacher", runs,
                                "{name: unet, kwargs: {filters: 8, depth: 2}}", 1)
    assert main(["train", "--config", str(teacher_cfg), "--set", "data.size=[48,48]"]) == 0
    teacher = runs / "teacher" / "best.keras"
    student_cfg = _write_config(tmp_path / "student.yaml", shapes, "student", runs,
                                "{name: unet, kwargs: {filters: 4, depth: 2}}", 1,
                                f"  distill: {{teacher: '{teacher}', alpha: 0.7, temperature: 2}}\n")
    assert main(["train", "--config", str(student_cfg)]) == 0
    assert f"distilling from {teacher} (alpha 0.7, temperature 2)" in capsys.readouterr().err
    run = runs / "student"
    from kseg.models.saving import load_model

    saved = load_model(run / "best.keras")  # the student alone: 4 filters, no teacher inside
    assert saved.count_params() == UNet(num_classes=3, input_shape=(32, 32, 3), filters=4, depth=2).count_params()
    assert saved.output_shape == (None, 32, 32, 3)
    # resumes from its backup (the wrapper's weights, teacher included) at epoch 1
    assert main(["train", "--config", str(student_cfg), "--set", "train.epochs=2"]) == 0
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))] == [0, 1]

    bad = _write_config(tmp_path / "bad.yaml", shapes, "bad", runs, "{name: unet, kwargs: {filters: 4, depth: 2}}", 1,
                        f"  distill: {{teacher: '{teacher}', weight: 0.5}}\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown: weight" in err and "Traceback" not in err
