"""The dataset types and what every reader shares.

``SegSample`` / ``SegDataset`` (semantic samples plus a raw-value → class LUT per source),
``concat``, ``InstanceDataset`` and ``instances_from_semantic`` (for Mask R-CNN), image and
label decoding with clear errors (``read_image``, ``read_label``), LUT builders
(``identity_lut``, ``grouping_lut``) and image/mask folder pairing (``pair_folders``,
``missing_pairs``).
"""

from __future__ import annotations

import hashlib
import json

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

IGNORE = 255
UNKNOWN = 254  # LUT value for raw labels the map does not know: reported as out of range
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# --------------------------------------------------------------------------------------
# core types


@dataclass(frozen=True)
class SegSample:
    """One semantic sample.

    Attributes:
        image: path to a JPEG/PNG image.
        mask: path to a label PNG, or PNG-encoded bytes of a uint8 label image.
        source: row of ``SegDataset.luts`` that maps this sample's raw mask values.
    """

    image: str
    mask: str | bytes
    source: int = 0

    @property
    def mask_name(self) -> str:
        return self.mask if isinstance(self.mask, str) else f"<mask of {Path(self.image).name}>"


def default_colors(n: int) -> np.ndarray:
    """A fixed, distinct palette (background black)."""
    base = np.array(
        [
            (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
            (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
            (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
            (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
        ],
        dtype=np.uint8,
    )
    if n <= len(base):
        return base[:n].copy()
    rng = np.random.default_rng(0)
    extra = rng.integers(30, 255, size=(n - len(base), 3)).astype(np.uint8)
    return np.concatenate([base, extra])


@dataclass
class SegDataset:
    """Semantic segmentation samples with class names and raw-value → class LUTs.

    Attributes:
        name: a label for reports.
        class_names: names of classes ``0..num_classes-1``.
        samples: the samples.
        luts: ``(num_sources, 256)`` uint8; raw mask value → class id, 255 ignore, 254 unknown.
        sources: a name per LUT row.
        colors: ``(num_classes, 3)`` uint8 palette.

    Example:
        ds = open_dataset("../shared/data/camvid", "camvid", split="val")
        image, mask = ds.load(0)          # (360, 480, 3) uint8 RGB, (360, 480) uint8 ids / 255
        train, val = ds.split(0.1, seed=0)
    """

    name: str
    class_names: tuple
    samples: list
    luts: np.ndarray
    sources: tuple = ("data",)
    colors: np.ndarray | None = None

    def __post_init__(self):
        self.class_names = tuple(self.class_names)
        self.luts = np.asarray(self.luts, dtype=np.uint8).reshape(-1, 256)
        if self.colors is None:
            self.colors = default_colors(len(self.class_names))
        self.colors = np.asarray(self.colors, dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"SegDataset({self.name!r}, {len(self)} samples, classes={list(self.class_names)})"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample ``i``: ``(image HxWx3 uint8 RGB, mask HxW uint8 class ids / 255)``.

        Raises:
            KsegError: unreadable image or mask, size mismatch, label out of range.
        """
        s = self.samples[i]
        image = read_image(s.image)
        raw = read_label(s.mask, name=s.mask_name)
        if raw.shape != image.shape[:2]:
            raise KsegError(
                f"mask {s.mask_name} is {raw.shape[1]}×{raw.shape[0]} but its image "
                f"{Path(s.image).name} is {image.shape[1]}×{image.shape[0]}; masks must match "
                "their image's size"
            )
        mask = self.luts[s.source][raw]
        bad = (mask >= self.num_classes) & (mask != IGNORE)
        if bad.any():
            values = sorted(set(np.unique(raw[bad]).tolist()))[:8]
            raise KsegError(
                f"mask {s.mask_name} has label values {values} outside the {self.num_classes} "
                f"classes of {self.name} (0..{self.num_classes - 1}, 255 = ignore); fix the mask "
                "or the label map"
            )
        return image, mask

    def subset(self, indices) -> "SegDataset":
        """The samples at ``indices`` (in that order), with the same classes and LUTs."""
        return replace(self, samples=[self.samples[i] for i in indices])

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["SegDataset", "SegDataset"]:
        """Deterministic train/val split: the same seed gives the same split on any machine.

        Samples are keyed by their source name and image file name (never the folder the data
        sits in, so ``../shared/data`` and an absolute path split alike), ordered by that key,
        then shuffled by a SHA-1 of ``(seed, key)``; the split depends neither on the file
        system's listing order nor on numpy's RNG.

        Args:
            val_fraction: share of samples in the validation set, ``0 <= f < 1`` (rounded).
            seed: any integer; a different seed gives a different split.

        Returns:
            ``(train, val)`` SegDatasets named ``{name}/train`` and ``{name}/val``, each in
            image-path order.

        Example:
            train, val = ds.split(0.1, seed=0)
        """
        if not 0.0 <= val_fraction < 1.0:
            raise KsegError(f"val_fraction must be in [0, 1), got {val_fraction}; use e.g. 0.1")

        def key(i):
            s = self.samples[i]
            source = self.sources[s.source] if s.source < len(self.sources) else str(s.source)
            name = f"{source}/{Path(s.image).name}"
            return hashlib.sha1(f"{seed}:{name}".encode()).hexdigest(), name, s.image

        keyed = sorted(range(len(self.samples)), key=key)
        n_val = int(round(len(keyed) * val_fraction))
        val = sorted(keyed[:n_val], key=lambda i: self.samples[i].image)
        train = sorted(keyed[n_val:], key=lambda i: self.samples[i].image)
        return (
            replace(self.subset(train), name=f"{self.name}/train"),
            replace(self.subset(val), name=f"{self.name}/val"),
        )


def concat(datasets, name: str | None = None) -> SegDataset:
    """Concatenate datasets with the same classes into one (LUTs stacked, sources remapped).

    Args:
        datasets: SegDatasets with identical ``class_names``.
        name: name of the result (default: the names joined with ``+``).

    Returns:
        A SegDataset whose ``luts`` stack every input's rows and whose samples point at
        their own dataset's rows; the palette is the first dataset's.

    Example:
        people = concat([open_dataset(p, "ccp", groups="person"), open_dataset(m, "masks")])
    """
    datasets = list(datasets)
    if not datasets:
        raise KsegError("concat needs at least one dataset")
    classes = datasets[0].class_names
    for d in datasets[1:]:
        if d.class_names != classes:
            raise KsegError(
                f"cannot mix {datasets[0].name} (classes {list(classes)}) with {d.name} "
                f"(classes {list(d.class_names)}); open both with the same class grouping"
            )
    luts, sources, samples = [], [], []
    for d in datasets:
        offset = len(luts)
        luts.extend(d.luts)
        sources.extend(d.sources)
        samples.extend(replace(s, source=s.source + offset) for s in d.samples)
    return SegDataset(
        name=name or "+".join(d.name for d in datasets),
        class_names=classes,
        samples=samples,
        luts=np.stack(luts),
        sources=tuple(sources),
        colors=datasets[0].colors,
    )


# --------------------------------------------------------------------------------------
# decoding with clear errors


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KsegError(f"file {path} not found; restore it or remove it from the dataset") from None
    except OSError as e:
        raise KsegError(f"cannot read {path}: {e.strerror}") from None


# A cut-off file gets its own message ("truncated", not just "cannot be decoded"; decoders
# differ on whether they give up or return grey rows), found by the end marker near the end.
# Entropy-coded JPEG data never holds FF D9 (FF is stuffed with 00), so a window of 4 kB
# tolerates trailing bytes some writers append without missing a truncation.
def _png_truncated(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-4096:]


def _jpeg_truncated(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]


def read_image(path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB, or raise KsegError naming the file.

    Args:
        path: a JPEG/PNG/BMP/WebP file; grey and RGBA images come back as RGB.

    Raises:
        KsegError: missing, empty, truncated or undecodable file.

    Example:
        rgb = read_image("images/0001.jpg")  # (H, W, 3) uint8
    """
    import cv2

    data = _read_bytes(path)
    name = Path(path).name
    if not data:
        raise KsegError(f"image {path} is empty (0 bytes); replace or remove it")
    if _png_truncated(data) or _jpeg_truncated(data):
        raise KsegError(f"image {path} is truncated (the file ends early); re-copy or remove it")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise KsegError(f"image {path} cannot be decoded ({name} is not a valid JPEG/PNG); replace or remove it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(mask, name: str | None = None) -> np.ndarray:
    """Decode a label PNG (path or bytes) to HxW uint8 raw values (no LUT applied).

    Args:
        mask: a path, or PNG-encoded bytes of a uint8 label image.
        name: what to call it in errors (default: the path).

    Raises:
        KsegError: missing, empty, truncated, colour or 16-bit-over-255 masks.
    """
    import cv2

    name = name or str(mask)
    data = mask if isinstance(mask, (bytes, bytearray)) else _read_bytes(mask)
    if not data:
        raise KsegError(f"mask {name} is empty (0 bytes); replace or remove it")
    if _png_truncated(data):
        raise KsegError(f"mask {name} is truncated (the PNG ends early); re-copy or remove it")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise KsegError(f"mask {name} cannot be decoded; masks must be PNG label images")
    if arr.ndim == 3:
        # an RGB(A) mask saved by an image editor: accept it when it is grey
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            raise KsegError(
                f"mask {name} is a colour image; masks must be single-channel label PNGs "
                "(one class id per pixel)"
            )
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255:
            raise KsegError(f"mask {name} has values above 255; kseg masks are 8-bit label PNGs")
        arr = arr.astype(np.uint8)
    return arr


# --------------------------------------------------------------------------------------
# label maps


def identity_lut(num_classes: int, void: int | None = None) -> np.ndarray:
    """Raw value v → class v for v < num_classes; ``void`` and 255 → ignore; others unknown."""
    lut = np.full(256, UNKNOWN, np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE] = IGNORE
    if void is not None:
        lut[void] = IGNORE
    return lut


def grouping_lut(raw_names, groups: dict) -> tuple[tuple, np.ndarray]:
    """Build a LUT from a ``{class: [raw label names or ids, ...]}`` map.

    Args:
        raw_names: names of raw labels ``0..N-1``.
        groups: ordered mapping from new class name to the raw labels it takes (names or ints).
            Raw labels in no group are ignored (255).

    Returns:
        ``(class_names, lut)``.
    """
    index = {n: i for i, n in enumerate(raw_names)}
    lut = np.full(256, UNKNOWN, np.uint8)
    lut[: len(raw_names)] = IGNORE
    lut[IGNORE] = IGNORE
    for cls, (name, members) in enumerate(groups.items()):
        for m in members:
            raw = m if isinstance(m, int) else index.get(m)
            if raw is None:
                raise KsegError(f"label map class {name!r} lists {m!r}, which is not a raw label; known: {', '.join(raw_names[:10])}...")
            lut[raw] = cls
    return tuple(groups), lut


# --------------------------------------------------------------------------------------
# JSON class lists and folder pairing


def _read_json(path: Path, what: str = "file"):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise KsegError(f"{what} {path} is not valid JSON (line {e.lineno}: {e.msg}); fix it") from None
    except UnicodeDecodeError:
        raise KsegError(f"{what} {path} is not a UTF-8 text file; replace it with a JSON file") from None


def _meta_list(meta, key: str, path: Path) -> list:
    value = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(value, list) or not value:
        raise KsegError(f"{path} has no {key!r} list; add {{\"{key}\": [\"name\", ...]}}")
    return value


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise KsegError(f"{what} folder {path} not found; check the path and --format")
    return path


def pair_folders(image_dir: Path, mask_dir: Path, strict: bool = True) -> list[tuple[Path, Path]]:
    """Match images with masks by file stem; a missing pair is an error (or skipped)."""
    _require_dir(image_dir, "image")
    _require_dir(mask_dir, "mask")
    images = _list_images(image_dir)
    if not images:
        raise KsegError(f"image folder {image_dir} is empty; expected .jpg/.png images")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    pairs, missing = [], []
    for im in images:
        m = masks.get(im.stem) or masks.get(im.stem + "_L")
        if m is None:
            missing.append(im.name)
        else:
            pairs.append((im, m))
    if missing and strict:
        raise KsegError(
            f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir} "
            f"(first: {missing[0]}, expected {Path(missing[0]).stem}.png); add the masks or remove the images"
        )
    return pairs


def missing_pairs(image_dir: Path, mask_dir: Path) -> list[str]:
    """Images without a mask and masks without an image (for ``kseg data check``)."""
    images = {p.stem: p for p in _list_images(image_dir)}
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    out = [f"image {images[s]} has no mask (expected {mask_dir / (s + '.png')})" for s in sorted(images.keys() - masks.keys())]
    out += [f"mask {masks[s]} has no image in {image_dir}" for s in sorted(masks.keys() - images.keys())]
    return out


# --------------------------------------------------------------------------------------
# instances (for Mask R-CNN)


@dataclass
class InstanceDataset:
    """Images with per-instance masks, boxes and classes (for Mask R-CNN).

    ``load(i)`` → ``(image, {"masks": (N,H,W) uint8, "boxes": (N,4) float32 x1,y1,x2,y2,
    "category_ids": (N,) int32 in 1..K, "iscrowd": (N,) bool})``.
    """

    name: str
    class_names: tuple            # ("background", *categories)
    image_paths: list
    loaders: list                 # callables i -> (H, W, annotations)
    coco_category_ids: tuple = ()  # original COCO ids of classes 1..K, for COCO-format results
    image_ids: list = field(default_factory=list)

    def __len__(self):
        return len(self.image_paths)

    def load(self, i):
        image = read_image(self.image_paths[i])
        target = self.loaders[i]()
        h, w = image.shape[:2]
        if target["masks"].shape[1:] not in ((h, w),) and len(target["masks"]):
            raise KsegError(
                f"annotations of {self.image_paths[i]} are for a {target['masks'].shape[2]}×"
                f"{target['masks'].shape[1]} image but the file is {w}×{h}; the image does not match its annotation"
            )
        return image, target


def _boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def instances_from_semantic(ds: SegDataset, class_id: int = 1, min_area: int = 64, per: str = "region") -> InstanceDataset:
    """Instances of one class of a semantic dataset (e.g. photos of single people).

    Args:
        ds: a SegDataset (e.g. people-masks, or people-parsing with ``groups="person"``).
        class_id: the class that becomes instances (category 1 of the result).
        min_area: smaller pieces (in pixels) are dropped.
        per: ``"region"``: one instance per 8-connected region of ``class_id``;
            ``"image"``: all its pixels are one instance (one person per photo).

    Returns:
        An InstanceDataset with classes ``("background", ds.class_names[class_id])``; ignored
        (255) pixels belong to no instance.

    Example:
        inst = instances_from_semantic(open_dataset(root, "masks"), per="image")
    """
    import cv2

    if per not in ("region", "image"):
        raise KsegError(f"instances_from_semantic per={per!r}: use region or image")

    def make(i):
        def load():
            _, mask = ds.load(i)
            if per == "image":
                m = (mask == class_id).astype(np.uint8)
                masks = [m] if m.sum() >= min_area else []
            else:
                n, comp = cv2.connectedComponents((mask == class_id).astype(np.uint8), connectivity=8)
                masks = [(comp == k).astype(np.uint8) for k in range(1, n) if (comp == k).sum() >= min_area]
            masks = np.stack(masks) if masks else np.zeros((0, *mask.shape), np.uint8)
            return {
                "masks": masks,
                "boxes": _boxes_from_masks(masks),
                "category_ids": np.ones(len(masks), np.int32),
                "iscrowd": np.zeros(len(masks), bool),
            }

        return load

    return InstanceDataset(
        ds.name, ("background", ds.class_names[class_id]), [s.image for s in ds.samples],
        [make(i) for i in range(len(ds))],
    )
