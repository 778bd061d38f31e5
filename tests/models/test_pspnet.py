import pytest

from kseg.errors import KsegError
from kseg.models import PSPNet
from tests.models.model_tester import run_model_tests


def test_pspnet(tmp_path):
    run_model_tests(PSPNet, {"num_classes": 3, "filters": 16}, input_shapes=((96, 96), (96, 144)), tmp_path=tmp_path,
                    tflite=False, twin=False)


@pytest.mark.slow
def test_pspnet_twin_and_int8(tmp_path):
    run_model_tests(PSPNet, {"num_classes": 3, "filters": 16, "pretrained": True}, input_shapes=((96, 96),), tmp_path=tmp_path)


def test_pspnet_pool_sizes_follow_the_input():
    # 96x144 at output stride 8: a 12x18 map; bin b pools (12/b)x(18/b) windows
    model = PSPNet(num_classes=3, filters=16, input_shape=(96, 144, 3))
    assert [model.get_layer(f"ppm_pool{b}").pool_size for b in (1, 2, 3, 6)] == [(12, 18), (6, 9), (4, 6), (2, 3)]
    assert model.get_layer("ppm_concat").output.shape[-1] == 320 + 4 * 80  # P5 + 4 bins of 320/4


def test_pspnet_rejects_sizes_the_bins_do_not_divide():
    # output stride 8 x lcm(1, 2, 3, 6) = 48
    with pytest.raises(KsegError, match=r"cannot take input 64×64: height and width must be multiples of 48"):
        PSPNet(num_classes=3, input_shape=(64, 64, 3))
    with pytest.raises(KsegError, match=r"multiples of 96"):
        PSPNet(num_classes=3, input_shape=(48, 48, 3), output_stride=16)
    with pytest.raises(KsegError, match=r"fixed input size .* multiples of 48, e\.g\. \(384, 480, 3\)"):
        PSPNet(num_classes=3, input_shape=(None, None, 3))
