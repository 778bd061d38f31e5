import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import HRNet, build_model
from tests.models.model_tester import check_twin_and_tflite, run_model_tests

TINY = {"width": 4, "stage1_filters": 8, "stem_filters": 8}


def test_hrnet_w18_small_tiny(tmp_path):
    run_model_tests(HRNet, {"num_classes": 3, **TINY}, input_shapes=((64, 64), (64, 96)), tmp_path=tmp_path,
                    tflite=False, twin=False)


@pytest.mark.slow
def test_hrnet_w18_small_tiny_twin_and_int8(tmp_path):
    check_twin_and_tflite(HRNet, {"num_classes": 3, **TINY}, (64, 64), tmp_path)


def _trainable(model, prefix=""):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights if w.path.startswith(prefix))


def test_hrnet_parameter_counts():
    model = HRNet(num_classes=19, input_shape=(64, 64, 3))
    # a basic block of the 18-channel branch: two 3x3 convs without bias, each + BN (gamma, beta)
    assert _trainable(model, "stage2_module0_branch0_block0_") == 2 * (9 * 18 * 18 + 2 * 18) == 5_904
    # the fusion into branch 0 of a two-branch module: 1x1 conv 36 -> 18 + BN
    assert _trainable(model, "stage2_module0_fuse_1to0") == 36 * 18 + 2 * 18
    # the HRNetV2 head: 1x1 conv (with bias) + BN on 18+36+72+144 = 270 channels, classifier
    assert _trainable(model, "head_") + _trainable(model, "logits") == 270 * 270 + 270 + 2 * 270 + 270 * 19 + 19
    # the paper: HRNetV2-W18-Small-v2 3.9M, -Small-v1 1.5M, HRNetV2-W18 9.6M
    assert _trainable(model) == 3_939_579 and round(_trainable(model) / 1e6, 1) == 3.9
    v1 = HRNet(num_classes=19, input_shape=(64, 64, 3), variant="w18_small_v1")
    assert round(_trainable(v1) / 1e6, 1) == 1.5
    assert round(_trainable(HRNet(num_classes=19, input_shape=(64, 64, 3), variant="w18")) / 1e6, 1) == 9.6


def test_hrnet_branches_and_errors():
    m = build_model("hrnet", num_classes=2, input_shape=(64, 96, 3), **TINY)
    # four parallel branches at strides 4, 8, 16, 32 with 4, 8, 16, 32 channels reach the head
    shapes = [m.get_layer(f"stage4_module1_fuse_out{i}_relu").output.shape[1:] for i in range(4)]
    assert shapes == [(16, 24, 4), (8, 12, 8), (4, 6, 16), (2, 3, 32)]
    with pytest.raises(KsegError, match="variant 'w64' unknown"):
        HRNet(variant="w64")
    with pytest.raises(KsegError, match="multiples of 32"):
        HRNet(input_shape=(100, 100, 3))
