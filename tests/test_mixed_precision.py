"""train.mixed_precision: float16/bfloat16 computation, float32 variables, logits and losses."""

import csv
import json

import keras
import numpy as np
import pytest

from kseg.config import load_config
from kseg.errors import KsegError
from kseg.train import build_from_config, make_loss, make_metrics, make_optimizer, precision_policy

COMPUTE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@pytest.fixture
def policy_reset():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_precision_values():
    assert precision_policy(False) is None and precision_policy(None) is None and precision_policy("float32") is None
    assert precision_policy(True) == "mixed_bfloat16"  # what `true` meant before the choice
    assert precision_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(KsegError, match="use mixed_float16 or mixed_bfloat16"):
        precision_policy("float8")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_and_keeps_variables_logits_and_loss_in_float32(policy, policy_reset):
    cfg = load_config(None, [f"train.mixed_precision={policy}", "model.kwargs={filters: 4, depth: 2}",
                             "data.size=[32, 32]", "train.optimizer=sgd", "train.learning_rate=0.1"])
    keras.mixed_precision.set_global_policy(precision_policy(cfg.train.mixed_precision))
    model = build_from_config(cfg, num_classes=3)
    loss = make_loss(cfg, 3)
    model.compile(optimizer=make_optimizer(cfg, 10), loss=loss, metrics=make_metrics(3))

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1].name == "logits" and convs[-1].compute_dtype == "float32"
    assert {layer.compute_dtype for layer in convs[:-1]} == {COMPUTE[policy]}
    assert {v.dtype for v in model.weights} == {"float32"}
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 32, 32)).astype("int32")
    logits = model(x, training=False)
    assert logits.dtype == "float32"
    assert keras.ops.convert_to_numpy(loss(y, logits)).dtype == np.float32
    before = [w.copy() for w in model.get_weights()]
    value = model.train_on_batch(x, y)
    value = value[0] if isinstance(value, (list, tuple)) else value
    assert np.isfinite(value) and 0.5 < value < 2.0  # about ln 3 from a fresh model
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_train_mixed_precision_flag_end_to_end(tmp_path, policy_reset):
    from kseg.cli import main
    from kseg.data.synthetic import write_shapes_dataset
    from kseg.models.saving import load_model

    shapes = tmp_path / "shapes"
    ds = write_shapes_dataset(shapes, 12, size=(48, 64), num_classes=3, seed=1)
    (shapes / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    cfg = tmp_path / "mp.yaml"
    cfg.write_text(
        f"name: mp\nout_dir: {tmp_path / 'runs'}\nmodel: {{name: unet, kwargs: {{filters: 4, depth: 2}}}}\n"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n  size: [32, 32]\n"
        "  batch_size: 4\ntrain: {epochs: 1, steps_per_epoch: 2, verbose: 0, early_stop_patience: null}\n"
    )
    assert main(["train", "--config", str(cfg), "--mixed-precision", "mixed_float16"]) == 0
    run = tmp_path / "runs" / "mp"
    assert "mixed_precision: mixed_float16" in (run / "config.yaml").read_text()
    row = list(csv.DictReader(open(run / "history.csv")))[0]
    assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))
    assert keras.mixed_precision.global_policy().name == "float32"  # reset after training
    # the checkpoint loads as a float32 model (kseg rebuilds from its config), ready for export
    model = load_model(run / "best.keras")
    assert {layer.compute_dtype for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {"float32"}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_every_model_returns_float32_logits_under_mixed_precision(policy, policy_reset):
    from kseg.models import MODELS, build_model

    keras.mixed_precision.set_global_policy(policy)
    x = np.zeros((1, 96, 96, 3), "float32")
    for name in MODELS:
        model = build_model(name, num_classes=3, input_shape=(96, 96, 3))
        assert model(x, training=False).dtype == "float32", name
        assert {v.dtype for v in model.weights} == {"float32"}, name
