"""KERAS_BACKEND=jax: kseg train end to end, DataParallel on two CPU devices, and the checkpoint
exported to TFLite from the TensorFlow side; distillation and Mask R-CNN through Keras' stateless
training step. Skipped when JAX is not installed (pip install -e ".[jax]")."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="JAX is not installed (pip install -e '.[jax]')")

# Runs under KERAS_BACKEND=jax with two host devices: a DataParallel run (2 replicas × 2 images),
# then the model's output on a fixed input.
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax, keras
    from kseg.cli import main
    from kseg.models.saving import load_model

    cfg, out = sys.argv[1], sys.argv[2]
    assert main(["train", "--config", cfg, "--strategy", "mirrored", "--cpu-devices", "2"]) == 0
    model = load_model(out + "/runs/dp/last.keras")
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.save(out + "/x.npy", x)
    np.save(out + "/y_jax.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    print("RESULT " + json.dumps({"backend": keras.backend.backend(), "devices": jax.device_count()}))
""")


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    from kseg.data.synthetic import write_shapes_dataset

    out = tmp_path_factory.mktemp("jax")
    shapes = out / "shapes"
    ds = write_shapes_dataset(shapes, 24, size=(48, 64), num_classes=3, seed=1)
    (shapes / "classes.json").write_text(json.dumps({"classes": list(ds.class_names)}))
    cfg = out / "dp.yaml"
    cfg.write_text(
        f"name: dp\nout_dir: {out / 'runs'}\nmodel: {{name: unet, kwargs: {{filters: 4, depth: 2}}}}\n"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
        "  size: [32, 32]\n  batch_size: 2\n"
        "train: {epochs: 1, steps_per_epoch: 3, optimizer: sgd, learning_rate: 0.05, verbose: 2, "
        "early_stop_patience: null}\n"
    )
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(cfg), str(out)], capture_output=True, text=True,
                       env=_jax_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return out, r.stdout, result


def _jax_env():
    return dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")


def test_jax_trains_with_data_parallel_on_two_devices(jax_runs):
    out, stdout, result = jax_runs
    assert result == {"backend": "jax", "devices": 2}
    assert "mirrored strategy: 2 replicas; global batch 4 = 2 x 2; learning rate 0.1 (linear scaling of 0.05)" in stdout
    for f in ("best.keras", "last.keras", "history.csv", "curves.png", "backup"):
        assert (out / "runs" / "dp" / f).exists(), f
    rows = (out / "runs" / "dp" / "history.csv").read_text().splitlines()
    assert len(rows) == 2 and np.isfinite(float(rows[1].split(",")[rows[0].split(",").index("loss")]))


@pytest.mark.slow
def test_jax_data_parallel_equals_one_device_with_the_global_batch(jax_runs):
    # DataParallel computes the loss over the global batch: one device with that batch (4) and
    # the scaled learning rate takes the same steps
    out, _, _ = jax_runs
    r = subprocess.run([sys.executable, "-m", "kseg", "train", "--config", str(out / "dp.yaml"), "--set", "name=one",
                        "--set", "data.batch_size=4", "--set", "train.learning_rate=0.1"],
                       capture_output=True, text=True, env=_jax_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from kseg.models.saving import load_model

    dp = load_model(out / "runs" / "dp" / "last.keras").get_weights()
    one = load_model(out / "runs" / "one" / "last.keras").get_weights()
    for a, b in zip(dp, one):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_jax_checkpoint_exports_to_tflite_from_tensorflow(jax_runs, tmp_path):
    import keras

    from kseg.export import to_tflite
    from kseg.models.saving import load_model
    from kseg.quantize.qat import quantize_aware

    assert keras.backend.backend() == "tensorflow"
    out, _, _ = jax_runs
    model = load_model(out / "runs" / "dp" / "last.keras")
    x, y_jax = np.load(out / "x.npy"), np.load(out / "y_jax.npy")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), y_jax, rtol=0, atol=1e-4)
    quantize_aware(model, check_inputs=x)  # the tf_keras twin of the JAX-trained weights: QAT can start
    path = to_tflite(model, tmp_path / "jax.tflite", "float32")
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    y_tflite = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert y_tflite.shape == y_jax.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(y_tflite, y_jax, rtol=0, atol=1e-4)


DISTIL = textwrap.dedent("""
    import json
    import keras, numpy as np
    from kseg.models.distiller import Distiller, soft_target_loss
    from kseg.models.unet import UNet

    keras.utils.set_random_seed(1)
    teacher = UNet(num_classes=3, input_shape=(32, 32, 3), filters=8, depth=2)
    student = UNet(num_classes=3, input_shape=(32, 32, 3), filters=4, depth=2)
    frozen = [w.copy() for w in teacher.get_weights()]
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.full((8, 32, 32), 255, "int32")
    model = Distiller(student, teacher, alpha=1.0, temperature=2.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    before = float(soft_target_loss(teacher(x), student(x), 2.0))
    model.fit(x, y, batch_size=4, epochs=15, verbose=0)
    after = float(soft_target_loss(teacher(x), student(x), 2.0))
    same = all(np.array_equal(a, b) for a, b in zip(frozen, teacher.get_weights()))
    print("RESULT " + json.dumps({"backend": keras.backend.backend(), "before": before, "after": after, "frozen": same}))
""")


def test_jax_distils_through_the_stateless_training_step():
    """The teacher runs inside Model.compute_loss: under JAX that is the stateless step, which must
    see the teacher's variables and leave them as they were."""
    r = subprocess.run([sys.executable, "-c", DISTIL], capture_output=True, text=True, env=_jax_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert res["backend"] == "jax" and res["frozen"]
    assert res["after"] < 0.5 * res["before"], res


# A small Mask R-CNN trained under JAX with TensorFlow out of reach, as on a machine without it
# (Keras' stateless step: call(training=True) gives the backbone outputs, compute_loss the five
# losses; proposals through the keras.ops NMS; batches from instance_batches), then its detections
# on four images.
MASK_RCNN = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError("TensorFlow is kept out of this process")

    sys.meta_path.insert(0, NoTensorFlow())
    import keras, numpy as np
    from kseg.data.instances import instance_batches
    from kseg.data.readers import InstanceDataset
    from kseg.data.synthetic import make_instances
    from kseg.models.mask_rcnn import MaskRCNN

    out, config = sys.argv[1], json.loads(sys.argv[2])
    keras.utils.set_random_seed(0)
    samples = make_instances(8, size=(64, 64), num_classes=3, seed=0, max_shapes=3)
    boxes, cls, masks = np.zeros((8, 3, 4), "float32"), np.zeros((8, 3), "int32"), np.zeros((8, 3, 64, 64), "uint8")
    for i, s in enumerate(samples):
        k = len(s["class_ids"])
        boxes[i, :k], cls[i, :k], masks[i, :k] = s["boxes"], s["class_ids"], s["masks"]
    images = np.stack([s["image"] for s in samples]).astype("float32")
    y = {"boxes": boxes, "classes": cls, "masks": masks}
    model = MaskRCNN(**config)
    first = float(model.compute_losses(images[:4], {k: v[:4] for k, v in y.items()})["loss"])
    model.compile(keras.optimizers.Adam(2e-3))
    targets = [{"masks": s["masks"], "boxes": s["boxes"], "category_ids": s["class_ids"],
                "iscrowd": np.zeros(len(s["class_ids"]), bool)} for s in samples]
    inst = InstanceDataset("shapes", ("background", "circle", "rectangle"), [None] * 8, [None] * 8)
    inst.load = lambda i: (samples[i]["image"], targets[i])
    batches = instance_batches(inst, size=64, batch_size=4, max_instances=3, training=True, seed=0)
    hist = model.fit(batches, steps_per_epoch=2, epochs=15, verbose=0).history
    model.save_weights(out + "/mask_rcnn.weights.h5")
    det = model(images[:4])
    np.savez(out + "/det_jax.npz", images=images[:4], **{k: keras.ops.convert_to_numpy(v) for k, v in det.items()})
    print("RESULT " + json.dumps({"backend": keras.backend.backend(), "first": first, "tf": "tensorflow" in sys.modules,
                                  "history": {k: [float(x) for x in v] for k, v in hist.items()}}))
""")


MASK_RCNN_CONFIG = dict(num_classes=3, input_shape=[64, 64, 3], encoder="tiny", fpn_channels=16,
                        anchor_sizes=[8, 16, 32, 64, 128], rpn_pre_nms_train=200, rpn_post_nms_train=64,
                        rpn_pre_nms_test=200, rpn_post_nms_test=64, rpn_batch_size=128, roi_batch_size=32,
                        box_head_dim=64, mask_head_channels=16, mask_head_convs=2, max_detections=10,
                        score_threshold=0.0)


@pytest.mark.slow
def test_jax_trains_mask_rcnn_without_tensorflow_and_tensorflow_detects_the_same(tmp_path):
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    r = subprocess.run([sys.executable, "-c", MASK_RCNN, str(tmp_path), json.dumps(MASK_RCNN_CONFIG)], capture_output=True, text=True,
                       env=_jax_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    hist = res["history"]
    assert res["backend"] == "jax" and not res["tf"]
    assert set(hist) == {"loss", "rpn_cls", "rpn_box", "cls", "box", "mask"}
    assert all(np.isfinite(v).all() for v in hist.values())
    assert hist["loss"][-1] < 0.7 * res["first"], res
    assert hist["rpn_cls"][-1] < hist["rpn_cls"][0] and hist["mask"][-1] < hist["mask"][0], res

    # the JAX-trained weights in TensorFlow (the export path): the same detections, NMS included
    assert keras.backend.backend() == "tensorflow"
    model = MaskRCNN(**MASK_RCNN_CONFIG)
    model.load_weights(tmp_path / "mask_rcnn.weights.h5")
    want = np.load(tmp_path / "det_jax.npz")
    got = {k: keras.ops.convert_to_numpy(v) for k, v in model(want["images"]).items()}
    assert want["num_detections"].min() > 0
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["masks"], want["masks"], rtol=0, atol=1e-4)
