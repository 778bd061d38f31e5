import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import SegFormer, build_model
from tests.models.model_tester import check_tflite, images, run_model_tests

TINY = {"embed_dims": (8, 16, 24, 32), "num_heads": (1, 2, 3, 4), "decoder_dim": 16}


def test_segformer_tiny(tmp_path):
    """Shared checks; the int8 ops are test_segformer_int8_ops, the whole conversion the slow test below."""
    run_model_tests(SegFormer, {"num_classes": 3, **TINY}, input_shapes=((64, 64), (64, 96)), tmp_path=tmp_path,
                    tflite=False)


@pytest.mark.slow
def test_segformer_tiny_float32_and_int8_tflite(tmp_path):
    """int8 TFLite: every op builtin; LayerNorm's negated mean is the one op the post-training
    converter leaves in float (DEQUANTIZE, NEG, QUANTIZE around it)."""
    check_tflite(SegFormer(num_classes=3, input_shape=(64, 64, 3), **TINY), tmp_path)


def test_segformer_int8_ops(tmp_path):
    ops = check_tflite(SegFormer(num_classes=3, input_shape=(32, 32, 3), depths=(1, 1, 1, 1), **TINY), tmp_path)
    # attention as BATCH_MATMUL + SOFTMAX, Mix-FFN's depthwise conv and GELU, LayerNorm's
    # MEAN/SQUARED_DIFFERENCE/RSQRT: all with int8 kernels
    assert {"BATCH_MATMUL", "SOFTMAX", "GELU", "DEPTHWISE_CONV_2D", "RSQRT", "SQUARED_DIFFERENCE"} <= set(ops["int8"])
    assert set(ops["int8"]) - set(ops["float32"]) == {"QUANTIZE", "DEQUANTIZE"}


@pytest.mark.slow
def test_segformer_qat_int8_is_all_integer(tmp_path):
    """Through QAT (the tf_keras twin, whose LayerNorm subtracts the mean: SUB, not NEG) the
    int8 model has no float op at all."""
    from kseg.export import assert_builtin_ops, to_tflite
    from kseg.quantize.qat import quantize_aware

    model = SegFormer(num_classes=3, input_shape=(64, 64, 3), depths=(1, 1, 1, 1), **TINY)
    x = images((64, 64), n=4)
    qat = quantize_aware(model, calibration_data=x)
    path = tmp_path / "qat.tflite"
    to_tflite(qat, path, quantization="qat", representative_data=x)
    ops = set(assert_builtin_ops(path))
    assert {"BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT"} <= ops and not ops & {"DEQUANTIZE", "NEG"}


def _trainable(model, prefix=""):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights if w.path.startswith(prefix))


def test_segformer_b0_parameter_count():
    def stage(c_in, c, k, sr, depth):
        n = k * k * c_in * c + c + 2 * c  # overlapping patch embedding + LayerNorm
        block = 2 * c + 4 * (c * c + c)  # norm1; Q, K, V, output projections (split by head: same count)
        if sr > 1:
            block += sr * sr * c * c + c + 2 * c  # sequence-reduction conv + its LayerNorm
        block += 2 * c + (c * 4 * c + 4 * c) + (9 * 4 * c + 4 * c) + (4 * c * c + c)  # norm2, Mix-FFN
        return n + depth * block + 2 * c  # + the stage's LayerNorm

    encoder = stage(3, 32, 7, 8, 2) + stage(32, 64, 3, 4, 2) + stage(64, 160, 3, 2, 2) + stage(160, 256, 3, 1, 2)
    assert encoder == 3_319_392  # MiT-B0
    decoder = sum(c * 256 + 256 for c in (32, 64, 160, 256)) + 4 * 256 * 256 + 2 * 256 + (256 * 19 + 19)
    model = SegFormer(num_classes=19, input_shape=(64, 64, 3))
    assert _trainable(model, "stage") == encoder
    assert _trainable(model) == encoder + decoder == 3_719_027
    assert model.count_params() == 3_719_027 + 2 * 256  # + the fuse BN's moving statistics
    assert round(_trainable(model) / 1e6, 1) == 3.7  # the paper: 3.7M (B0, 3.8M with ADE20K's 150 classes)


def test_segformer_errors_and_registry():
    with pytest.raises(KsegError, match="fixed input size"):
        SegFormer(input_shape=(None, None, 3))
    with pytest.raises(KsegError, match="divide by their heads"):
        SegFormer(input_shape=(64, 64, 3), embed_dims=(8, 15, 24, 32))
    m = build_model("segformer", num_classes=2, input_shape=(32, 32, 3), depths=(1, 1, 1, 1), **TINY)
    assert m.output_shape == (None, 32, 32, 2)


def test_segformer_selective_int8_keeps_attention_in_float(tmp_path):
    """to_tflite(..., "int8", float_ops=...): the named ops stay float (inputs float32), the
    convolutions are int8, I/O float; the card records the float ops; only with int8."""
    import json

    from ai_edge_litert.interpreter import Interpreter

    from kseg.export import to_tflite

    model = SegFormer(num_classes=3, input_shape=(32, 32, 3), depths=(1, 1, 1, 1), **TINY)
    x = images((32, 32), n=4)
    path = to_tflite(model, tmp_path / "mixed.tflite", "int8", representative_data=x,
                     float_ops=["BATCH_MATMUL", "SOFTMAX", "GELU", "MEAN", "SQUARED_DIFFERENCE", "RSQRT"])
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    first_input = {}
    for op in it._get_ops_details():
        ins = [i for i in op["inputs"] if i >= 0]
        first_input.setdefault(op["op_name"], set()).add(np.dtype(dtype[ins[0]]).name if ins else None)
    for name in ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT"):
        assert first_input[name] == {"float32"}, (name, first_input[name])
    assert first_input["CONV_2D"] == {"int8"}
    assert it.get_input_details()[0]["dtype"] == np.float32
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["float_ops"][:2] == ["BATCH_MATMUL", "SOFTMAX"] and card["quantization"] == "int8"
    # close to the float model (a tiny random model: agreement of the argmax, not accuracy)
    it.set_tensor(it.get_input_details()[0]["index"], x[:1].astype(np.float32))
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    want = np.asarray(model(x[:1]))
    assert np.mean(got.argmax(-1) == want.argmax(-1)) > 0.8
    with pytest.raises(KsegError, match="use it with quantization int8"):
        to_tflite(model, tmp_path / "f.tflite", "float16", float_ops=["SOFTMAX"])
