import pytest

from kseg.errors import KsegError
from kseg.models import MODELS, build_model


def test_registry_names_and_errors():
    assert set(MODELS) == {"fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplab_v3_plus"}
    with pytest.raises(KsegError, match="unknown model 'unet3'"):
        build_model("unet3")
    with pytest.raises(KsegError, match="has no argument 'widht'"):
        build_model("segnet", num_classes=2, widht=2)
    with pytest.raises(KsegError, match=r"multiples of 32 \(e\.g\."):
        build_model("deeplab_v3_plus", num_classes=2, input_shape=(100, 100, 3))
