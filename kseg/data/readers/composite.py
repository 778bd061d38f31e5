"""Composites (format ``composite``): people pasted onto person-free backgrounds, made once.

``open_composite`` cuts people out of person datasets (people-parsing, people-masks, portraits,
COCO persons), pastes one or more onto person-free backgrounds (COCO images without people,
CamVid frames without pedestrians, pet photos, empty frames of the shared videos) with
``kseg.data.compositing``, writes the result ONCE into a cache folder and returns a
``SegDataset`` over those files, so composites go wherever a dataset goes: configs,
``kseg train``, ``kseg data check``/``preview``, the tf.data pipeline.

The cache folder is ``$KSEG_CACHE/composites/KEY`` (default ``~/.cache/kseg/composites/KEY``),
KEY a hash of the options, the engine version and the source files (names and sizes); a second
call with the same options and data reuses it. It is written to a temporary folder and renamed
when complete, so an interrupted run leaves nothing that looks finished. Layout::

    images/000000.jpg   masks/000000.png (class ids)   classes.json   meta.json (options,
    sources, per-composite record: background, people, framing, JPEG quality)
    instances/000000.png (0 background, k = person k) and annotations/instances_train2017.json
    (COCO RLE, category 1 "person"; ``train2017`` links to ``images``) with labels=instances

Held-out data is never a source: each person or background set is split as the configs split it
(``SegDataset.split(val_fraction, split_seed)``, 10% and seed 0 by default), COCO by its own
train/val files (an image in any val file is never a training source), CamVid by its folders;
``split="val"`` makes composites from the held-out parts instead.

Person-free backgrounds were established by looking: COCO images with no person annotation
(two street scenes where one might be hidden are left out), CamVid frames whose labels have no
pedestrian or bicyclist pixel, the pets photos minus 43 that show a hand, an arm or people
(``PETS_WITH_PEOPLE``, checked on thumbnails of all 600), and frames of
``videos/one-by-one-person-detection.mp4`` from the stretches where the room is empty (found by
their difference from frame 0, then viewed). The ASL clips and ``vtest.avi`` have people in view
throughout and are not used.

Example:
    ds = open_composite(count=500, size=256, framing="webcam", labels="person")
    image, mask = ds.load(0)
    ds = open_dataset("../shared/data", "composite", labels="parsing", count=200)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from kseg.data.readers.base import (
    IMAGE_EXTS, InstanceDataset, SegDataset, SegSample, _boxes_from_masks, _read_json, identity_lut, read_image,
    read_label,
)
from kseg.errors import KsegError
from kseg.progress import Progress

log = logging.getLogger("kseg")

ENGINE_VERSION = 1  # bump when a change to the compositing alters the output (invalidates caches)
LABELS = ("person", "parsing", "instances")
FRAMINGS = ("webcam", "full", "far", "mixed")
DEFAULT_PEOPLE = ("people-parsing", "people-masks", "portraits", "coco")
DEFAULT_BACKGROUNDS = ("coco", "camvid", "pets", "videos")
# share of composites on each kind of background when an entry gives no weight
BACKGROUND_WEIGHTS = {"coco": 0.45, "pets": 0.25, "camvid": 0.2, "videos": 0.1, "images": 0.25}
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")

# frames with nobody in view (static camera; the stretches between people, viewed)
PERSON_FREE_FRAMES = {"one-by-one-person-detection.mp4": (29, 214, 477, 724, 897, 1220, 1379)}
# pets photos that show a person or part of one (hands holding the pet, legs, people behind)
PETS_WITH_PEOPLE = frozenset(
    "Abyssinian_109 Abyssinian_125 Abyssinian_130 Abyssinian_148 Abyssinian_149 Abyssinian_193 Abyssinian_20 "
    "Abyssinian_94 Bengal_126 Bengal_136 Bengal_2 Bengal_200 Bengal_34 Bengal_46 Bengal_84 american_bulldog_12 "
    "american_bulldog_144 american_bulldog_149 american_bulldog_164 american_bulldog_177 american_bulldog_179 "
    "american_bulldog_180 american_bulldog_190 american_bulldog_194 american_bulldog_197 american_bulldog_20 "
    "american_bulldog_200 american_bulldog_201 american_bulldog_202 american_bulldog_205 american_bulldog_207 "
    "american_bulldog_209 american_bulldog_211 american_bulldog_212 american_bulldog_214 american_bulldog_216 "
    "american_bulldog_217 american_bulldog_218 american_bulldog_220 american_bulldog_221 american_bulldog_63 "
    "american_bulldog_68 american_bulldog_84".split()
)
# COCO images without a person annotation where a small person may be in view
COCO_WITH_PEOPLE = frozenset({"000000360449.jpg", "000000116740.jpg"})
# a COCO person is a source when it is not a crowd and at least this large
COCO_MIN_AREA = 2500
COCO_MIN_HEIGHT = 64
MIN_REGION = 400  # pixels of a connected person region (instances from mask datasets)


@dataclass
class CompositeOptions:
    """The options of the ``composite`` format (all but ``workers`` and ``progress`` key the cache).

    Attributes:
        people: person sources: names under the data root or paths (``people-parsing``,
            ``people-masks``, ``portraits``, ``coco`` = every COCO subset, ``coco/coco-mini``), or
            mappings ``{path, weight}``. Default: all four; with ``labels: parsing`` only
            people-parsing (the only source with parsing labels; others would be ignore pixels).
            A source is drawn in proportion to its ``weight`` (default: its number of people).
        backgrounds: person-free sources: ``coco`` (images without person annotations),
            ``camvid`` (frames without pedestrians), ``pets``, ``videos`` (verified empty frames),
            a folder of images you know to be person-free, or ``{path, weight, frames}`` (a video
            file and the frame numbers that show nobody). Default: all four, weights 0.45 COCO,
            0.25 pets, 0.2 CamVid, 0.1 videos.
        count: number of composites.
        size: output ``[H, W]`` (or one int for a square).
        framing: ``webcam`` (head-and-shoulders, 40-120% of the frame height, off-centre, cut
            by the frame's bottom), ``full`` (whole people, 20-90% of the height), ``far``
            (whole people in a scene, 5-35% of the height, as COCO's people are), ``mixed``
            (each composite webcam or full, half and half), or a mapping of framings to
            weights, e.g. ``{webcam: 0.3, full: 0.3, far: 0.4}``.
        people_per_image: ``[min, max]`` people drawn per composite (default ``[1, 3]``,
            ``[1, 5]`` for instances). Fewer may be pasted: a person that would hide more than
            70% of an earlier one in five places tried is left out (a close-up spanning the
            frame often is), so ``[1, 5]`` gives about 1-4 people in full framing.
        labels: ``person`` (background/person), ``parsing`` (the 8 groups of people-parsing's
            classes.json) or ``instances`` (person masks plus an instance map and COCO JSON).
        empty: share of composites with nobody pasted (person-free training images).
        seed: composites are a function of the seed and their index.
        split: ``train`` (sources' training parts) or ``val`` (their held-out parts).
        val_fraction, split_seed: the hold-out of each source, as the configs make it.
        harmonize: colour/blur matching, edge softening, noise and JPEG (images are PNG
            without it, pixels exact).
        workers: processes that generate (not part of the cache key).
    """

    people: list = None
    backgrounds: list = None
    count: int = 1000
    size: list = field(default_factory=lambda: [256, 256])
    framing: str = "mixed"
    people_per_image: list = None
    labels: str = "person"
    empty: float = 0.0
    seed: int = 0
    split: str = "train"
    val_fraction: float = 0.1
    split_seed: int = 0
    harmonize: bool = True
    workers: int = 1
    progress: bool | None = None


def _options(path, options: dict) -> tuple[Path, CompositeOptions]:
    """The data root and validated options (an options file's, overridden by keyword arguments)."""
    from kseg.paths import shared_data_dir

    merged = {}
    root = Path(path).expanduser() if path not in (None, "") else None
    if root is not None and root.is_file():
        if root.suffix.lower() in (".yaml", ".yml"):
            from kseg.config import read_yaml

            data = read_yaml(root)
        elif root.suffix.lower() == ".json":
            data = _read_json(root, "composite options")
        else:
            raise KsegError(f"{root} is not a folder or a .yaml/.json options file; the composite format takes the data "
                            "folder or an options file")
        if not isinstance(data, dict):
            raise KsegError(f"composite options file {root} must hold a mapping of options")
        data = dict(data.get("composite", data))
        base = data.pop("root", None) or data.pop("path", None)
        merged.update(data)
        root = (root.parent / base).resolve() if base else None
    merged.update({k: v for k, v in options.items() if v is not None})
    if "groups" in merged:  # the ccp spelling (``--groups``): person | suggested
        g = merged.pop("groups")
        if g not in ("person", "suggested"):
            raise KsegError(f"composite groups={g!r}: use person or suggested (or labels: person, parsing, instances)")
        merged.setdefault("labels", "parsing" if g == "suggested" else "person")
    names = [f.name for f in fields(CompositeOptions)]
    unknown = [k for k in merged if k not in names]
    if unknown:
        raise KsegError(f"format composite has no option {unknown[0]!r}; its options: {', '.join(names)}")
    o = CompositeOptions(**merged)
    if o.labels not in LABELS:
        raise KsegError(f"composite labels={o.labels!r}: use one of {', '.join(LABELS)}")
    if isinstance(o.framing, dict):
        bad = [k for k in o.framing if k not in FRAMINGS[:-1]]
        weights = list(o.framing.values())
        if bad or not o.framing or not all(isinstance(w, (int, float)) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise KsegError(f"composite framing={o.framing!r}: give weights (0 or more, not all 0) of "
                            f"{', '.join(FRAMINGS[:-1])}, e.g. {{webcam: 0.3, full: 0.3, far: 0.4}}")
        o.framing = {k: float(v) for k, v in o.framing.items()}
    elif o.framing not in FRAMINGS:
        raise KsegError(f"composite framing={o.framing!r}: use one of {', '.join(FRAMINGS)}, or a mapping of "
                        "framings to weights")
    if o.split not in ("train", "val"):
        raise KsegError(f"composite split={o.split!r}: use train (sources' training parts) or val (their held-out parts)")
    size = [o.size, o.size] if isinstance(o.size, int) else list(o.size or [])
    if len(size) != 2 or not all(isinstance(s, int) and 16 <= s <= 4096 for s in size):
        raise KsegError(f"composite size={o.size!r}: give [H, W] (or one int), each 16..4096")
    o.size = size
    if not isinstance(o.count, int) or o.count < 1:
        raise KsegError(f"composite count={o.count!r}: give a positive number of composites")
    ppi = o.people_per_image or ([1, 5] if o.labels == "instances" else [1, 3])
    ppi = [ppi, ppi] if isinstance(ppi, int) else list(ppi)
    if len(ppi) != 2 or not (1 <= ppi[0] <= ppi[1] <= 16):
        raise KsegError(f"composite people_per_image={o.people_per_image!r}: give [min, max] with 1 <= min <= max <= 16")
    o.people_per_image = ppi
    if not 0.0 <= float(o.empty) <= 1.0:
        raise KsegError(f"composite empty={o.empty!r}: a share of composites, 0..1")
    if not 0.0 <= float(o.val_fraction) < 1.0:
        raise KsegError(f"composite val_fraction={o.val_fraction!r}: use 0 <= f < 1 (configs hold out 0.1)")
    if o.people is None:
        o.people = ["people-parsing"] if o.labels == "parsing" else list(DEFAULT_PEOPLE)
    if o.backgrounds is None:
        o.backgrounds = list(DEFAULT_BACKGROUNDS)
    for what in ("people", "backgrounds"):
        v = getattr(o, what)
        setattr(o, what, [v] if isinstance(v, (str, dict)) else list(v))
        if not getattr(o, what):
            raise KsegError(f"composite {what} is empty; name at least one source")
    return (root if root is not None else shared_data_dir()), o


def _entry(e, what) -> dict:
    if isinstance(e, str):
        return {"path": e}
    if isinstance(e, dict) and "path" in e:
        extra = set(e) - {"path", "weight", "frames"}
        if extra:
            raise KsegError(f"composite {what} entry {e} has unknown key {sorted(extra)[0]!r}; use path, weight (and frames for a video)")
        return dict(e)
    raise KsegError(f"composite {what} entry {e!r}: give a name/path or {{path: ..., weight: ...}}")


def _resolve(name, root: Path) -> Path:
    from kseg.config import resolve_data_path

    p = Path(name).expanduser()
    if p.is_absolute():
        if not p.exists():
            raise KsegError(f"composite source {p} not found")
        return p
    if (root / p).exists():
        return root / p
    return resolve_data_path(p)


def _size(p) -> int:
    try:
        return Path(p).stat().st_size
    except OSError:
        return -1


# --------------------------------------------------------------------------------------
# person sources


class _SegPeople:
    """People of a semantic dataset: one person per photo, or per connected region (instances)."""

    def __init__(self, name, ds: SegDataset, parsing_source: bool, labels: str, per_region: bool):
        self.name, self.ds, self.labels = name, ds, labels
        self.parsing_source, self.per_region = parsing_source, per_region
        self.keys = [f"{name}/{Path(s.image).name}:{_size(s.image)}:{_size(s.mask) if isinstance(s.mask, str) else len(s.mask)}"
                     for s in ds.samples]

    def __len__(self):
        return len(self.ds)

    def image_paths(self):
        return [s.image for s in self.ds.samples]

    def cut(self, j, rng):
        import cv2

        from kseg.data.compositing import cut_person

        image, mask = self.ds.load(j)
        if self.labels == "parsing":
            lab = mask if self.parsing_source else np.where(mask != 0, 255, 0).astype(np.uint8)
        else:
            lab = (mask != 0).astype(np.uint8)
        name = f"{self.name}/{Path(self.ds.samples[j].image).name}"
        if self.per_region:
            # a photo may hold several people: one instance per connected region
            n, comp, stats, _ = cv2.connectedComponentsWithStats(lab, connectivity=8)
            regions = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= MIN_REGION]
            if not regions:
                return None
            k = regions[int(rng.integers(len(regions)))]
            lab = (comp == k).astype(np.uint8)
        return cut_person(image, lab, name)


class _CocoPeople:
    """Non-crowd COCO persons of at least ``COCO_MIN_AREA`` pixels and ``COCO_MIN_HEIGHT`` rows."""

    def __init__(self, name, items, labels):
        self.name, self.items, self.labels = name, items, labels
        self.keys = [f"{name}/{Path(p).name}#{a['id']}:{_size(p)}" for p, _, _, a in items]

    def __len__(self):
        return len(self.items)

    def image_paths(self):
        return [p for p, _, _, _ in self.items]

    def cut(self, j, rng):
        from kseg.data.compositing import cut_person
        from kseg.data.readers.coco import _ann_mask

        path, h, w, ann = self.items[j]
        image = read_image(path)
        m = _ann_mask(None, ann, h, w)
        if m.shape != image.shape[:2]:
            return None
        return cut_person(image, (m * (255 if self.labels == "parsing" else 1)).astype(np.uint8),
                          f"{self.name}/{Path(path).name}#{ann['id']}")


def _coco_subsets(p: Path) -> list[Path]:
    if (p / "annotations").is_dir():
        return [p]
    subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "annotations").is_dir())
    if not subs:
        raise KsegError(f"{p} is neither a COCO subset (annotations/) nor a folder of COCO subsets")
    return subs


def _coco_split(subset: Path, split: str):
    """``(coco, image folder, names of the other split's images in every sibling subset)``."""
    from kseg.data.readers.coco import _coco_paths, _load_coco

    ann, img_dir = _coco_paths(subset, split)
    other = "val" if split == "train" else "train"
    names = set()
    for sib in [subset, *(d for d in subset.parent.iterdir() if d.is_dir() and d != subset)]:
        f = sib / "annotations" / f"instances_{other}2017.json"
        if f.is_file():
            names.update(i["file_name"] for i in json.loads(f.read_text()).get("images", []))
    return _load_coco(ann), img_dir, names


def _person_id(coco):
    ids = [c["id"] for c in coco.loadCats(coco.getCatIds()) if c["name"] == "person"]
    return ids[0] if ids else None


def _open_people(entry: dict, root: Path, o: CompositeOptions) -> list:
    from kseg.data.readers import detect_format
    from kseg.data.readers.ccp import open_ccp
    from kseg.data.readers.folders import open_masks

    p = _resolve(entry["path"], root)
    if not p.is_dir():
        raise KsegError(f"composite people source {p} is not a folder; name a people dataset (people-parsing, people-masks, "
                        "portraits, coco)")
    fmt = "coco" if (p / "annotations").is_dir() or any((d / "annotations").is_dir() for d in p.iterdir() if d.is_dir()) \
        else detect_format(p)
    if fmt == "coco":
        out = []
        for sub in _coco_subsets(p):
            coco, img_dir, other = _coco_split(sub, o.split)
            pid = _person_id(coco)
            items = []
            for img_id in sorted(coco.getImgIds()):
                info = coco.loadImgs(img_id)[0]
                if info["file_name"] in other or pid is None:
                    continue
                for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, catIds=[pid], iscrowd=False)):
                    if a.get("area", 0) >= COCO_MIN_AREA and a["bbox"][3] >= COCO_MIN_HEIGHT:
                        items.append((str(img_dir / info["file_name"]), info["height"], info["width"], a))
            if items:
                out.append(_CocoPeople(f"{sub.name}-{o.split}", items, o.labels))
        return out
    if fmt == "ccp":
        ds = open_ccp(p, groups="suggested" if o.labels == "parsing" else "person")
        parsing_source = True
    elif fmt == "masks":
        ds = open_masks(p, class_names=("background", "person"), binary=True)
        parsing_source = False  # (a photo of several people: one instance per connected region)
    else:
        raise KsegError(f"composite people source {p} is a {fmt} dataset; people come from ccp (people-parsing), "
                        "masks (people-masks, portraits) or coco folders")
    tr, va = ds.split(o.val_fraction, o.split_seed)
    part = tr if o.split == "train" else va
    if len(part) == 0:
        return []
    return [_SegPeople(p.name, part, parsing_source and o.labels == "parsing", o.labels,
                       per_region=fmt == "masks" and o.labels == "instances")]


# --------------------------------------------------------------------------------------
# background sources


class _Backgrounds:
    """Person-free images (paths) or video frames (``(path, frame)``)."""

    def __init__(self, name, kind, items):
        self.name, self.kind, self.items = name, kind, items
        self.keys = [f"{name}/{Path(i[0]).name}@{i[1]}:{_size(i[0])}" if isinstance(i, tuple) else f"{name}/{Path(i).name}:{_size(i)}"
                     for i in items]
        self._frames = {}

    def __len__(self):
        return len(self.items)

    def image_paths(self):
        return [i[0] if isinstance(i, tuple) else i for i in self.items]

    def load(self, j):
        item = self.items[j]
        if not isinstance(item, tuple):
            return read_image(item)
        if item not in self._frames:
            import cv2

            cap = cv2.VideoCapture(str(item[0]))
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(item[1]))
            ok, frame = cap.read()
            cap.release()
            if not ok:
                raise KsegError(f"cannot read frame {item[1]} of {item[0]}; check the frame numbers of that video")
            self._frames[item] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return self._frames[item]


def _hash_split(paths, source, o: CompositeOptions):
    ds = SegDataset(source, ("background",), [SegSample(str(p), "") for p in paths], identity_lut(1)[None], (source,))
    tr, va = ds.split(o.val_fraction, o.split_seed)
    return [s.image for s in (tr if o.split == "train" else va).samples]


def _video_frames(p: Path, frames):
    frames = frames if frames is not None else PERSON_FREE_FRAMES.get(p.name)
    return None if frames is None else [(str(p), int(f)) for f in frames]


def _open_backgrounds(entry: dict, root: Path, o: CompositeOptions) -> list:
    from kseg.data.readers import detect_format
    from kseg.data.readers.pets import open_pets

    p = _resolve(entry["path"], root)
    if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
        items = _video_frames(p, entry.get("frames"))
        if items is None:
            raise KsegError(f"video {p} has no known person-free frames; give {{path: {entry['path']}, frames: [...]}} "
                            "with frame numbers that show nobody")
        return [_Backgrounds(p.name, "videos", items if o.split == "train" else [])]
    videos = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTS) if p.is_dir() else []
    if p.is_dir() and not videos:
        videos = sorted(f for d in p.iterdir() if d.is_dir() for f in d.iterdir() if f.suffix.lower() in VIDEO_EXTS)
    if videos:
        # only clips with frames known to show nobody; no video frame is held out for val
        items = [it for v in videos for it in (_video_frames(v, None) or [])]
        return [_Backgrounds(p.name, "videos", items if o.split == "train" else [])]
    is_coco = (p / "annotations").is_dir() or any((d / "annotations").is_dir() for d in p.iterdir() if d.is_dir())
    if is_coco:
        out = []
        for sub in _coco_subsets(p):
            coco, img_dir, other = _coco_split(sub, o.split)
            pid = _person_id(coco)
            with_people = {a["image_id"] for a in coco.loadAnns(coco.getAnnIds(catIds=[pid]))} if pid is not None else set()
            items = [str(img_dir / i["file_name"]) for i in coco.loadImgs(sorted(coco.getImgIds()))
                     if i["id"] not in with_people and i["file_name"] not in other and i["file_name"] not in COCO_WITH_PEOPLE]
            out.append(_Backgrounds(f"{sub.name}-{o.split}", "coco", items))
        return out
    try:
        fmt = detect_format(p)
    except KsegError:
        fmt = None
    if fmt == "camvid":
        splits = ("train",) if o.split == "train" else ("val", "test")
        meta = _read_json(p / "classes.json", "class list") if (p / "classes.json").is_file() else {}
        classes = meta.get("classes", [])
        people = [classes.index(c) for c in ("pedestrian", "bicyclist") if c in classes] or [9, 10]
        items = []
        for sp in splits:
            for ann in sorted((p / f"{sp}annot").glob("*.png")):
                if not np.isin(read_label(ann), people).any():
                    img = p / sp / (ann.stem + ".jpg")
                    img = img if img.is_file() else p / sp / ann.name
                    if img.is_file():
                        items.append(str(img))
        return [_Backgrounds(f"camvid-{o.split}", "camvid", items)]
    if fmt == "pets":
        ds = open_pets(p)
        tr, va = ds.split(o.val_fraction, o.split_seed)
        part = tr if o.split == "train" else va
        return [_Backgrounds(p.name, "pets", [s.image for s in part.samples if Path(s.image).stem not in PETS_WITH_PEOPLE])]
    if fmt in ("masks", "ccp"):
        raise KsegError(f"composite background source {p} is a {fmt} dataset (images with people?); backgrounds must "
                        "be person-free: coco, camvid, pets, videos or a folder of person-free images")
    images = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS) if p.is_dir() else []
    if not images:
        raise KsegError(f"composite background source {p} has no images; give a folder of person-free images")
    return [_Backgrounds(p.name, "images", _hash_split(images, p.name, o))]


# --------------------------------------------------------------------------------------
# generation


def cache_root() -> Path:
    """``$KSEG_CACHE/composites``, else ``~/.cache/kseg/composites``."""
    env = os.environ.get("KSEG_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "kseg") / "composites"


class CompositeSources:
    """The person and background sources of a set of options, and its cache key."""

    def __init__(self, root: Path, o: CompositeOptions):
        self.root, self.o = root, o
        self.people, self.people_weights = [], []
        for e in o.people:
            e = _entry(e, "people")
            srcs = [s for s in _open_people(e, root, o) if len(s)]
            total = sum(len(s) for s in srcs)
            for s in srcs:
                self.people.append(s)
                # a weight is the entry's share; COCO subsets share their entry's weight by size
                self.people_weights.append(float(e["weight"]) * len(s) / total if "weight" in e else float(len(s)))
        self.backgrounds, self.background_weights = [], []
        for e in o.backgrounds:
            e = _entry(e, "backgrounds")
            srcs = [s for s in _open_backgrounds(e, root, o) if len(s)]
            total = sum(len(s) for s in srcs)
            for s in srcs:
                w = float(e["weight"]) if "weight" in e else BACKGROUND_WEIGHTS.get(s.kind, 0.25)
                self.backgrounds.append(s)
                self.background_weights.append(w * len(s) / total)
        if not self.people and o.empty < 1.0:
            raise KsegError(f"composite people sources {o.people} hold no person for split {o.split}; check the paths")
        if not self.backgrounds:
            raise KsegError(f"composite background sources {o.backgrounds} hold no person-free image for split {o.split}")
        self.people_p = np.array(self.people_weights) / sum(self.people_weights) if self.people else None
        self.background_p = np.array(self.background_weights) / sum(self.background_weights)

    def key(self) -> str:
        o = {k: v for k, v in asdict(self.o).items() if k not in ("workers", "progress")}
        h = hashlib.sha1(json.dumps({"engine": ENGINE_VERSION, "options": o}, sort_keys=True, default=str).encode())
        for s in self.people + self.backgrounds:
            h.update(s.name.encode())
            for k in s.keys:
                h.update(k.encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "people": {s.name: {"people": len(s), "share": round(float(p), 4)} for s, p in zip(self.people, self.people_p if self.people else [])},
            "backgrounds": {s.name: {"images": len(s), "share": round(float(p), 4)} for s, p in zip(self.backgrounds, self.background_p)},
        }

    def make(self, i: int):
        """Composite ``i``: a function of ``(seed, i)`` only."""
        from kseg.data.compositing import composite

        o = self.o
        rng = np.random.default_rng([o.seed, i, 0])
        look = np.random.default_rng([o.seed, i, 1])
        if isinstance(o.framing, dict):
            names, w = list(o.framing), np.array(list(o.framing.values()))
            framing = names[int(rng.choice(len(names), p=w / w.sum()))]
        else:
            framing = o.framing if o.framing != "mixed" else ("webcam" if rng.random() < 0.5 else "full")
        b = int(rng.choice(len(self.backgrounds), p=self.background_p))
        bsrc = self.backgrounds[b]
        bj = int(rng.integers(len(bsrc)))
        background = bsrc.load(bj)
        n = 0 if (rng.random() < o.empty or not self.people) else int(rng.integers(o.people_per_image[0], o.people_per_image[1] + 1))

        def draw():
            s = self.people[int(rng.choice(len(self.people), p=self.people_p))]
            return s.cut(int(rng.integers(len(s))), rng)

        comp = composite(background, draw, o.size, rng, count=n, framing=framing, harmonize=o.harmonize, look_rng=look)
        comp.background = f"{bsrc.name}/{Path(bsrc.image_paths()[bj]).name}" + (
            f"@{bsrc.items[bj][1]}" if isinstance(bsrc.items[bj], tuple) else "")
        return comp


_STATE = {}


def _worker_init():
    import cv2

    cv2.setNumThreads(1)  # a forked child must not use the parent's OpenCV thread pool


def _write_one(i: int) -> dict:
    import cv2

    from kseg.data.compositing import encode_jpeg

    sources, out = _STATE["sources"], _STATE["out"]
    comp = sources.make(i)
    stem = f"{i:06d}"
    if comp.jpeg_quality is not None:
        image_name = f"{stem}.jpg"
        (out / "images" / image_name).write_bytes(encode_jpeg(comp.image, comp.jpeg_quality))
    else:
        image_name = f"{stem}.png"
        cv2.imwrite(str(out / "images" / image_name), np.ascontiguousarray(comp.image[..., ::-1]))
    cv2.imwrite(str(out / "masks" / f"{stem}.png"), comp.labels)
    record = {"image": image_name, "background": comp.background, "framing": comp.framing,
              "jpeg_quality": comp.jpeg_quality, "people": comp.people}
    if sources.o.labels == "instances":
        cv2.imwrite(str(out / "instances" / f"{stem}.png"), comp.instances)
        from kseg.data.instances import rle_encode

        record["rle"] = [rle_encode(comp.instances == k) for k in range(1, len(comp.people) + 1)]
    return record


def _class_names(sources: CompositeSources) -> tuple:
    if sources.o.labels != "parsing":
        return ("background", "person")
    for s in sources.people:
        if isinstance(s, _SegPeople) and s.parsing_source:  # the first people-parsing source's groups
            return s.ds.class_names
    raise KsegError("composite labels=parsing needs a people-parsing (ccp) source among people")


def _generate(sources: CompositeSources, final: Path) -> None:
    o = sources.o
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    if o.labels == "instances":
        (tmp / "instances").mkdir()
    bar = Progress(o.count, "composites", mode=None if o.progress in (None, True) else "off")
    log.info("generating %d composites into %s", o.count, final)
    t0 = time.perf_counter()
    try:
        _STATE.update(sources=sources, out=tmp)
        workers = o.workers
        if workers > 1 and ("tensorflow" in sys.modules or threading.active_count() > 1):
            # a forked child inherits locks other threads held (TensorFlow's pools): it can wait on
            # one forever (seen in the test suite), so a process with threads generates alone
            log.warning("composites: TensorFlow or other threads are running; generating with 1 process, not %d",
                        workers)
            workers = 1
        if workers > 1:
            import multiprocessing as mp

            # fork: the workers inherit the opened sources; they use numpy and OpenCV only
            with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool, bar:
                records = []
                for r in pool.imap(_write_one, range(o.count), chunksize=8):
                    records.append(r)
                    bar.update()
        else:
            records = []
            with bar:
                for i in range(o.count):
                    records.append(_write_one(i))
                    bar.update()
        seconds = time.perf_counter() - t0
        names = _class_names(sources)
        (tmp / "classes.json").write_text(json.dumps({"classes": list(names)}))
        if o.labels == "instances":
            _write_coco(tmp, records, o.size)
        for r in records:
            r.pop("rle", None)
        meta = {"engine": ENGINE_VERSION, "key": final.name, "options": {k: v for k, v in asdict(o).items() if k not in ("workers", "progress")},
                "data_root": str(sources.root), "sources": sources.summary(), "seconds": round(seconds, 2),
                "composites": records}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # someone else finished the same set first: keep theirs
                raise
    finally:
        _STATE.clear()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated %d composites in %.1f s", o.count, seconds)


def _write_coco(out: Path, records, size):
    from pycocotools import mask as mask_utils

    H, W = size
    images, anns = [], []
    for i, r in enumerate(records):
        images.append({"id": i + 1, "file_name": r["image"], "height": H, "width": W})
        for rle in r["rle"]:
            enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            x, y, w, h = (float(v) for v in mask_utils.toBbox(enc))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "segmentation": rle,
                         "area": float(mask_utils.area(enc)), "bbox": [x, y, w, h], "iscrowd": 0})
    (out / "annotations").mkdir()
    (out / "annotations" / "instances_train2017.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}))
    try:  # open_instances(folder, "train") looks for train2017/
        os.symlink("images", out / "train2017")
    except OSError:
        pass


def composite_folder(path=None, **options) -> Path:
    """Generate composites (or find them in the cache) and return their folder.

    Args:
        path: the data folder the sources are named in (default ``$KSEG_DATA`` or
            ``../shared/data``), or a ``.yaml``/``.json`` file of options (which may name the
            data folder as ``root``); keyword arguments override the file's options.
        **options: see ``CompositeOptions``.

    Returns:
        The cache folder (see the module docstring for its layout).
    """
    root, o = _options(path, options)
    sources = CompositeSources(root, o)
    final = cache_root() / sources.key()
    if not (final / "meta.json").is_file():
        _generate(sources, final)
    return final


def _read_folder(folder: Path) -> tuple[tuple, list]:
    meta = _read_json(folder / "meta.json", "composite record")
    names = tuple(_read_json(folder / "classes.json", "class list")["classes"])
    return names, meta["composites"]


def open_composite(path=None, **options) -> SegDataset:
    """People pasted onto person-free backgrounds, as a semantic dataset (format ``composite``).

    Args:
        path: the data folder (default ``$KSEG_DATA`` or ``../shared/data``) or an options file.
        **options: ``people``, ``backgrounds``, ``count`` (1000), ``size`` ([256, 256]),
            ``framing`` (mixed), ``people_per_image``, ``labels`` (person), ``empty``, ``seed``,
            ``split`` (train), ``val_fraction`` (0.1), ``split_seed`` (0), ``harmonize``,
            ``workers``; see ``CompositeOptions``. ``groups`` (person | suggested) is accepted
            as ``labels`` (person | parsing), like the ccp reader's option.

    Returns:
        A ``SegDataset`` over the cached files: classes background/person, or the 8 parsing
        groups with ``labels="parsing"`` (255 = a person pixel whose part is unknown).

    Example:
        ds = open_composite(count=1000, size=[256, 256], framing="webcam", seed=0)
        cfg entry: {format: composite, count: 2000, framing: webcam, holdout: false}
    """
    folder = composite_folder(path, **options)
    names, records = _read_folder(folder)
    samples = [SegSample(str(folder / "images" / r["image"]), str(folder / "masks" / (Path(r["image"]).stem + ".png")))
               for r in records]
    name = f"composite-{folder.name[:8]}"
    return SegDataset(name, names, samples, identity_lut(len(names))[None], (name,))


def open_composite_instances(path=None, **options) -> InstanceDataset:
    """Composites with one instance per pasted person (for Mask R-CNN); ``labels`` is ``instances``.

    Args:
        path, **options: as for ``open_composite`` (default ``people_per_image`` [1, 5]).

    Returns:
        An ``InstanceDataset`` (classes background, person); ``load(i)`` gives each visible
        person's exact mask. The same folder also holds ``annotations/instances_train2017.json``
        so ``open_instances(folder, "train")`` and pycocotools read it too.

    Example:
        inst = open_composite_instances(count=2000, size=[320, 320], framing="full")
        ds = make_instance_dataset([inst, *coco_train], size=320)
    """
    options = {**options, "labels": "instances"}
    folder = composite_folder(path, **options)
    _, records = _read_folder(folder)

    def make(stem):
        def load():
            inst = read_label(folder / "instances" / f"{stem}.png")
            ids = [k for k in range(1, int(inst.max(initial=0)) + 1) if (inst == k).any()]
            masks = np.stack([(inst == k).astype(np.uint8) for k in ids]) if ids else np.zeros((0, *inst.shape), np.uint8)
            return {"masks": masks, "boxes": _boxes_from_masks(masks), "category_ids": np.ones(len(ids), np.int32),
                    "iscrowd": np.zeros(len(ids), bool)}

        return load

    stems = [Path(r["image"]).stem for r in records]
    return InstanceDataset(f"composite-{folder.name[:8]}", ("background", "person"),
                           [str(folder / "images" / r["image"]) for r in records], [make(s) for s in stems], (1,),
                           list(range(1, len(records) + 1)))
