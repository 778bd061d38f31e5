"""tf.data pipeline: decode → LUT → joint geometry → colour → normalise → batch → prefetch.

Example:
    from kseg.data import open_dataset
    from kseg.data.pipeline import Augment, make_dataset
    ds = open_dataset("../shared/data/people-parsing", "ccp", groups="person")
    batches = make_dataset(ds, size=(256, 256), batch_size=16, augment=Augment(portrait=0.5))
    images, masks = next(iter(batches))   # float32 (16, 256, 256, 3) in 0..255, int32 (16, 256, 256)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kseg.data import transforms as T
from kseg.errors import KsegError

log = logging.getLogger("kseg")
_REPORTED: set[str] = set()


@dataclass(frozen=True)
class Augment:
    """Training augmentation.

    Attributes:
        scale: zoom range (log-uniform); 1 means the image just covers the output.
        rotate: maximum rotation in degrees (0 turns it off).
        flip: random horizontal flips.
        portrait: probability of a head-and-shoulders crop instead of a random crop.
        photometric: colour jitter, blur and noise.
    """

    scale: tuple = (0.5, 2.0)
    rotate: float = 10.0
    flip: bool = True
    portrait: float = 0.0
    photometric: bool = True


NORMALIZATIONS = {
    None: (0.0, 1.0),
    "none": (0.0, 1.0),
    "minus1_1": (127.5, 127.5),
    "lite": (127.0, 128.0),
    "unit": (0.0, 255.0),
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


def _png_size(data: bytes):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _jpeg_size(data: bytes):
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e


def check_sample(sample) -> str | None:
    """Why ``sample`` cannot be used (one line naming the file), or ``None`` when it looks fine.

    Reads file headers only (no decoding): missing, empty, truncated or non-JPEG/PNG files and
    masks whose size differs from their image's are caught; subtler corruption is left to the
    decoder.
    """
    data = _read(sample.image)
    if isinstance(data, OSError):
        return f"image {sample.image} cannot be read ({data.strerror}); check the path"
    if not data:
        return f"image {sample.image} is empty (0 bytes); replace or remove it"
    if data[:2] == b"\xff\xd8":
        hw = _jpeg_size(data)
        truncated = b"\xff\xd9" not in data[-64:]
    else:
        hw = _png_size(data)
        truncated = hw is not None and b"IEND" not in data[-32:]
    if hw is None:
        return f"image {sample.image} is not a valid JPEG/PNG; replace or remove it"
    if truncated:
        return f"image {sample.image} is truncated (the file ends early); re-copy or remove it"
    name = sample.mask if isinstance(sample.mask, str) else f"<mask of {sample.image}>"
    mdata = _read(sample.mask) if isinstance(sample.mask, str) else bytes(sample.mask)
    if isinstance(mdata, OSError):
        return f"mask {name} cannot be read ({mdata.strerror}); check the path"
    mhw = _png_size(mdata)
    if mhw is None:
        return f"mask {name} is not a PNG; masks must be PNG label images"
    if b"IEND" not in mdata[-32:]:
        return f"mask {name} is truncated (the PNG ends early); re-copy or remove it"
    if mhw != hw:
        return (f"mask {name} is {mhw[1]}×{mhw[0]} but its image is {hw[1]}×{hw[0]}; "
                "masks must match their image's size")
    return None


def check_samples(ds) -> dict[int, str]:
    """``{index: reason}`` for every sample of ``ds`` that ``check_sample`` rejects."""
    bad = {}
    for i, s in enumerate(ds.samples):
        reason = check_sample(s)
        if reason:
            bad[i] = reason
    return bad


def _tensors(ds):
    images = [s.image for s in ds.samples]
    mask_paths = [s.mask if isinstance(s.mask, str) else "" for s in ds.samples]
    mask_bytes = [b"" if isinstance(s.mask, str) else bytes(s.mask) for s in ds.samples]
    sources = np.array([s.source for s in ds.samples], np.int32)
    return images, mask_paths, mask_bytes, sources


def _decode_image(data, min_side):
    """Decode; a JPEG whose shorter side is ≥ 2·``min_side`` is decoded at 1/2 or 1/4 scale
    (libjpeg's DCT scaling: several times cheaper than a full decode plus a resize).
    Returns ``(image, full_hw)``."""
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    if not min_side:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return image, tf.shape(image)[:2]

    def jpeg():
        hw = tf.image.extract_jpeg_shape(data)[:2]
        short = tf.reduce_min(hw)
        idx = tf.cast(short >= 2 * min_side, tf.int32) + tf.cast(short >= 4 * min_side, tf.int32)
        branches = [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in (1, 2, 4)]
        return tf.switch_case(idx, branches), hw

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image, tf.shape(image)[:2]

    return tf.cond(is_jpeg, jpeg, other)


def _decode(image_path, mask_path, mask_bytes, source, luts, num_classes, max_side, min_side=0):
    data = tf.io.read_file(image_path)
    image, full_hw = _decode_image(data, min_side)
    raw = tf.cond(tf.strings.length(mask_path) > 0, lambda: tf.io.read_file(mask_path), lambda: mask_bytes)
    raw = tf.io.decode_png(raw, channels=1)[..., 0]
    same = tf.reduce_all(tf.equal(full_hw, tf.shape(raw)))
    tf.debugging.Assert(
        same,
        ["mask does not match its image's size:", image_path, tf.shape(raw), "vs", tf.shape(image)[:2]],
        summarize=4,
    )
    mask = tf.gather(luts[source], tf.cast(raw, tf.int32))
    if min_side:
        # the image may have been decoded at reduced scale: bring the mask to its size
        mask = tf.cond(tf.reduce_all(tf.equal(tf.shape(image)[:2], full_hw)), lambda: mask,
                       lambda: tf.image.resize(mask[..., None], tf.shape(image)[:2], method="nearest")[..., 0])
    bad = tf.logical_and(mask >= num_classes, mask != T.IGNORE)
    tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                        ["mask has labels outside the classes:", image_path], summarize=2)
    image = tf.cast(image, tf.float32)
    if max_side:
        # keep cached samples small: shrink so the longer side is at most max_side
        h = tf.cast(tf.shape(image)[0], tf.float32)
        w = tf.cast(tf.shape(image)[1], tf.float32)
        f = tf.minimum(1.0, max_side / tf.maximum(h, w))
        new = tf.cast(tf.round(tf.stack([h * f, w * f])), tf.int32)
        image = tf.image.resize(image, new, method="area")
        mask = tf.image.resize(mask[..., None], new, method="nearest")[..., 0]
    return tf.cast(tf.round(image), tf.uint8), mask


def make_dataset(
    ds,
    *,
    size=(256, 256),
    batch_size=8,
    training=True,
    augment: Augment | None = None,
    seed=0,
    cache=False,
    on_error="skip",
    normalization=None,
    shuffle=True,
    repeat=False,
    drop_remainder=None,
    check=True,
    start_epoch=0,
):
    """Build a ``tf.data.Dataset`` of ``(images float32 (B,H,W,3), masks int32 (B,H,W))``.

    Args:
        ds: a ``kseg.data.readers.SegDataset``.
        size: output ``(H, W)``.
        batch_size: images per batch.
        training: random augmentation and shuffling; otherwise a deterministic resize.
        augment: an ``Augment`` (default ``Augment()`` when training).
        seed: makes shuffling and augmentation reproducible.
        cache: ``False``, ``"memory"``, or a file path: decoded samples (longer side at most
            2× the output's) are kept so later epochs skip JPEG decoding.
        on_error: ``"skip"`` drops unreadable or mismatched samples (each is reported once, as
            a warning on the ``kseg`` logger, with its one-line reason; corruption that only
            the decoder sees is dropped by tf.data's ``ignore_errors``); ``"fail"`` raises
            ``KsegError`` naming the first bad file.
        normalization: ``None`` (0..255, the models normalise themselves), ``"minus1_1"``,
            ``"lite"`` ((x-127)/128), ``"unit"`` (x/255) or
            ``"imagenet"`` (per-channel mean/std of ImageNet).
        shuffle: shuffle samples each epoch (training only).
        repeat: repeat forever (use with ``steps_per_epoch``).
        drop_remainder: default ``training``.
        check: read every file's header first (fast, no decoding) so that bad samples are
            reported once by name, before training starts.
        start_epoch: training without ``repeat``: the first pass over the data is this epoch's
            (shuffled as it would be after ``start_epoch`` passes), so that a resumed run sees
            the same order as one that was never interrupted.

    Returns:
        The batched, prefetched dataset.
    """
    if len(ds) == 0:
        raise KsegError(f"dataset {ds.name} has no samples; check the folder and --format")
    if on_error not in ("skip", "fail"):
        raise KsegError(f"on_error={on_error!r}: use skip or fail")
    if normalization not in NORMALIZATIONS:
        raise KsegError(f"normalization={normalization!r}: use one of {', '.join(map(str, NORMALIZATIONS))}")
    size = (int(size[0]), int(size[1]))
    bad = check_samples(ds) if check else {}
    if bad and on_error == "fail":
        raise KsegError(next(iter(bad.values())))
    if bad:
        for reason in bad.values():
            if reason not in _REPORTED:
                _REPORTED.add(reason)
                log.warning("skipping: %s", reason)
        ds = ds.subset([i for i in range(len(ds)) if i not in bad])
        if len(ds) == 0:
            raise KsegError("every sample was skipped (see the warnings above); fix the data")
    augment = augment or Augment()
    drop_remainder = training if drop_remainder is None else drop_remainder
    luts = tf.constant(ds.luts)
    images, mask_paths, mask_bytes, sources = _tensors(ds)
    num_classes = ds.num_classes
    max_side = 2 * max(size) if cache else 0
    # training crops are resampled anyway: decode big JPEGs at reduced scale (still ≥ the output)
    min_side = max(size) if training else 0

    decode = lambda a, b, c, d: _decode(a, b, c, d, luts, num_classes, max_side, min_side)  # noqa: E731
    tally = DecodeTally(ds, decode, (images, mask_paths, mask_bytes, sources), on_error)
    data = tf.data.Dataset.from_tensor_slices((np.arange(len(ds), dtype=np.int64), images, mask_paths,
                                               mask_bytes, sources))
    data = data.map(lambda i, a, b, c, d: (i, *decode(a, b, c, d)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if on_error == "skip":
        data = data.ignore_errors(log_warning=True)
    data = data.map(tally.mark)  # (index, image, mask) -> (image, mask); records that index went through
    if cache:
        data = data.cache("" if cache in (True, "memory") else str(cache))
    if training and shuffle:
        data = data.shuffle(min(len(ds), 2048), seed=seed, reshuffle_each_iteration=True)
        if not repeat:
            # each new iterator draws the next epoch's order; making one costs no decoding
            for _ in range(int(start_epoch)):
                iter(data)
    if repeat:
        data = data.repeat()
    mean, std = (tf.constant(v, tf.float32) for v in NORMALIZATIONS[normalization])

    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        data = tf.data.Dataset.zip((data, seeds))

        def geometry(pair, s):
            image, mask = pair
            s_geo, s_por, s_pick = T._seeds(s, 3)
            kw = dict(flip=augment.flip, max_degrees=augment.rotate)
            plain = lambda: T.random_scale_crop_flip(image, mask, size, s_geo, augment.scale, **kw)  # noqa: E731
            if augment.portrait > 0:
                return tf.cond(tf.random.stateless_uniform([], s_pick) < augment.portrait,
                               lambda: T.portrait_crop(image, mask, size, s_por, **kw), plain)
            return plain()

        data = data.map(geometry, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        data = data.map(lambda image, mask: T.resize(image, mask, size),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def finish(image, mask):
        image = tf.ensure_shape(image, (*size, 3))
        mask = tf.ensure_shape(mask, size)
        return image, tf.cast(mask, tf.int32)

    data = data.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment.photometric:
        # colour is vectorised over the batch: much cheaper than per image
        seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
        data = tf.data.Dataset.zip((data, seeds)).map(
            lambda batch, s: (_photometric_then_normalise(batch[0], s, mean, std, normalization), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif normalization not in (None, "none"):
        data = data.map(lambda x, y: ((x - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
    data = data.prefetch(tf.data.AUTOTUNE)
    data._kseg_tally = tally  # decode_report(data) reads it
    return data


class DecodeTally:
    """Which samples of a pipeline got through decoding, to name the ones the decoder rejected.

    The header check before training (``check_samples``) catches missing, empty and truncated
    files; corruption inside a file only the decoder sees. Each decoded sample marks its index
    here, so after one full pass the missing indices are exactly the samples that were skipped
    (``on_error="skip"``), and after a failure the culprit is among the unmarked ones.
    """

    def __init__(self, ds, decode, tensors, on_error):
        self.ds = ds
        self.on_error = on_error
        self._decode = decode
        self._tensors = tensors
        self.seen = tf.Variable(tf.zeros([len(ds)], tf.bool), trainable=False)
        self.reported = False

    def mark(self, index, image, mask):
        with tf.control_dependencies([self.seen.scatter_nd_update([[index]], [True])]):
            return tf.identity(image), tf.identity(mask)

    def missing(self) -> list[int]:
        """Indices not (yet) decoded."""
        return np.flatnonzero(~self.seen.numpy()).tolist()

    def reason(self, i: int) -> str | None:
        """Why sample ``i`` does not decode (one line naming the file), or ``None`` if it does."""
        a, b, c, d = (t[i] for t in self._tensors)
        try:
            self._decode(tf.constant(a), tf.constant(b), tf.constant(c), tf.constant(int(d)))
        except tf.errors.OpError as e:
            return _decode_reason(self.ds.samples[i], e)
        return None

    def first_failure(self) -> str | None:
        """The first sample (in file order) among those not decoded that the decoder rejects."""
        for i in self.missing():
            why = self.reason(i)
            if why:
                return why
        return None


def _decode_reason(sample, e) -> str:
    msg = " ".join(str(getattr(e, "message", e)).split())
    if "mask does not match its image's size" in msg:
        return f"mask of {sample.image} does not match its image's size; masks must match their image's size"
    if "labels outside the classes" in msg:
        return f"mask of {sample.image} has labels outside the classes; fix the mask or the dataset's class list"
    detail = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]|\[\[.*|\s+name:\s*\S*$", "", msg).strip().rstrip(".")[:100] or type(e).__name__
    return f"image {sample.image} cannot be decoded ({detail}); re-copy or remove it"


def decode_report(dataset, what: str = "training") -> str | None:
    """After a full pass over a ``make_dataset`` pipeline: one line naming the samples its decoder
    skipped (``on_error="skip"``), or ``None`` when none were (or it was reported already).

    Example:
        for _ in batches: pass
        line = decode_report(batches)   # "skipped 2 of 24 training samples ...: a.png (...), b.png"
    """
    tally = getattr(dataset, "_kseg_tally", None)
    if tally is None or tally.reported:
        return None
    missing = tally.missing()
    if not missing:
        return None
    tally.reported = True
    shown = [tally.reason(i) or f"image {tally.ds.samples[i].image}" for i in missing[:5]]
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (f"skipped {len(missing)} of {len(tally.ds)} {what} samples the decoder rejects: "
            f"{'; '.join(shown)}{more} (data.on_error: fail stops at the first)")


def decode_failure(dataset) -> str | None:
    """After a pipeline stopped with a decoding error (``on_error="fail"``): one line naming the file."""
    tally = getattr(dataset, "_kseg_tally", None)
    return tally.first_failure() if tally is not None else None


def _photometric_then_normalise(images, seed, mean, std, normalization):
    images = T.photometric(images, seed)
    if normalization not in (None, "none"):
        images = (images - mean) / std
    return images
