"""tf.data pipeline: shapes/dtypes, LUT mapping, reproducibility, on_error skip/fail."""

import shutil

import cv2
import numpy as np
import pytest

from kseg.data.pipeline import Augment, check_samples, make_dataset
from kseg.data.readers import SegDataset, SegSample
from kseg.data.synthetic import write_shapes_dataset
from kseg.errors import KsegError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), 12, size=(48, 64), num_classes=3, seed=0)


def collect(data):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data])
    return np.concatenate(xs), np.concatenate(ys)


def test_batch_shapes_and_dtypes(shapes):
    data = make_dataset(shapes, size=(32, 40), batch_size=4, augment=Augment(portrait=0.5))
    x, y = next(iter(data))
    assert x.shape == (4, 32, 40, 3) and x.dtype.name == "float32"
    assert y.shape == (4, 32, 40) and y.dtype.name == "int32"
    assert 0.0 <= x.numpy().min() and x.numpy().max() <= 255.0
    assert set(np.unique(y.numpy())) <= {0, 1, 2, 255}
    # training drops the remainder: 12 samples -> 3 batches of 4; 5 per batch -> 2
    assert len(list(make_dataset(shapes, size=(32, 32), batch_size=5))) == 2
    assert len(list(make_dataset(shapes, size=(32, 32), batch_size=5, training=False))) == 3


def test_validation_is_a_plain_resize_of_the_files(shapes):
    x, y = collect(make_dataset(shapes, size=(24, 32), batch_size=5, training=False))
    for i in (0, 7):
        image, mask = shapes.load(i)  # 48x64 -> 24x32: nearest picks every other pixel
        np.testing.assert_array_equal(y[i], mask[1::2, 1::2])
        np.testing.assert_allclose(x[i], image.reshape(24, 2, 32, 2, 3).mean(axis=(1, 3)), atol=0.51)


def test_normalisations(shapes):
    x0, _ = collect(make_dataset(shapes, size=(24, 32), batch_size=12, training=False))
    x1, _ = collect(make_dataset(shapes, size=(24, 32), batch_size=12, training=False, normalization="minus1_1"))
    x2, _ = collect(make_dataset(shapes, size=(24, 32), batch_size=12, training=False, normalization="imagenet"))
    np.testing.assert_allclose(x1, (x0 - 127.5) / 127.5, atol=1e-5)
    np.testing.assert_allclose(x2[..., 1], (x0[..., 1] - 116.28) / 57.12, atol=1e-4)


def test_lut_maps_raw_values_per_source(tmp_path):
    img = np.full((8, 8, 3), 100, np.uint8)
    raw = np.zeros((8, 8), np.uint8)
    raw[:, 4:] = 7
    raw[0, 0] = 9
    cv2.imwrite(str(tmp_path / "a.png"), img)
    ok, png = cv2.imencode(".png", raw)
    luts = np.full((2, 256), 255, np.uint8)
    luts[0, [0, 7, 9]] = [0, 1, 255]
    luts[1, [0, 7, 9]] = [1, 0, 0]
    ds = SegDataset("t", ("a", "b"), [SegSample(str(tmp_path / "a.png"), png.tobytes(), 0),
                                      SegSample(str(tmp_path / "a.png"), png.tobytes(), 1)], luts, ("s0", "s1"))
    _, y = collect(make_dataset(ds, size=(8, 8), batch_size=2, training=False))
    expect0 = np.where(raw == 7, 1, 0)
    expect0[0, 0] = 255
    np.testing.assert_array_equal(y[0], expect0)
    expect1 = np.where(raw == 7, 0, 1)
    expect1[0, 0] = 0
    np.testing.assert_array_equal(y[1], expect1)


def test_same_seed_same_batches(shapes):
    kw = dict(size=(32, 32), batch_size=4, augment=Augment(portrait=0.5))
    a = collect(make_dataset(shapes, seed=3, **kw))
    b = collect(make_dataset(shapes, seed=3, **kw))
    c = collect(make_dataset(shapes, seed=4, **kw))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_photometric_leaves_masks_unchanged(shapes):
    geo = dict(scale=(0.8, 1.25), rotate=8.0, flip=True)
    kw = dict(size=(32, 32), batch_size=4, seed=5)
    xa, ya = collect(make_dataset(shapes, augment=Augment(photometric=True, **geo), **kw))
    xb, yb = collect(make_dataset(shapes, augment=Augment(photometric=False, **geo), **kw))
    np.testing.assert_array_equal(ya, yb)
    assert np.abs(xa - xb).mean() > 1.0


@pytest.fixture
def broken(tmp_path):
    ds = write_shapes_dataset(tmp_path / "d", 6, size=(32, 32), seed=1)
    (tmp_path / "d" / "images" / "0002.png").write_bytes(b"this is not an image")
    small = np.zeros((16, 32), np.uint8)
    cv2.imwrite(str(tmp_path / "d" / "masks" / "0004.png"), small)
    return ds


def test_check_samples_names_each_bad_file(broken):
    bad = check_samples(broken)
    assert sorted(bad) == [2, 4]
    assert "0002.png is not a valid JPEG/PNG" in bad[2]
    assert bad[4].endswith("0004.png is 32×16 but its image is 32×32; masks must match their image's size")


def test_on_error_skip_drops_bad_samples_and_reports_once(broken, caplog):
    with caplog.at_level("WARNING", logger="kseg"):
        _, y = collect(make_dataset(broken, size=(32, 32), batch_size=1, training=False, on_error="skip"))
    assert len(y) == 4
    good = [broken.load(i)[1] for i in (0, 1, 3, 5)]
    np.testing.assert_array_equal(y, np.stack(good))
    reasons = [r.getMessage() for r in caplog.records]
    assert sum("0002.png" in r for r in reasons) == 1 and sum("0004.png" in r for r in reasons) == 1


def test_on_error_fail_raises_naming_the_file(broken):
    with pytest.raises(KsegError, match="0002.png"):
        make_dataset(broken, size=(32, 32), on_error="fail")


def test_decoder_only_corruption_is_skipped(tmp_path):
    ds = write_shapes_dataset(tmp_path / "d", 4, size=(32, 32), seed=2)
    path = tmp_path / "d" / "images" / "0001.png"
    data = bytearray(path.read_bytes())
    # keep the header and the end marker, garble the compressed pixels
    mid = len(data) // 2
    data[mid - 20:mid + 20] = b"\x00" * 40
    path.write_bytes(bytes(data))
    _, y = collect(make_dataset(ds, size=(32, 32), batch_size=1, training=False, on_error="skip"))
    assert len(y) == 3


def test_cache_gives_the_same_validation_batches(shapes, tmp_path):
    a = collect(make_dataset(shapes, size=(24, 32), batch_size=4, training=False))
    b = collect(make_dataset(shapes, size=(24, 32), batch_size=4, training=False, cache="memory"))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=0.51)  # cached images are stored as uint8


@pytest.mark.shared_data
def test_people_parsing_batch(shared_data):
    from kseg.data.readers import open_dataset

    ds = open_dataset(shared_data / "people-parsing", "ccp", groups="person").subset(range(8))
    x, y = next(iter(make_dataset(ds, size=(64, 64), batch_size=8, augment=Augment(portrait=1.0))))
    assert x.shape == (8, 64, 64, 3) and set(np.unique(y.numpy())) <= {0, 1, 255}
    # head-and-shoulders crops: a good share of each frame is person
    assert 0.1 < (y.numpy() == 1).mean() < 0.95
