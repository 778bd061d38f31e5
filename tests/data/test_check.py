"""kseg data check: counts, histogram, sizes, every bad sample, exit codes, no tracebacks."""

import json

import numpy as np

from kseg.cli import main
from kseg.data.check import check_dataset
from tests.data import fixtures as F


def test_clean_dataset_report(tmp_path):
    root = F.masks_folder(tmp_path / "m", n=4)
    r = check_dataset(root, "masks")
    assert r.ok and r.num_samples == 4
    d = r.to_dict()
    assert [c["pixels"] for c in d["classes"]] == [4 * (16 * 24 - 60), 4 * 60]
    assert d["classes"][1]["images"] == 4 and d["sizes"]["median"] == {"width": 24, "height": 16}
    assert d["classes"][1]["fraction"] == 60 / (16 * 24)
    assert "no bad samples" in r.format_text()


def test_sizes_histogram_and_ignore(tmp_path, capsys):
    # five images: 2 of 24×16, 2 of 40×30, 1 of 10×8; one class-2 label, one ignored block
    root = tmp_path / "m"
    for i, (h, w) in enumerate([(16, 24), (30, 40), (16, 24), (8, 10), (30, 40)]):
        F.write_image(root / "images" / f"{i}.png", h, w, seed=i)
        m = np.zeros((h, w), np.uint8)
        m[:2, :3] = 2      # 6 pixels of class 2 in every image
        m[-1, :] = 255     # last row ignored: w pixels
        F.write_mask(root / "masks" / f"{i}.png", m)
    (root / "classes.json").write_text(json.dumps({"classes": ["bg", "a", "b"]}))
    r = check_dataset(root, "masks", progress=True, workers=2)
    d = r.to_dict()
    assert r.ok and d["samples"] == 5
    areas = [16 * 24, 30 * 40, 16 * 24, 8 * 10, 30 * 40]
    ignored = 24 + 40 + 24 + 10 + 40
    assert r.ignored_pixels == ignored
    assert [c["pixels"] for c in d["classes"]] == [sum(areas) - ignored - 30, 0, 30]
    assert [c["images"] for c in d["classes"]] == [5, 0, 5]
    s = d["sizes"]
    assert s["min"] == {"width": 10, "height": 8} and s["max"] == {"width": 40, "height": 30}
    assert s["median"] == {"width": 24, "height": 16}
    assert s["most_common"] == [{"width": 24, "height": 16, "images": 2}, {"width": 40, "height": 30, "images": 2},
                                {"width": 10, "height": 8, "images": 1}]
    text = r.format_text()
    assert "min 10×8, median 24×16, max 40×30" in text and f"{100 * ignored / sum(areas):.2f}%" in text
    assert capsys.readouterr().err.startswith("check: 5/5 samples in ")  # progress on stderr, as a log sees it


def test_every_bad_sample_is_listed_and_exit_is_1(tmp_path, capsys):
    root = F.masks_folder(tmp_path / "m", n=6)
    (root / "images" / "1.jpg").write_bytes(b"garbage")                      # unreadable image
    F.write_mask(root / "masks" / "2.png", np.zeros((5, 5), np.uint8))       # wrong size
    F.write_mask(root / "masks" / "3.png", np.full((16, 24), 7, np.uint8))   # label out of range
    (root / "masks" / "4.png").unlink()                                      # missing pair
    F.write_mask(root / "masks" / "orphan.png", np.zeros((16, 24), np.uint8))  # mask without image
    r = check_dataset(root, "masks", binary=True)
    assert not r.ok
    text = "\n".join(r.bad)
    for needle in ("1.jpg", "2.png", "label values [7]", "4.jpg has no mask", "orphan.png has no image"):
        assert needle in text, needle
    assert r.num_samples - len([b for b in r.bad if "has no" not in b]) == 2  # 0 and 5 are fine
    assert main(["data", "check", str(root), "--format", "masks", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert len(out["bad"]) == 5


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere"), "--format", "masks"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err and "Traceback" not in err


def test_check_camvid_shared(shared_data):
    r = check_dataset(shared_data / "camvid", "camvid", split="val")
    assert r.ok and r.num_samples == 101 and r.ignored_pixels > 0


def test_cli_option_flags_reach_the_readers(tmp_path, capsys):
    ccp = F.ccp_folder(tmp_path / "ccp")
    assert main(["data", "check", str(ccp), "--format", "ccp", "--groups", "person", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in out["classes"]] == ["background", "person"]
    # rows 0..11 are person in each 16×24 mask, plus the 4×4 shoes: 3 × (12·24 + 16)
    assert out["classes"][1]["pixels"] == 3 * (12 * 24 + 16)
    pets = F.pets_folder(tmp_path / "pets")
    assert main(["data", "check", str(pets), "--format", "pets", "--border", "pet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ignored_pixels"] == 0 and out["classes"][1]["pixels"] == 4 * 6 * 8
    coco = F.coco_folder(tmp_path / "coco")
    assert main(["data", "check", str(coco), "--split", "val", "--categories", "person,dog", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "coco" and [c["name"] for c in out["classes"]] == ["background", "person", "dog"]
    assert [c["pixels"] for c in out["classes"]][1:] == [48, 16] and out["ignored_pixels"] == 32
    cam = F.camvid_folder(tmp_path / "cv")
    assert main(["data", "check", str(cam), "--split", "test"]) == 0
    assert "camvid-test (camvid): 2 samples, 2 readable, 11 classes" in capsys.readouterr().out


def test_coco_image_missing_is_a_bad_sample(tmp_path, capsys):
    root = F.coco_folder(tmp_path / "coco", missing_image=True)
    r = check_dataset(root, "coco", split="val", categories=("person", "dog"))
    assert r.num_samples == 2 and len(r.bad) == 1 and "000000000002.jpg not found" in r.bad[0]
    assert r.to_dict()["readable"] == 1 and r.pixel_counts.tolist() == [20 * 30 - 48 - 32, 48, 0]
    assert main(["data", "check", str(root), "--split", "val", "--categories", "dog"]) == 1
    assert "1 bad sample(s)" in capsys.readouterr().out
