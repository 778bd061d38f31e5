"""The person/background mix of people-parsing, people-masks and COCO persons."""

from __future__ import annotations

from pathlib import Path

from kseg.data.readers.base import concat
from kseg.data.readers.ccp import open_ccp
from kseg.data.readers.coco import open_coco
from kseg.data.readers.folders import open_masks


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
