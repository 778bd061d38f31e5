from kseg.models import UNet
from tests.models.model_tester import run_model_tests


def test_unet_paper_small(tmp_path):
    run_model_tests(UNet, {"num_classes": 3, "filters": 4, "depth": 3}, input_shapes=((32, 32), (48, 64)),
                    tmp_path=tmp_path, tflite=False, twin=False)


def test_unet_encoder(tmp_path):
    run_model_tests(UNet, {"num_classes": 2, "encoder": "efficientnet_lite0", "decoder_filters": (16, 16, 8, 8)},
                    tmp_path=tmp_path)


def test_unet_paper_parameter_count():
    # two 3x3 convs per level with bias: conv(cin, cout) = 9 cin cout + cout
    conv = lambda cin, cout: 9 * cin * cout + cout  # noqa: E731
    down = conv(3, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256) \
        + conv(256, 512) + conv(512, 512)
    bottom = conv(512, 1024) + conv(1024, 1024)
    up = 0
    for c in (512, 256, 128, 64):
        up += 4 * (2 * c) * c + c  # 2x2 up-convolution 2c -> c
        up += conv(2 * c, c) + conv(c, c)  # after concatenation with the skip
    head = 64 * 2 + 2
    want = down + bottom + up + head
    assert want == 31_031_810  # "31.0M", as published for the 64…1024 configuration
    assert UNet(num_classes=2, input_shape=(64, 64, 3)).count_params() == want
