"""kseg.data.compositing and the ``composite`` format: exact masks, occlusion, seeds, cache, splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kseg.data.compositing import Cutout, composite, cut_person, paste, resize_cutout
from kseg.data.readers import open_dataset, open_instances
from kseg.data.readers.composite import open_composite, open_composite_instances
from kseg.errors import KsegError

BG = (40, 40, 40)
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30), (200, 30, 200)]


def _photo_person(colour, label=1, h=120, w=60, rng=None):
    """A photo with a person-shaped ellipse of one colour on noise (noise must never be pasted)."""
    rng = rng or np.random.default_rng(0)
    photo = rng.integers(0, 256, (h + 20, w + 20, 3), dtype=np.uint8)
    lab = np.zeros(photo.shape[:2], np.uint8)
    cv2.ellipse(lab, (w // 2 + 10, h // 2 + 10), (w // 2, h // 2), 0, 0, 360, label, -1)
    photo[lab > 0] = colour
    return photo, lab


def _constant(colour, h=200, w=300):
    return np.full((h, w, 3), colour, np.uint8)


def _colour_ids(image, colours):
    """Per pixel: 1 + index of the colour it shows exactly, 0 for the background colour, -1 for anything else."""
    out = np.full(image.shape[:2], -1, np.int32)
    out[(image == BG).all(-1)] = 0
    for k, c in enumerate(colours):
        out[(image == c).all(-1)] = k + 1
    return out


# --------------------------------------------------------------------------------------
# the pure functions


def test_cut_person_crops_to_the_person_and_flags_photo_borders():
    photo, lab = _photo_person(COLOURS[0])
    cut = cut_person(photo, lab, "a")
    assert cut.shape == (120, 60) or cut.shape == (121, 61)
    assert cut.cut == (False, False, False, False)
    assert (cut.image[cut.alpha] == COLOURS[0]).all()
    lab2 = np.zeros((50, 40), np.uint8)
    lab2[30:, 5:20] = 1  # reaches the bottom border of its photo
    c2 = cut_person(np.zeros((50, 40, 3), np.uint8), lab2)
    assert c2.shape == (20, 15) and c2.cut == (False, True, False, False)
    assert cut_person(photo, np.zeros_like(lab)) is None


@pytest.mark.parametrize("scale", [0.37, 0.5, 1.0, 1.6])
def test_resize_keeps_person_colours_pure(scale):
    """Premultiplied resizing: no pixel of the noisy photo leaks into the edge."""
    photo, lab = _photo_person(COLOURS[1])
    small = resize_cutout(cut_person(photo, lab), scale)
    assert abs(small.shape[0] - round(121 * scale)) <= 1
    assert small.alpha.sum() > 0
    assert (small.image[small.alpha] == COLOURS[1]).all()
    assert (small.image[~small.alpha] == 0).all()
    assert set(np.unique(small.labels)) == {0, 1}


def test_paste_later_person_occludes_earlier():
    image = np.zeros((20, 20, 3), np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    inst = np.zeros((20, 20), np.uint8)
    a = Cutout(np.full((10, 10, 3), 100, np.uint8), np.full((10, 10), 3, np.uint8))
    b = Cutout(np.full((10, 10, 3), 200, np.uint8), np.full((10, 10), 5, np.uint8))
    assert paste(image, labels, inst, a, (0, 0), 1) == 100
    assert paste(image, labels, inst, b, (5, 5), 2) == 100
    assert (inst == 1).sum() == 75 and (inst == 2).sum() == 100      # A lost the 25 covered pixels
    assert (inst[5:10, 5:10] == 2).all() and (labels[5:10, 5:10] == 5).all() and (image[5:10, 5:10] == 200).all()
    assert (labels[inst == 1] == 3).all() and (image[inst == 1] == 100).all()
    # partly out of frame: only the inside is pasted
    assert paste(image, labels, inst, a, (-5, 15), 3) == 25


@pytest.mark.parametrize("framing", ["webcam", "full"])
def test_every_labelled_pixel_shows_its_person(framing):
    """Before harmonisation each pixel's instance and label are those of the person whose colour it shows."""
    pasted = occluded = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        people = []
        for k, c in enumerate(COLOURS[:3]):
            photo, lab = _photo_person(c, label=k + 1, h=int(rng.integers(200, 400)), w=int(rng.integers(60, 140)), rng=rng)
            people.append(cut_person(photo, lab, f"p{k}"))
        comp = composite(_constant(BG), people, (128, 160), np.random.default_rng(seed), framing=framing, harmonize=False)
        ids = _colour_ids(comp.image, COLOURS[:3])
        assert (ids >= 0).all(), "a pixel shows neither a person's colour nor the background"
        assert ((ids == 0) == (comp.instances == 0)).all() and (comp.labels[ids == 0] == 0).all()
        for k, p in enumerate(comp.people, 1):
            person = int(p["name"][1])               # which of the three this instance is
            assert (ids[comp.instances == k] == person + 1).all()
            assert (comp.labels[comp.instances == k] == person + 1).all()  # its label travelled with it
            assert p["visible"] == (comp.instances == k).sum() >= 0.3 * p["pasted"]
            occluded += p["visible"] < p["pasted"]
        heights = [p["height"] for p in comp.people]
        assert heights == sorted(heights)           # nearer (taller) people are pasted later
        pasted += len(comp.people)
    assert pasted >= 24 and occluded >= 1


def test_far_framing_stands_small_whole_people_on_a_ground_plane():
    """far: whole people only (a close-up is never pasted), 5-35% of the frame's height, feet
    lower in the frame for taller people; pixels still exact."""
    H, W = 256, 320
    heights, feet, pasted = [], [], 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        people = [cut_person(*_photo_person(c, label=k + 1, h=int(rng.integers(200, 400)), w=int(rng.integers(60, 140)),
                                            rng=rng), f"p{k}") for k, c in enumerate(COLOURS[:4])]
        closeup = cut_person(*_photo_person(COLOURS[4], h=300, w=100, rng=rng), "close")
        closeup.cut = (False, True, False, False)  # cut by its photo's bottom
        comp = composite(_constant(BG, 300, 400), people + [closeup], (H, W), np.random.default_rng(seed),
                         framing="far", harmonize=False)
        ids = _colour_ids(comp.image, COLOURS[:4])
        assert (ids >= 0).all() and not (comp.image == COLOURS[4]).all(-1).any()
        for k, p in enumerate(comp.people, 1):
            assert p["name"] != "close"
            assert (ids[comp.instances == k] == int(p["name"][1]) + 1).all()
            assert 0.05 <= p["height"] <= 0.35
            heights.append(p["height"])
            feet.append(p["box"][3] / H)
        pasted += len(comp.people)
    assert pasted >= 25
    assert min(feet) >= 0.15 and np.mean(heights) < 0.2
    assert np.corrcoef(np.log(heights), feet)[0, 1] > 0.5  # smaller people stand farther up


def test_parsing_labels_travel_with_the_person():
    photo = np.zeros((200, 80, 3), np.uint8)
    lab = np.zeros((200, 80), np.uint8)
    lab[10:60, 20:60], photo[10:60, 20:60] = 2, COLOURS[0]      # "hair"
    lab[60:190, 10:70], photo[60:190, 10:70] = 3, COLOURS[1]    # "upper clothes"
    comp = composite(_constant(BG), [cut_person(photo, lab)], (128, 128), np.random.default_rng(1),
                     framing="full", harmonize=False)
    assert set(np.unique(comp.labels)) == {0, 2, 3}
    assert (comp.labels[(comp.image == COLOURS[0]).all(-1)] == 2).all()
    assert (comp.labels[(comp.image == COLOURS[1]).all(-1)] == 3).all()
    # only the row where the two parts meet is a blend of both colours
    mixed = (comp.instances > 0) & ~(comp.image == COLOURS[0]).all(-1) & ~(comp.image == COLOURS[1]).all(-1)
    assert mixed.sum() <= comp.labels.shape[1]


def test_harmonisation_changes_the_image_only():
    photo, lab = _photo_person(COLOURS[2])
    bg = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    for seed in range(6):
        kw = dict(framing="webcam" if seed % 2 else "full", count=2)
        plain = composite(bg, [cut_person(photo, lab, "a"), cut_person(photo, lab, "b")], (96, 128), np.random.default_rng(seed), harmonize=False, **kw)
        harm = composite(bg, [cut_person(photo, lab, "a"), cut_person(photo, lab, "b")], (96, 128), np.random.default_rng(seed), harmonize=True, **kw)
        assert np.array_equal(plain.labels, harm.labels) and np.array_equal(plain.instances, harm.instances)
        assert not np.array_equal(plain.image, harm.image)
        assert plain.jpeg_quality is None and 50 <= harm.jpeg_quality <= 95


def test_composite_is_a_function_of_the_seed():
    photo, lab = _photo_person(COLOURS[0])
    bg = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)

    def run(seed):
        return composite(bg, [cut_person(photo, lab)], (64, 64), np.random.default_rng(seed), framing="full")

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


# --------------------------------------------------------------------------------------
# the dataset format


def _people_folder(root: Path, n=20, val_colour=None, val_names=()):
    """A masks-format people set: person ``i`` is an ellipse of colour ``COLOURS[i % 3]`` (val ones ``val_colour``)."""
    for i in range(n):
        colour = val_colour if f"{i}.png" in val_names else COLOURS[i % 3]
        photo, lab = _photo_person(colour, h=90 + i, rng=np.random.default_rng(i))
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.png"), photo[..., ::-1])   # PNG: colours stay exact
        cv2.imwrite(str(root / "masks" / f"{i}.png"), lab * 255)
    return root


def _background_folder(root: Path, n=10, val_colour=None, val_names=()):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = val_colour if f"bg{i}.png" in val_names else BG
        cv2.imwrite(str(root / f"bg{i}.png"), _constant(colour, 120, 160)[..., ::-1])
    return root


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE", str(tmp_path / "cache"))
    _people_folder(tmp_path / "data" / "people")
    _background_folder(tmp_path / "data" / "rooms")
    return tmp_path / "data"


OPTS = dict(people=["people"], backgrounds=["rooms"], count=6, size=[64, 80], harmonize=False)


def test_format_writes_a_dataset_with_exact_masks(data):
    ds = open_dataset(data, "composite", **OPTS)
    assert len(ds) == 6 and ds.class_names == ("background", "person")
    for i in range(len(ds)):
        image, mask = ds.load(i)
        assert image.shape == (64, 80, 3) and set(np.unique(mask)) <= {0, 1}
        ids = _colour_ids(image, COLOURS[:3])
        assert (ids >= 0).all() and ((ids > 0) == (mask == 1)).all()
    folder = Path(ds.samples[0].image).parent.parent
    assert folder.parent == data.parent / "cache" / "composites"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["options"]["count"] == 6 and len(meta["composites"]) == 6
    assert all(r["people"] for r in meta["composites"])


def test_cache_is_reused_and_keyed_by_options(data, monkeypatch):
    import kseg.data.readers.composite as comp_mod

    a = open_composite(data, **OPTS)
    folder = Path(a.samples[0].image).parent.parent
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "images").iterdir()}
    monkeypatch.setattr(comp_mod, "_generate", lambda *a, **k: pytest.fail("regenerated a cached set"))
    b = open_composite(data, **OPTS)
    assert [s.image for s in b.samples] == [s.image for s in a.samples]
    assert before == {p.name: p.stat().st_mtime_ns for p in (folder / "images").iterdir()}
    monkeypatch.undo()
    monkeypatch.setenv("KSEG_CACHE", str(data.parent / "cache"))
    c = open_composite(data, **{**OPTS, "seed": 1})
    assert Path(c.samples[0].image).parent.parent != folder
    # no half-written folder is left behind
    assert not [p for p in (data.parent / "cache" / "composites").iterdir() if p.name.startswith(".tmp")]


def test_same_options_give_the_same_files(data, monkeypatch, tmp_path):
    a = open_composite(data, **{**OPTS, "harmonize": True})
    monkeypatch.setenv("KSEG_CACHE", str(tmp_path / "other-cache"))
    b = open_composite(data, **{**OPTS, "harmonize": True, "workers": 2})
    for sa, sb in zip(a.samples, b.samples):
        assert Path(sa.image).read_bytes() == Path(sb.image).read_bytes()
        assert Path(sa.mask).read_bytes() == Path(sb.mask).read_bytes()


def test_no_held_out_image_is_a_source(tmp_path, monkeypatch):
    """Val people are red and val backgrounds white: they never show up in training composites."""
    from kseg.data.readers import open_masks
    from kseg.data.readers.composite import _hash_split, _options

    monkeypatch.setenv("KSEG_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    _people_folder(root / "people")
    _, val = open_masks(root / "people", class_names=("background", "person"), binary=True).split(0.2, 0)
    val_people = {Path(s.image).name for s in val.samples}
    _background_folder(root / "rooms")
    _, o = _options(root, {"split": "val", "val_fraction": 0.2})
    val_bgs = {Path(p).name for p in _hash_split(sorted(str(p) for p in (root / "rooms").iterdir()), "rooms", o)}
    assert len(val_people) == 4 and len(val_bgs) == 2
    # repaint the held-out images
    _people_folder(root / "people", val_colour=(255, 0, 0), val_names=val_people)
    _background_folder(root / "rooms", val_colour=(255, 255, 255), val_names=val_bgs)
    opts = {**OPTS, "count": 30, "val_fraction": 0.2}
    train = open_composite(root, **opts)
    for i in range(len(train)):
        image, _ = train.load(i)
        assert not (image == (255, 0, 0)).all(-1).any() and not (image == (255, 255, 255)).all(-1).any()
    meta = json.loads((Path(train.samples[0].image).parent.parent / "meta.json").read_text())
    used = {p["name"].split("/")[-1] for r in meta["composites"] for p in r["people"]}
    assert used and not used & val_people
    # split="val" draws on exactly the held-out images
    val_set = open_composite(root, **{**opts, "split": "val", "count": 10})
    meta = json.loads((Path(val_set.samples[0].image).parent.parent / "meta.json").read_text())
    assert {p["name"].split("/")[-1] for r in meta["composites"] for p in r["people"]} <= val_people
    assert {r["background"].split("/")[-1] for r in meta["composites"]} <= val_bgs


def test_instances_match_their_masks(data):
    inst = open_composite_instances(data, **{**OPTS, "people_per_image": [2, 4]})
    assert len(inst) == 6 and inst.class_names == ("background", "person")
    folder = Path(inst.image_paths[0]).parent.parent
    coco = open_instances(folder, "train", categories=("person",))
    assert len(coco) == 6
    n = 0
    for i in range(len(inst)):
        image, t = inst.load(i)
        _, mask = open_dataset(data, "composite", **{**OPTS, "people_per_image": [2, 4], "labels": "instances"}).load(i)
        assert t["masks"].sum(0).max() == 1                          # disjoint
        assert np.array_equal(t["masks"].sum(0), mask)                # together: the person mask
        for m, box in zip(t["masks"], t["boxes"]):
            ys, xs = np.nonzero(m)
            assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert len(np.unique(_colour_ids(image, COLOURS[:3])[m > 0])) == 1   # one person's pixels
        _, ct = coco.load(i)
        assert np.array_equal(np.sort(ct["masks"].reshape(len(ct["masks"]), -1), 0),
                              np.sort(t["masks"].reshape(len(t["masks"]), -1), 0))
        n += len(t["masks"])
    assert n >= 12


def test_options_file_config_entry_and_errors(data, tmp_path):
    from kseg.config import load_config

    opts_file = tmp_path / "comp.yaml"
    opts_file.write_text(f"root: {data}\npeople: [people]\nbackgrounds: [rooms]\ncount: 3\nsize: 48\nharmonize: false\n")
    ds = open_dataset(opts_file)                           # auto: an options file is a composite
    assert len(ds) == 3 and ds.load(0)[0].shape == (48, 48, 3)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"data:\n  train:\n    - {{path: {data}, format: composite, people: [people], backgrounds: [rooms], "
                        "count: 3, size: [48, 48], framing: webcam, holdout: false}\n")
    spec = load_config(cfg_file).data.train[0]
    assert spec.format == "composite" and not spec.holdout and spec.options["framing"] == "webcam"
    assert len(open_dataset(spec.resolved_path(), spec.format, **spec.options)) == 3
    with pytest.raises(KsegError, match="has no option 'colour'"):
        open_dataset(data, "composite", colour=1)
    with pytest.raises(KsegError, match="framing"):
        open_dataset(data, "composite", framing="portrait")
    with pytest.raises(KsegError, match=r"framing=\{'far': 0, 'near': 1\}: give weights"):
        open_dataset(data, "composite", framing={"far": 0, "near": 1})
    ds = open_dataset(data, "composite", people=["people"], backgrounds=["rooms"], count=6, size=48, harmonize=False,
                      framing={"webcam": 1, "far": 2})
    meta = json.loads((Path(ds.samples[0].image).parent.parent / "meta.json").read_text())
    assert {r["framing"] for r in meta["composites"]} <= {"webcam", "far"} and meta["options"]["framing"]["far"] == 2.0
    with pytest.raises(KsegError, match="person-free"):
        open_dataset(data, "composite", people=["people"], backgrounds=["people"])


# --------------------------------------------------------------------------------------
# the shared data


@pytest.mark.shared_data
def test_composites_of_the_shared_data(shared_data, tmp_path, monkeypatch):
    from kseg.data.readers import open_ccp

    monkeypatch.setenv("KSEG_CACHE", str(tmp_path / "cache"))
    ds = open_composite(shared_data, count=8, size=[128, 128], framing="mixed", seed=3)
    assert len(ds) == 8 and ds.class_names == ("background", "person")
    meta = json.loads((Path(ds.samples[0].image).parent.parent / "meta.json").read_text())
    _, val = open_ccp(shared_data / "people-parsing", groups="person").split(0.1, 0)
    held_out = {f"people-parsing/{Path(s.image).name}" for s in val.samples}
    coco_val = {i["file_name"] for f in (shared_data / "coco").glob("*/annotations/instances_val2017.json")
                for i in json.loads(f.read_text())["images"]}
    for i, r in enumerate(meta["composites"]):
        _, mask = ds.load(i)
        names = [p["name"] for p in r["people"]]
        assert not set(names) & held_out and not {n.split("/")[-1].split("#")[0] for n in names} & coco_val
        assert r["background"].split("/")[-1] not in coco_val
        assert (mask == 1).sum() == sum(p["visible"] for p in r["people"]) > 0
    assert set(meta["sources"]["backgrounds"]) >= {"camvid-train", "pets", "videos"}
