import pytest

from kseg.models import FCN
from tests.models.model_tester import run_model_tests


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_light(variant, tmp_path):
    run_model_tests(FCN, {"num_classes": 3, "variant": variant, "encoder": "efficientnet_lite0", "fc_filters": 32},
                    input_shapes=((64, 64), (64, 96)), tmp_path=tmp_path, tflite=False, twin=False)


@pytest.mark.slow
def test_fcn8s_twin_and_int8(tmp_path):
    kwargs = {"num_classes": 3, "variant": "8s", "encoder": "efficientnet_lite0", "fc_filters": 32, "pretrained": True}
    run_model_tests(FCN, kwargs, input_shapes=((64, 64),), tmp_path=tmp_path)


def test_fcn8s_vgg16_parameter_count():
    vgg = sum(9 * a * b + b for a, b in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                                         (256, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512),
                                         (512, 512)])
    assert vgg == 14_714_688  # VGG16's 13 conv layers
    c = 21
    fc = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * c + c)
    skips = (512 * c + c) + (256 * c + c)
    ups = 4 * 4 * c * c + 4 * 4 * c * c + 16 * 16 * c * c  # bilinear-initialised, no bias
    preprocess = 3 * 3 + 3  # the fixed RGB->BGR / mean 1x1 conv
    want = vgg + fc + skips + ups + preprocess
    model = FCN(num_classes=c, variant="8s", encoder="vgg16", input_shape=(64, 64, 3))
    assert model.count_params() == want
    assert abs(want - 134.5e6) / 134.5e6 < 0.01  # "about 134M" (FCN-8s, PASCAL's 21 classes)


def test_bilinear_init_upsamples_a_constant():
    import numpy as np

    model = FCN(num_classes=2, variant="32s", encoder="efficientnet_lite0", fc_filters=8, input_shape=(64, 64, 3))
    k = model.get_layer("upscore32").get_weights()[0]
    assert k.shape == (64, 64, 2, 2) and np.allclose(k[:, :, 0, 1], 0.0)
    assert k[:, :, 0, 0].sum() == pytest.approx(32 * 32, rel=1e-6)  # stride**2: preserves a constant
