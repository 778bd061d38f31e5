import pytest

from kseg.errors import KsegError
from kseg.models import DeepLabV3Plus
from tests.models.model_tester import run_model_tests


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab(output_stride, tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16, "output_stride": output_stride},
                    tmp_path=tmp_path, tflite=False, twin=False)


@pytest.mark.slow
def test_deeplab_twin_and_int8(tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16, "pretrained": True}, input_shapes=((64, 64),), tmp_path=tmp_path)


def test_deeplab_mobilenet_v2_encoder(tmp_path):
    run_model_tests(DeepLabV3Plus, {"num_classes": 3, "filters": 16, "encoder": "mobilenet_v2", "output_stride": 16},
                    input_shapes=((64, 64),), tmp_path=tmp_path, tflite=False, twin=False)


@pytest.mark.parametrize(("encoder", "output_stride", "rates"), [("resnet50", 16, 6), ("mobilenet_v2", 8, 12)])
def test_deeplab_atrous_rates_and_decoder(encoder, output_stride, rates):
    model = DeepLabV3Plus(num_classes=5, encoder=encoder, output_stride=output_stride, input_shape=(128, 96, 3))
    assert [model.get_layer(f"aspp_b{i}_conv").dilation_rate[0] for i in (1, 2, 3)] == [rates, 2 * rates, 3 * rates]
    assert tuple(model.get_layer("aspp_proj_conv").output.shape[1:]) == (128 // output_stride, 96 // output_stride, 256)
    assert tuple(model.get_layer("decoder_concat").output.shape[1:]) == (32, 24, 256 + 48)  # stride 4: ASPP + P2
    assert tuple(model.output.shape[1:]) == (128, 96, 5)


def test_deeplab_needs_a_fixed_size():
    with pytest.raises(KsegError, match=r"fixed input size .* e\.g\. \(512, 512, 3\)"):
        DeepLabV3Plus(num_classes=2, input_shape=(None, None, 3))
    with pytest.raises(KsegError, match="output_stride=4"):
        DeepLabV3Plus(num_classes=2, output_stride=4)
