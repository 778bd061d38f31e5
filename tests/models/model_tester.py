"""One tester every model test reuses (keras-hub style).

``run_model_tests`` checks, for a model class and its constructor arguments:

1. logits of shape ``(B, H, W, num_classes)`` at two input sizes;
2. ``get_config``/``from_config`` round trip (same config, same parameter count);
3. ``.keras`` save/load *without* ``custom_objects`` gives the same outputs;
4. training: one step of sparse cross-entropy (with ignore pixels) gives a finite loss, moves
   (at least 90% of) the trainable weights and updates every BatchNormalization's statistics;
5. the tf_keras twin (the QAT path's starting point) reproduces the outputs — the hook
   skips with reason "quantize issue" when ``kseg.quantize.twin`` is absent;
6. TFLite: float32 conversion reproduces the Keras outputs, and full-int8 conversion (uint8
   in and out, a tiny representative dataset) uses builtin ops only and follows the Keras
   outputs within a quantization-sized error.

Checks 5 and 6 are also callable alone (``check_twin``, ``check_tflite``) so a per-model file
can run them in a separate, possibly ``slow``, test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.losses import SparseCategoricalCrossEntropy


def images(hw, n=2, seed=0):
    """``n`` random float32 RGB images in 0..255 of size ``hw``."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *hw[:2], 3)).astype("float32")


def run_model_tests(cls, init_kwargs, input_shapes=((64, 64), (96, 128)), tmp_path=None, tflite=True, twin=True):
    """Run the shared checks on ``cls(**init_kwargs, input_shape=(H, W, 3))``; return the model
    built for ``input_shapes[0]``."""
    tmp_path = Path(tmp_path or tempfile.mkdtemp(prefix="kseg_model_test_"))
    num_classes = init_kwargs["num_classes"]
    # 1. logits at the input's size, at two sizes
    built = {}
    for hw in input_shapes:
        model = cls(**init_kwargs, input_shape=(*hw, 3))
        y = np.asarray(model(images(hw), training=False))
        assert y.shape == (2, *hw, num_classes), (cls.__name__, hw, y.shape)
        assert np.isfinite(y).all()
        built[hw] = model
    hw = input_shapes[0]
    model, x = built[hw], images(hw)
    y = np.asarray(model(x, training=False))
    # 2. config round trip
    config = model.get_config()
    again = cls.from_config(config)
    assert again.get_config() == config
    assert again.count_params() == model.count_params()
    # 3. .keras round trip without custom_objects: same outputs
    path = tmp_path / f"{cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, rtol=1e-5, atol=1e-5)
    # 5./6. before training changes the weights (BN statistics would move)
    if twin:
        check_twin(model, x)
    if tflite:
        check_tflite(model, tmp_path)
    # 4. one training step: finite loss, the weights move, BN statistics update. Eager: tracing a
    # training step takes ~45 s on 2 shared cores, an eager step a few seconds.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=SparseCategoricalCrossEntropy(), run_eagerly=True)
    labels = np.random.default_rng(1).integers(0, num_classes, (2, *hw)).astype("int32")
    labels[0, :2] = 255  # ignore pixels
    before = [np.array(v) for v in model.trainable_weights]
    stats = [np.array(v) for v in model.non_trainable_weights if "moving_mean" in v.path]
    loss = float(np.asarray(model.train_on_batch(x, labels)).reshape(-1)[0])
    assert np.isfinite(loss), loss
    moved = [not np.array_equal(b, np.array(v)) for b, v in zip(before, model.trainable_weights)]
    assert np.mean(moved) >= 0.9, f"only {sum(moved)} of {len(moved)} trainable weights changed"
    assert moved[-1] or moved[-2], "the classifier did not train"
    after = [np.array(v) for v in model.non_trainable_weights if "moving_mean" in v.path]
    assert all(not np.array_equal(a, b) for a, b in zip(stats, after)), "BatchNormalization statistics did not update"
    return model


def check_twin(model, x):
    """Hook: the tf_keras twin reproduces the model (the QAT path starts from it)."""
    try:
        from kseg.quantize.twin import assert_twin_equal, to_tf_keras
    except ImportError:
        pytest.skip("quantize issue: kseg.quantize.twin not available yet")
    twin = to_tf_keras(model)
    # float32 round-off through ~100 layers: 2.3e-5 measured on PSPNet (pretrained Lite0, |y| ≈ 7)
    assert_twin_equal(model, twin, x, atol=1e-5, rtol=1e-5)


def _run_tflite(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for img in x:
        feed = img[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            feed = np.clip(np.round(feed / scale + zero), 0, 255).astype(inp["dtype"])
        interp.set_tensor(inp["index"], feed)
        interp.invoke()
        y = interp.get_tensor(out["index"])[0]
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype("float32") - zero) * scale
        results.append(y)
    return np.stack(results), inp, out


def normalise_batchnorm(model, x):
    """Set every BatchNormalization's moving statistics to its batch statistics on ``x``.

    A deep randomly initialised network (SegNet, a random encoder) shrinks its activations
    layer after layer (1e-5…1e-12 at the logits), below any int8 scale; after this one
    forward pass each BN outputs zero-mean unit-variance features, so the logits are O(1)
    like a trained model's.
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0  # moving = batch statistics
    model(x, training=True)
    for layer, momentum in zip(bns, momenta):
        layer.momentum = momentum


def check_tflite(model, tmp_path, seed=3):
    """Float32 and full-int8 TFLite conversions of ``model`` (fixed input size) with builtin ops
    only; returns ``{"float32": ops, "int8": ops}``.

    The model's BatchNormalization statistics are first set from the calibration images
    (``normalise_batchnorm``) so random weights give O(1) outputs. One SavedModel export feeds
    both converters. The float32 model must reproduce the Keras
    outputs (max error ≤ 1e-3 × output range); the int8 model takes and returns uint8 and its
    dequantized logits must be clearly related to the Keras ones (correlation ≥ 0.4; a broken
    graph gives ~0). With random decoders and 4 calibration images this is no accuracy test:
    measured 1.00 (U-Net, U-Net Lite0), 0.80 (SegNet 1/8 width: int8 makes more ties for the
    unpooling), 0.79 (DeepLab v3+ Lite0), 0.50 (FCN-8s Lite0); int8 accuracy of trained models
    is ``kseg.export.parity``'s job.
    """
    import tensorflow as tf

    from kseg.export import assert_builtin_ops

    tmp_path = Path(tmp_path)
    h, w = model.input_shape[1:3]
    x = images((h, w), n=4, seed=seed)
    normalise_batchnorm(model, x)
    ref = np.asarray(model(x, training=False))
    span = float(ref.max() - ref.min())
    assert span > 1e-2, f"{model.name}'s outputs span only {span:.1e}; int8 would say nothing"
    saved = str(tmp_path / "saved_model")
    spec = tf.TensorSpec((1, h, w, 3), tf.float32, name="image")
    model.export(saved, format="tf_saved_model", input_signature=[spec], verbose=False)
    found = {}
    # float32
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "float32.tflite"
    path.write_bytes(converter.convert())
    found["float32"] = assert_builtin_ops(path)
    got, _, _ = _run_tflite(path, x)
    # 1e-3 of the output range: on an AVX-512 Intel Xeon TensorFlow's oneDNN kernels (the Keras reference)
    # differ from XNNPACK's float32 by more than 1e-4 of it in the deepest network (U²-Net: 1.6e-3; within
    # 1e-4 with TF_ENABLE_ONEDNN_OPTS=0, and on the AMD EPYC VM); a broken conversion is off by the order
    # of the range itself
    assert np.abs(got - ref).max() <= 1e-3 * span + 1e-5, (np.abs(got - ref).max(), span)
    # full int8, uint8 I/O; TFLITE_BUILTINS_INT8 makes the converter fail on any other op
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([img[None]] for img in x)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    path = tmp_path / "int8.tflite"
    path.write_bytes(converter.convert())
    found["int8"] = assert_builtin_ops(path)
    got, inp, out = _run_tflite(path, x)
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    corr = np.corrcoef(got.reshape(-1), ref.reshape(-1))[0, 1]
    print(f"int8 vs Keras logits correlation: {corr:.3f}")
    assert corr >= 0.4, corr
    assert "CONV_2D" in found["int8"]
    return found


def check_twin_and_tflite(cls, init_kwargs, hw, tmp_path):
    """The conversion half of ``run_model_tests`` alone (tf_keras twin, float32 and int8 TFLite), for
    models whose conversions take a minute on two cores: their default test runs with
    ``tflite=False, twin=False`` and this one is marked slow (``make test-all``, CI's slow step)."""
    model = cls(**init_kwargs, input_shape=(*hw, 3))
    check_twin(model, images(hw))
    check_tflite(model, Path(tmp_path))
