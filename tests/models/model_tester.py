"""One tester every model test reuses (keras-hub style): shapes at two sizes, config round trip,
.keras save/load equality, one fit step, tf_keras twin equality, int8 TFLite with builtin ops."""

from __future__ import annotations

import keras
import numpy as np

from kseg.losses import SparseCategoricalCrossEntropy


def _x(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape[:2], 3)).astype("float32")


def run_model_tests(cls, init_kwargs, input_shapes=((64, 64), (96, 128)), tmp_path=None, tflite=True, twin=True):
    num_classes = init_kwargs["num_classes"]
    models = {}
    # output shape (logits, num_classes, at the input's size) at two sizes
    for hw in input_shapes:
        model = cls(**init_kwargs, input_shape=(*hw, 3))
        y = np.asarray(model(_x(hw)))
        assert y.shape == (2, *hw, num_classes), (cls.__name__, hw, y.shape)
        assert np.isfinite(y).all()
        models[hw] = model
    model = models[input_shapes[0]]
    hw = input_shapes[0]
    x = _x(hw)
    y = np.asarray(model(x, training=False))
    # config round trip
    config = model.get_config()
    again = cls.from_config(config)
    assert again.get_config() == config
    assert again.count_params() == model.count_params()
    # .keras round trip without custom_objects: same outputs
    if tmp_path is not None:
        path = tmp_path / f"{cls.__name__}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, atol=1e-5)
    # one training step gives a finite loss
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SparseCategoricalCrossEntropy())
    labels = np.random.default_rng(1).integers(0, num_classes, (2, *hw)).astype("int32")
    labels[0, :2] = 255
    loss = model.train_on_batch(x, labels)
    assert np.isfinite(float(np.asarray(loss).reshape(-1)[0]))
    # tf_keras twin reproduces the model exactly (the QAT path starts from it)
    if twin:
        from kseg.quantize.twin import assert_twin_equal, to_tf_keras

        tw = to_tf_keras(model)
        assert assert_twin_equal(model, tw, x) <= 1e-4
    # full-int8 TFLite with builtin ops only, uint8 in and out
    if tflite and tmp_path is not None:
        from kseg.export import assert_builtin_ops, to_tflite

        out = to_tflite(model, tmp_path / f"{cls.__name__}_int8.tflite", "int8", representative_data=_x(hw, 4, 3))
        ops = assert_builtin_ops(out)
        assert "CONV_2D" in ops
    return model
