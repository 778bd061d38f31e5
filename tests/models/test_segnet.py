import numpy as np
import tensorflow as tf

from kseg.models import SegNet
from kseg.models.blocks import MaxUnpooling2D
from tests.models.model_tester import check_tflite, run_model_tests


def test_segnet_small(tmp_path):
    run_model_tests(SegNet, {"num_classes": 3, "width": 0.125}, tmp_path=tmp_path, tflite=False)


def test_segnet_converts_with_builtin_ops_only(tmp_path):
    # float32 (outputs equal Keras') and full int8 under TFLITE_BUILTINS_INT8: the unpooling
    # by indices becomes strided slices, MAXIMUM, EQUAL, MUL/SUB, PACK and RESHAPE
    ops = check_tflite(SegNet(num_classes=3, width=0.125, input_shape=(64, 64, 3)), tmp_path)
    for kind in ("float32", "int8"):
        assert {"EQUAL", "MAXIMUM", "MUL", "STRIDED_SLICE"} <= set(ops[kind]), (kind, ops[kind])
        assert not any("ARGMAX" in op or "SCATTER" in op for op in ops[kind]), ops[kind]


def _reference_unpool(y, x):
    """tf.nn.max_pool_with_argmax + scatter: SegNet's definition."""
    _, idx = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID", include_batch_in_index=True)
    out = tf.scatter_nd(tf.reshape(idx, (-1, 1)), tf.reshape(y, (-1,)), (tf.size(x, out_type=tf.int64),))
    return tf.reshape(out, tf.shape(x)).numpy()


def test_unpooling_equals_argmax_scatter_with_ties():
    rng = np.random.default_rng(0)
    for shape in ((2, 8, 6, 3), (1, 4, 4, 5)):
        x = rng.normal(size=shape).astype("float32")
        x[0, :2, :2, 0] = 1.5  # a 2x2 window of equal values: argmax picks the first
        x[0, 2:4, 2:4, 1] = np.array([[0.2, 3.0], [3.0, 3.0]])
        x = np.round(x, 1)  # more ties
        y = rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype("float32")
        got = np.asarray(MaxUnpooling2D()([y, x]))
        np.testing.assert_array_equal(got, _reference_unpool(y, x))


def test_segnet_paper_parameter_count():
    conv_bn = lambda a, b: 9 * a * b + 4 * b  # noqa: E731  (no bias; BN: gamma, beta, mean, var)
    enc = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
           (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    dec = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256), (256, 256), (256, 256),
           (256, 128), (128, 128), (128, 64), (64, 64)]
    encoder = sum(conv_bn(a, b) for a, b in enc)
    assert abs(sum(9 * a * b for a, b in enc) - 14.7e6) / 14.7e6 < 0.01  # VGG16's 13 conv weights
    want = encoder + sum(conv_bn(a, b) for a, b in dec) + (9 * 64 * 11 + 11)
    assert SegNet(num_classes=11, input_shape=(64, 64, 3)).count_params() == want
    assert abs(want - 29.5e6) / 29.5e6 < 0.01
