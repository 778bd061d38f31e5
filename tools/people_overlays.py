"""Overlay figure of the shipped people models on validation images (docs/img/people_cases.png).

Each row: the image, the portrait model's person mask (green tint, white contour, per-image IoU),
and the parsing model's 8 groups. Images come from the held-out validation splits only (the ones
``benchmarks/eval_people.py`` scores): of each set, the image the portrait model does worst on and
the median one, so the figure shows the failures as well as the typical case:

    .venv/bin/python tools/people_overlays.py --portrait exports/portrait.tflite \
        --parsing exports/parsing.tflite --out docs/img/people_cases.png
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def overlay_person(image, prob, color=(0, 220, 90)):
    import cv2
    import numpy as np

    out = image.astype(np.float32)
    m = (prob > 0.5).astype(np.uint8)
    out[m > 0] = 0.55 * out[m > 0] + 0.45 * np.array(color, np.float32)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = out.astype(np.uint8)
    cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, image.shape[0] // 200))
    return out


def overlay_classes(image, mask, colors):
    import numpy as np

    colors = np.asarray(colors, np.float32)
    out = image.astype(np.float32)
    fg = mask > 0
    out[fg] = 0.4 * out[fg] + 0.6 * colors[mask[fg]]
    return out.astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portrait", default="exports/portrait.tflite")
    ap.add_argument("--parsing", default="exports/parsing.tflite")
    ap.add_argument("--per-set", type=int, default=2, help="1: the hardest image of each set; 2: and the median")
    ap.add_argument("--height", type=int, default=300, help="row height in pixels")
    ap.add_argument("--out", default="docs/img/people_cases.png")
    args = ap.parse_args(argv)

    import cv2
    import numpy as np

    from kseg.data.readers import people_dataset
    from kseg.paths import atomic_path
    from kseg.runtime import Segmenter

    portrait = Segmenter(args.portrait, num_threads=2)
    parsing = Segmenter(args.parsing, num_threads=2) if args.parsing and os.path.exists(args.parsing) else None
    _, vals = people_dataset(val_fraction=0.1, seed=0)
    rows = []
    for name in ("people-masks", "people-parsing", "coco-val"):
        ds = vals[name]
        ious = []
        for i in range(len(ds)):
            image, truth = ds.load(i)
            pred = portrait.segment(image).category_mask == portrait.person_index
            t, valid = truth == 1, truth != 255
            union = ((pred | t) & valid).sum()
            ious.append(((pred & t) & valid).sum() / union if union else 1.0)
        order = np.argsort(ious)
        # the hardest image and the median one of each set: failures shown, not hidden
        picks = [order[0], order[len(order) // 2]][: args.per_set]
        for i in picks:
            image, _ = ds.load(int(i))
            prob = portrait.segment(image).confidence[..., portrait.person_index]
            shown = overlay_person(image, prob)
            label = (f"{name} #{int(i)}: portrait person IoU {ious[int(i)]:.2f} "
                     f"({'hardest' if i == order[0] else 'median'} of {len(ds)})")
            tiles = [image, shown]
            if parsing is not None:
                tiles.append(overlay_classes(image, parsing.segment(image).category_mask, parsing.colors))
            h = args.height
            tiles = [cv2.resize(t, (int(round(t.shape[1] * h / t.shape[0])), h), interpolation=cv2.INTER_AREA)
                     for t in tiles]
            row = np.concatenate(tiles, axis=1)
            strip = np.full((26, row.shape[1], 3), 255, np.uint8)
            cv2.putText(strip, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.concatenate([strip, row], axis=0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with atomic_path(args.out) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
    print(f"wrote {args.out} ({grid.shape[1]}×{grid.shape[0]})")


if __name__ == "__main__":
    main()
