import pytest

from kseg.errors import KsegError
from kseg.models import PSPNet
from tests.models.model_tester import run_model_tests


def test_pspnet(tmp_path):
    run_model_tests(PSPNet, {"num_classes": 3, "filters": 16}, input_shapes=((96, 96), (96, 144)), tmp_path=tmp_path,
                    tflite=False, twin=False)


@pytest.mark.slow
def test_pspnet_twin_and_int8(tmp_path):
    run_model_tests(PSPNet, {"num_classes": 3, "filters": 16}, input_shapes=((96, 96),), tmp_path=tmp_path)


def test_pspnet_rejects_sizes_the_bins_do_not_divide():
    with pytest.raises(KsegError, match="divisible by the bins"):
        PSPNet(num_classes=3, input_shape=(64, 64, 3))
    with pytest.raises(KsegError, match="fixed input size"):
        PSPNet(num_classes=3, input_shape=(None, None, 3))
