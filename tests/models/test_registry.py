import pytest

from kseg.errors import KsegError
from kseg.models import FCN, MODELS, PSPNet, build_model


def test_registry_names_and_errors():
    assert set(MODELS) == {"fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "pspnet", "deeplab_v3_plus", "u2net",
                           "segformer", "hrnet", "selfie"}
    with pytest.raises(KsegError, match="unknown model 'unet3'; use one of fcn32s, fcn16s, fcn8s, unet"):
        build_model("unet3")
    with pytest.raises(KsegError, match="has no argument 'widht'"):
        build_model("segnet", num_classes=2, widht=2)
    with pytest.raises(KsegError, match=r"multiples of 32 \(e\.g\."):
        build_model("deeplab_v3_plus", num_classes=2, input_shape=(100, 100, 3))


def test_registry_builds_the_named_model():
    model = build_model("fcn16s", num_classes=4, encoder="mobilenet_v2", fc_filters=8, input_shape=(64, 64, 3))
    assert isinstance(model, FCN) and model.variant == "16s" and model.get_config()["variant"] == "16s"
    assert model.get_layer("upscore16").strides == (16, 16)
    model = build_model("pspnet", num_classes=4, filters=8, input_shape=(48, 48, 3))
    assert isinstance(model, PSPNet) and model.output_shape == (None, 48, 48, 4)


def test_registry_variant_is_fixed_by_the_name():
    with pytest.raises(KsegError, match="model fcn8s has no argument 'variant'"):
        build_model("fcn8s", num_classes=2, variant="32s")


def test_mask_rcnn_is_exported_but_not_a_semantic_registry_entry():
    import kseg.models
    from kseg.models.mask_rcnn import MaskRCNN

    assert kseg.models.MaskRCNN is MaskRCNN
    assert "mask_rcnn" not in kseg.models.MODELS
