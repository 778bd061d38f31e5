import pytest

from kseg.models import DeepLabV3Plus
from tests.models.model_tester import run_model_tests


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab(output_stride, tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16, "output_stride": output_stride},
                    tmp_path=tmp_path, tflite=False, twin=False)


@pytest.mark.slow
def test_deeplab_twin_and_int8(tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16}, input_shapes=((64, 64),), tmp_path=tmp_path)


def test_deeplab_mobilenet_v2_encoder(tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16, "encoder": "mobilenet_v2", "output_stride": 32},
                    input_shapes=((64, 64),), tmp_path=tmp_path, tflite=False, twin=False)
