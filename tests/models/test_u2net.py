import keras
import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.losses import SparseCategoricalCrossEntropy
from kseg.models import U2Net, build_model
from tests.models.model_tester import check_twin_and_tflite, images, run_model_tests


SMALL = {"num_classes": 2, "width": 0.25}


def test_u2net_small(tmp_path):
    run_model_tests(U2Net, SMALL, input_shapes=((64, 64), (96, 128)), tmp_path=tmp_path, tflite=False, twin=False)


@pytest.mark.slow
def test_u2net_small_twin_and_int8(tmp_path):
    check_twin_and_tflite(U2Net, SMALL, (64, 64), tmp_path)


def test_u2net_full_architecture_at_quarter_width(tmp_path):
    run_model_tests(U2Net, {"num_classes": 2, "small": False, "width": 0.125}, input_shapes=((32, 32), (64, 96)),
                    tmp_path=tmp_path, tflite=False, twin=False)


def _trainable(model, prefix=""):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights if w.path.startswith(prefix))


def test_u2net_parameter_counts():
    # REBNCONV = 3x3 conv with bias + BN (gamma, beta trainable; mean, variance not)
    rebnconv = lambda cin, cout: 9 * cin * cout + cout + 2 * cout  # noqa: E731
    # RSU-7 of U²-Net†'s first stage: in 3->64, a U of 16 channels (6 levels + dilated bottom,
    # the decoder concatenating 16+16), back to 64
    rsu7 = rebnconv(3, 64) + rebnconv(64, 16) + 5 * rebnconv(16, 16) + rebnconv(16, 16) \
        + 5 * rebnconv(32, 16) + rebnconv(32, 64)
    # 1,920 + 9,264 + 5 x 2,352 + 2,352 + 5 x 4,656 + 18,624
    assert rsu7 == 67_200
    small = U2Net(num_classes=1, input_shape=(64, 64, 3))
    assert _trainable(small, "en1_") == rsu7
    # the paper: U²-Net† 1.1M parameters (4.7 MB), U²-Net 44.0M (176.3 MB)
    assert _trainable(small) == 1_131_181 and round(_trainable(small) / 1e6, 1) == 1.1
    assert small.count_params() == 1_131_181 + 2 * 2848  # + BN moving mean and variance
    full = U2Net(num_classes=1, input_shape=(64, 64, 3), small=False)
    assert _trainable(full) == 44_009_869 and round(_trainable(full) / 1e6, 1) == 44.0


def test_u2net_deep_supervision(tmp_path):
    model = U2Net(num_classes=2, input_shape=(32, 32, 3), width=0.25, deep_supervision=True)
    assert set(model.output_names) == {"logits", "side1", "side2", "side3", "side4", "side5", "side6"}
    x = images((32, 32))
    out = model(x, training=False)
    assert all(np.asarray(v).shape == (2, 32, 32, 2) for v in out.values())
    # the fused output is the 1x1 convolution of the six side logits
    k, b = model.get_layer("fuse_conv").get_weights()
    sides = np.concatenate([np.asarray(out[f"side{i}"]) for i in range(1, 7)], axis=-1)
    np.testing.assert_allclose(sides @ k[0, 0] + b, np.asarray(out["logits"]), atol=1e-5)
    # one loss on all seven outputs (the paper's deep supervision)
    model.compile(optimizer="adam", loss=SparseCategoricalCrossEntropy(), run_eagerly=True)
    labels = np.random.default_rng(0).integers(0, 2, (2, 32, 32)).astype("int32")
    logs = model.train_on_batch(x, {k: labels for k in model.output_names}, return_dict=True)
    assert np.isfinite(logs["loss"]) and len([k for k in logs if k.endswith("_loss")]) == 7
    before = np.asarray(model(x, training=False)["logits"])
    # the export model: fused logits only, same weights; and a .keras round trip keeps the flag
    single = model.without_deep_supervision()
    assert single.output_shape == (None, 32, 32, 2) and not single.deep_supervision
    np.testing.assert_allclose(np.asarray(single(x, training=False)), before, atol=1e-5)
    model.save(tmp_path / "ds.keras")
    loaded = keras.saving.load_model(tmp_path / "ds.keras")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)["logits"]), before, atol=1e-5)


def test_u2net_registry_and_errors():
    m = build_model("u2net", num_classes=1, input_shape=(32, 32, 3), width=0.25)
    assert isinstance(m, U2Net) and m.output_shape == (None, 32, 32, 1)
    with pytest.raises(KsegError, match="multiples of 32"):
        U2Net(input_shape=(48, 48, 3))
