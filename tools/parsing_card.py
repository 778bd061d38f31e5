"""Fill a parsing run's model card from the figures its chain wrote, before it is shipped.

`tools/ship_parsing_v2.sh` exports `RUN/export-int8-calibrated/parsing.tflite` with a card that
knows the file, the quantization and the parity with Keras; this adds what the rest of the chain
measured, from the files it wrote, and the comparison with the shipped model measured in the same
runs (`exports/parsing.tflite` is the third model of each `eval_people.py` call):

- `validation`, `validation_float` (eval_parsing.json: held-out people-parsing and faces),
- `person_free` (eval_person_free.json), `person_found` (as_person.json, optional:
  `eval_people.py --task portrait --as-person RUN.tflite exports/parsing.tflite --json ...`),
- `calibration` (RUN/calibrated/best.calibration.json, written by `kseg calibrate`),
- `comparison` with the shipped model, and the fields that describe the whole training chain
  (`training_data`, `training_time`, `command`), which are the shipped card's with this run's
  step appended (`--data`, `--time`, `--command`); `latency_ms` from `--latency` (a JSON object
  with the measured figures) or else the shipped card's, which stays right only for the same
  network at the same input.

    .venv/bin/python tools/parsing_card.py ~/kseg-runs/runs/parsing_v10 --config configs/parsing_v10.yaml \
        --data "..." --time "..." --command "..." --note "..."
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ("portraits", "faces", "people-parsing", "people-masks", "coco-val")
FREE = ("coco-mini-val", "coco-tiny-val", "camvid", "pets")


def _model_rows(results: dict, path_part: str) -> dict:
    """The figures of the one model whose key (``PATH@HxW``) contains ``path_part``."""
    keys = [k for k in results if path_part in k.rsplit("@", 1)[0]]
    if len(keys) != 1:
        raise SystemExit(f"tools/parsing_card.py: expected one model matching {path_part!r} in the figures, "
                         f"found {keys or 'none'} among {list(results)}")
    return results[keys[0]]


def _clean(v):
    """JSON without NaN (a class absent from a set has no IoU)."""
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items() if k != "confusion"}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _pick(sets: dict, name: str) -> str | None:
    return next((k for k in sets if k == name or k.startswith(name)), None)


def build(run: Path, config: str, previous: Path, shipped: str = "exports/parsing.tflite") -> dict:
    out = run / "export-int8-calibrated"
    parsing = json.loads((out / "eval_parsing.json").read_text())
    free = json.loads((out / "eval_person_free.json").read_text())
    this_val, prev_val = _model_rows(parsing, str(out / "parsing.tflite")), _model_rows(parsing, shipped)
    float_val = next(v for k, v in parsing.items() if k.rsplit("@", 1)[0].endswith(".keras"))
    this_free, prev_free = _model_rows(free, str(out / "parsing.tflite")), _model_rows(free, shipped)
    card = {
        "validation": {"task": "parsing", "split": "val_fraction 0.1, seed 0 (people-parsing and faces)",
                       "command": ".venv/bin/python benchmarks/eval_people.py --task parsing RUN/calibrated/best.keras "
                                  "RUN/parsing.tflite exports/parsing.tflite(previous)",
                       "sets": _clean(this_val)},
        "validation_float": {"model": "RUN/calibrated/best.keras", "sets": _clean(float_val)},
        "person_free": {"command": ".venv/bin/python benchmarks/eval_people.py --task person-free RUN/parsing.tflite "
                                   "exports/parsing.tflite(previous)",
                        "meaning": "share of pixels labelled anything but background on held-out frames with nobody "
                                   "in them, and share of frames where that exceeds 1%",
                        "sets": _clean(this_free)},
    }
    pp, pv = this_val["people-parsing"], prev_val["people-parsing"]
    fc, fv = this_val["faces"], prev_val["faces"]
    five = ("background", "skin", "hair", "upper_clothes", "accessories")
    faces5 = lambda row: sum(row["per_class_iou"][c] for c in five) / len(five)
    free_share = lambda rows: [round(rows[k]["labelled_share"], 4) for k in (_pick(rows, n) for n in FREE) if k]
    comparison = {
        "people-parsing val mIoU": {"this": round(pp["miou"], 3), "previous": round(pv["miou"], 3)},
        "people-parsing val per class IoU": {"this": _clean({k: round(v, 3) for k, v in pp["per_class_iou"].items()}),
                                             "previous": _clean({k: round(v, 3) for k, v in pv["per_class_iou"].items()})},
        "faces val mIoU over their 5 groups": {"this": round(faces5(fc), 3), "previous": round(faces5(fv), 3)},
        "faces val hair / upper clothes IoU": {
            "this": [round(fc["per_class_iou"]["hair"], 3), round(fc["per_class_iou"]["upper_clothes"], 3)],
            "previous": [round(fv["per_class_iou"]["hair"], 3), round(fv["per_class_iou"]["upper_clothes"], 3)]},
        "frames with nobody, share of pixels labelled (" + " / ".join(FREE) + ")": {
            "this": free_share(this_free), "previous": free_share(prev_free)},
    }
    as_person = out / "as_person.json"
    if as_person.is_file():
        rows = json.loads(as_person.read_text())
        mine, prev = _model_rows(rows, str(out / "parsing.tflite")), _model_rows(rows, shipped)
        names = [k for k in (_pick(mine, n) for n in SETS) if k]
        card["person_found"] = {
            "command": ".venv/bin/python benchmarks/eval_people.py --as-person RUN/parsing.tflite exports/parsing.tflite(previous)",
            "meaning": "any group taken as person: mean per-image IoU with the person masks of the held-out people sets",
            "sets": {n: round(mine[n]["mean_image_iou"], 3) for n in names}}
        comparison["person found, any group as person: mean per-image IoU (" + " / ".join(names) + ")"] = {
            "this": [round(mine[n]["mean_image_iou"], 3) for n in names],
            "previous": [round(prev[n]["mean_image_iou"], 3) for n in names]}
    card["comparison"] = {"reference": "the previous shipped parsing model, same runs of benchmarks/eval_people.py",
                          **comparison}
    cal = run / "calibrated" / "best.calibration.json"
    if cal.is_file():
        c = json.loads(cal.read_text())
        card["calibration"] = {
            "method": "per-class logit biases (logit adjustment) fitted for the dataset mIoU on pixels of the training "
                      "images (never the validation split), added to the classifier's bias: the network and its speed "
                      "are unchanged; it takes back the over-prediction of rare classes that median-frequency class "
                      "weights cause",
            "command": f"kseg calibrate RUN/best.keras --config {config} --out RUN/calibrated/best.keras",
            "images": c["images"], "pixels": c["pixels"], "seed": c["seed"],
            "biases": dict(zip(c["class_names"], c["biases"])),
            "training_pixels_miou": {"before": round(c["miou_before"], 4), "after": round(c["miou_after"], 4)}}
    prev_card = json.loads(previous.read_text()) if previous.is_file() else {}
    for key in ("latency_ms", "teacher_models", "training_loss", "data_licence"):
        if key in prev_card:
            card[key] = prev_card[key]
    return card, prev_card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the run folder (RUNS/NAME) of tools/ship_parsing_v2.sh with CALIBRATE=1")
    ap.add_argument("--config", required=True)
    ap.add_argument("--previous", type=Path, default=ROOT / "exports" / "parsing.json", help="the shipped card")
    ap.add_argument("--data", default="", help="appended to the shipped card's training_data")
    ap.add_argument("--time", default="", help="appended to the shipped card's training_time")
    ap.add_argument("--command", default="", help="replaces the card's command (the whole chain)")
    ap.add_argument("--loss", default="", help="appended to the shipped card's training_loss")
    ap.add_argument("--note", default="", help="the comparison's note: what changed for users")
    ap.add_argument("--latency", type=Path, help="a JSON object with this file's measured latency_ms")
    args = ap.parse_args(argv)

    from kseg.export import write_model_card

    card, prev = build(args.run, args.config, args.previous)
    if args.data:
        card["training_data"] = (prev.get("training_data", "") + "; " + args.data).lstrip("; ")
    if args.time:
        card["training_time"] = (prev.get("training_time", "") + "; " + args.time).lstrip("; ")
    if args.loss:
        card["training_loss"] = (prev.get("training_loss", "") + "; " + args.loss).lstrip("; ")
    if args.command:
        card["command"] = args.command
    if args.note:
        card["comparison"]["note"] = args.note
    if args.latency:
        card["latency_ms"] = json.loads(args.latency.read_text())
    path = write_model_card(args.run / "export-int8-calibrated" / "parsing.tflite", **card)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
