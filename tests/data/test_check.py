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
    assert d["classes"][1]["images"] == 4 and d["sizes"]["median"] == [16, 24]
    assert "no bad samples" in r.format_text()


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
