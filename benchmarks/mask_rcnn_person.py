"""Train, evaluate and export the Mask R-CNN person model (figures in docs/mask_rcnn.md).

    .venv/bin/python benchmarks/mask_rcnn_person.py train --config configs/mask_rcnn_person_lite0.yaml --minutes 40
    .venv/bin/python benchmarks/mask_rcnn_person.py eval --config configs/mask_rcnn_person_lite0.yaml
    .venv/bin/python benchmarks/mask_rcnn_person.py export --config configs/mask_rcnn_person_lite0.yaml

``train`` writes OUT/NAME/{last.weights.h5, state.json, history.csv} (OUT: ``--out-dir``, default
``$KSEG_RUNS`` or runs/ in the work tree) after every epoch and resumes from them: the weights
file holds the optimizer's state too (Adam moments and step count, so a learning-rate schedule
continues where it stopped), state.json the finished epochs; a checkpoint is written to a
temporary name and renamed, so a run killed mid-save keeps the previous one. ``eval`` runs
pycocotools (box and mask AP) on the persons of the COCO val images that are not training
images, and writes OUT/NAME/eval.json (``--rpn-post-nms-test 100 300 1000``: once per
test-time proposal count, eval_proposals.json). ``people-val --people-sets NAME ...`` writes the held-out
instances of people-masks (one per connected person region; also ``people-masks-val``), portraits
or people-parsing (one person per photo) as OUT/NAME-val/{gt JSON, images} for ``kseg evaluate
MODEL.tflite GT.json --images DIR --categories person``; ``eval --people-sets ...`` scores them too. ``--set key.sub=value`` overrides a config value
(YAML syntax), e.g. ``--set data.composites.count=20`` for a smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


def load_cfg(path, overrides=()):
    """The YAML config with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    for item in overrides or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: use key.sub=value, e.g. train.epochs=2")
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    return cfg


def run_dir(args, cfg) -> Path:
    """OUT/NAME: ``--out-dir`` (default ``$KSEG_RUNS`` or runs/ in the work tree) and the config's name."""
    base = Path(args.out_dir or os.environ.get("KSEG_RUNS") or ROOT / "runs").expanduser()
    return base / cfg["name"]


def coco_train_and_val(cfg):
    """COCO person InstanceDatasets: train (deduplicated) and val (not in train, deduplicated)."""
    from kseg.data.readers import InstanceDataset, open_instances
    from kseg.paths import shared_data_dir

    root = shared_data_dir() / "coco"
    trains, vals, seen = [], [], set()
    for sub in cfg["data"]["coco_subsets"]:
        tr = open_instances(root / sub, "train", categories=("person",))
        keep = [i for i, p in enumerate(tr.image_paths) if Path(p).name not in seen]
        seen.update(Path(tr.image_paths[i]).name for i in keep)
        trains.append(_subset(tr, keep))
    val_names = set()
    for sub in cfg["data"]["coco_subsets"]:
        va = open_instances(root / sub, "val", categories=("person",))
        keep = []
        for i, p in enumerate(va.image_paths):
            n = Path(p).name
            if n not in seen and n not in val_names:
                val_names.add(n)
                keep.append(i)
        vals.append((root / sub / "annotations" / "instances_val2017.json", _subset(va, keep)))
    return trains, vals


def _subset(d, keep):
    from kseg.data.readers import InstanceDataset

    return InstanceDataset(d.name, d.class_names, [d.image_paths[i] for i in keep], [d.loaders[i] for i in keep],
                           d.coco_category_ids, [d.image_ids[i] for i in keep] if d.image_ids else [])


def train_sets(cfg):
    from kseg.data.readers import instances_from_semantic, open_ccp, open_masks
    from kseg.paths import shared_data_dir

    root = shared_data_dir()
    coco, _ = coco_train_and_val(cfg)
    sets = coco * int(cfg["data"].get("coco_repeat", 1))  # crowded COCO scenes weigh more
    if cfg["data"].get("people_masks"):
        pm = open_masks(root / "people-masks", class_names=("background", "person"), binary=True)
        sets.append(instances_from_semantic(pm, 1, min_area=256, per="region"))
    if cfg["data"].get("people_parsing"):
        pp = open_ccp(root / "people-parsing", groups="person")
        sets.append(instances_from_semantic(pp, 1, min_area=256, per="image"))
    cv = cfg["data"].get("camvid_pedestrians")
    if cv:  # real street scenes with small people: {split: train, repeat: 3, min_area: 40}
        from kseg.data.readers import camvid_pedestrians

        cv = {} if cv is True else dict(cv)
        repeat = int(cv.pop("repeat", 1))
        sets += [camvid_pedestrians(root / "camvid", **cv)] * repeat
    if cfg["data"].get("composites"):
        # people pasted onto person-free backgrounds, exact instance masks (kseg.data.readers.composite);
        # data.composites holds its options, e.g. {count: 2000, size: [320, 320], framing: full}
        from kseg.data.readers import open_composite_instances

        sets.append(open_composite_instances(**cfg["data"]["composites"]))
    return sets


def build(cfg, pretrained=True):
    from kseg.models.mask_rcnn import MaskRCNN

    kw = dict(cfg["model"])
    kw["pretrained"] = kw.get("pretrained", False) and pretrained
    return MaskRCNN(**kw)


def learning_rate(t):
    """The config's learning rate: a constant, or with ``schedule: cosine`` a linear warm-up over
    ``warmup_steps`` to ``learning_rate`` then a cosine decay to ``min_lr_fraction`` of it at
    ``epochs × steps_per_epoch`` (driven by the optimizer's step count, which the checkpoint keeps)."""
    import keras

    lr = float(t["learning_rate"])
    if t.get("schedule", "constant") == "constant":
        return lr
    if t["schedule"] != "cosine":
        raise SystemExit(f"train.schedule={t['schedule']!r}: use constant or cosine")
    total = int(t["epochs"]) * int(t["steps_per_epoch"])
    warm = int(t.get("warmup_steps", 0))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warm else lr, max(total - warm, 1), alpha=float(t.get("min_lr_fraction", 0.0)),
        warmup_target=lr if warm else None, warmup_steps=warm)


def _finished_epochs(out):
    state = out / "state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["epochs_done"])
    hist = out / "history.csv"  # runs from before state.json
    return max(sum(1 for _ in open(hist)) - 1, 0) if hist.is_file() else 0


def cmd_train(args):
    import keras

    from kseg.data.instances import make_instance_dataset

    cfg = load_cfg(args.config, args.set)
    out = run_dir(args, cfg)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg["train"]
    keras.utils.set_random_seed(t["seed"])
    ckpt = out / "last.weights.h5"
    initial_epoch = _finished_epochs(out) if ckpt.is_file() else 0
    epochs = int(args.epochs or t["epochs"])
    if initial_epoch >= epochs:
        print(f"{out} has {initial_epoch} of {epochs} epochs done; nothing to train", flush=True)
        return
    sets = train_sets(cfg)
    n_images = sum(len(s) for s in sets)
    print(f"train images: {n_images} ({', '.join(f'{s.name}: {len(s)}' for s in sets)}); out {out}", flush=True)
    d = cfg["data"]
    # a resumed run draws a new order (the generator restarts; the same seed would replay epoch 1's)
    ds = make_instance_dataset(sets, size=d["size"], batch_size=d["batch_size"], max_instances=d["max_instances"],
                               training=True, seed=t["seed"] + 1000 * initial_epoch,
                               scale_range=tuple(d.get("scale_range", (1.0, 1.0))))
    model = build(cfg)
    opt = keras.optimizers.Adam(learning_rate(t), clipnorm=t.get("clipnorm"))
    model.compile(opt)
    hist_path = out / "history.csv"
    if initial_epoch:
        opt.build(model.trainable_variables)  # so that load_weights restores Adam's moments and step count
        model.load_weights(ckpt)
        print(f"resuming after epoch {initial_epoch} (optimizer step {int(opt.iterations.numpy())})", flush=True)
    elif t.get("init_from"):  # fine-tuning: another run's weights (same architecture), a fresh optimizer
        init = Path(t["init_from"]).expanduser()
        if not init.is_file():
            raise SystemExit(f"train.init_from {init} not found; train that run first or remove the key")
        import warnings

        with warnings.catch_warnings():  # its Adam state is not wanted: a new schedule starts
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(init)
        print(f"starting from the weights of {init} (a fresh optimizer)", flush=True)
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    steps = int(args.steps_per_epoch or t["steps_per_epoch"])

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            tmp = out / "last.tmp.weights.h5"
            model.save_weights(tmp)
            os.replace(tmp, ckpt)  # a kill mid-save keeps the previous checkpoint
            (out / "state.tmp.json").write_text(json.dumps({"epochs_done": epoch + 1, "config": args.config,
                                                            "optimizer_step": int(opt.iterations.numpy())}))
            os.replace(out / "state.tmp.json", out / "state.json")
            dt = time.time() - self.t0
            print(f"{time.strftime('%H:%M:%S')} epoch {epoch + 1}/{epochs} ({dt / steps:.2f} s/step): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()), flush=True)
            if deadline and time.time() > deadline:
                self.model.stop_training = True

    t0 = time.time()
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, initial_epoch=initial_epoch, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.CSVLogger(str(hist_path), append=initial_epoch > 0), Checkpoint()])
    print(f"trained {time.time() - t0:.0f} s", flush=True)


def _evaluate(model, vals, out, limit=None):
    """Box and mask AP (pycocotools) of ``model`` on each val subset; the report and the results."""
    from kseg.data.instances import subset_coco_json
    from kseg.evaluate_instances import coco_eval, predict_coco

    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "subsets": {}}
    all_res, t_total, n_total = {}, 0.0, 0
    for gt_src, va in vals:
        if limit:
            va = _subset(va, list(range(min(limit, len(va)))))
        if not len(va):
            continue
        gt = gt_src if va.name in {f"{n}-val" for n in PEOPLE_SETS} else subset_coco_json(
            gt_src, out / f"gt_{va.name}_{len(va)}.json", va.coco_category_ids, va.image_ids)
        t0 = time.time()
        res = predict_coco(model, va, batch_size=1)
        dt = time.time() - t0
        t_total += dt
        n_total += len(va)
        segm, bbox = coco_eval(gt, res, "segm"), coco_eval(gt, res, "bbox")
        report["subsets"][va.name] = {"images": len(va), "detections": len(res), "segm": segm, "bbox": bbox,
                                      "seconds_per_image": dt / len(va)}
        all_res[va.name] = res
        print(f"{va.name}: {len(va)} images, mask AP {segm['AP']:.3f} AP50 {segm['AP50']:.3f} AP75 {segm['AP75']:.3f} | "
              f"box AP {bbox['AP']:.3f} AP50 {bbox['AP50']:.3f} | {dt / len(va):.2f} s/image", flush=True)
    report["seconds_per_image"] = t_total / max(n_total, 1)
    return report, all_res


PEOPLE_SETS = ("people-masks", "portraits", "people-parsing")


def people_val(out, limit=None, name="people-masks"):
    """The held-out 10 % of a shared people set (``split(0.1, 0)``, as the configs and the composites
    hold it out) as person instances, and its COCO ground-truth file. people-masks: one instance per
    connected person region (people who touch form one region, so one "instance" may hold two
    people); portraits and people-parsing: one person per photo, all its pixels one instance."""
    from kseg.data.instances import write_coco_gt
    from kseg.data.readers import instances_from_semantic, open_ccp, open_masks
    from kseg.paths import shared_data_dir

    root = shared_data_dir()
    if name not in PEOPLE_SETS:
        raise SystemExit(f"unknown people set {name!r}: choose from {', '.join(PEOPLE_SETS)}")
    if name == "people-parsing":
        ds = open_ccp(root / name, groups="person")
    else:
        ds = open_masks(root / name, class_names=("background", "person"), binary=True)
    _, val = ds.split(0.1, 0)
    inst = instances_from_semantic(val, 1, min_area=256, per="region" if name == "people-masks" else "image")
    n = min(limit or len(inst), len(inst))
    inst = _subset(inst, list(range(n)))
    inst.image_ids = list(range(1, n + 1))
    inst.coco_category_ids = (1,)
    samples = []
    for i in range(n):
        t = inst.load(i)[1]
        samples.append({"image_id": i + 1, "masks": t["masks"], "category_ids": t["category_ids"]})
    gt = write_coco_gt(out / f"gt_{name}-val_{n}.json", samples, ("background", "person"))
    inst.name = f"{name}-val"
    return gt, inst


def cmd_people_val(args):
    """The held-out instances of each people set named (people-masks by default) as a COCO annotation
    file plus its images, so that any instance model (a shipped .tflite included) is scored on them by
    ``kseg evaluate``."""
    import numpy as np
    from PIL import Image

    for name in args.people_sets or ["people-masks"]:
        out = Path(args.out_dir or ROOT / "runs") / f"{name}-val"
        out.mkdir(parents=True, exist_ok=True)
        gt, inst = people_val(out, args.limit, name)
        for i in range(len(inst)):
            image = inst.load(i)[0]
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(out / f"{i + 1}.png")
        print(f"{len(inst)} images and {gt}; score a model with:\n"
              f"  kseg evaluate exports/person-instances.tflite {gt} --images {out} --categories person")


def cmd_eval(args):
    cfg = load_cfg(args.config, args.set)
    out = run_dir(args, cfg)
    _, vals = coco_train_and_val(cfg)
    for name in dict.fromkeys((["people-masks"] if args.people_masks else []) + args.people_sets):
        vals = vals + [people_val(out, args.limit, name)]
    if not args.rpn_post_nms_test:
        model = build(cfg, pretrained=False)
        model.load_weights(out / "last.weights.h5")
        report, all_res = _evaluate(model, vals, out, args.limit)
        (out / "eval.json").write_text(json.dumps(report, indent=1))
        (out / "results_coco.json").write_text(json.dumps(all_res))
        return
    # AP against the test-time proposal count (the same weights; the RPN keeps fewer boxes after NMS)
    study = {}
    for n in args.rpn_post_nms_test:
        c = json.loads(json.dumps(cfg))
        c["model"]["rpn_post_nms_test"] = int(n)
        c["model"]["rpn_pre_nms_test"] = max(int(c["model"].get("rpn_pre_nms_test", 1000)), 2 * int(n))
        model = build(c, pretrained=False)
        model.load_weights(out / "last.weights.h5")
        print(f"rpn_post_nms_test {n} (pre-NMS {c['model']['rpn_pre_nms_test']})", flush=True)
        study[str(n)], _ = _evaluate(model, vals, out, args.limit)
    (out / "eval_proposals.json").write_text(json.dumps(study, indent=1))


def cmd_export(args):
    import numpy as np

    from kseg.export_instances import calibration_images, export_tflite, float_ops, parity
    from kseg.runtime import TFLiteMaskRCNN

    cfg, out, model, images = _trained_and_val_images(args)
    report = {}
    for q in args.quantization:
        calib = calibration_images(cfg, 32, cfg["data"]["size"]) if q == "int8" else None
        info = export_tflite(model, out / f"{cfg['name']}_{q}.tflite", quantization=q, representative_images=calib)
        if q == "int8":
            info["float_ops"] = float_ops(info["path"])
        runner = TFLiteMaskRCNN(info["path"], num_threads=2)
        info["parity"] = parity(model, runner, images)
        info["tflite_latency_s_2_threads"] = runner.latency(runs=5)
        report[q] = info
        print(json.dumps(info, indent=1), flush=True)
    t = []
    warm = images[:5]
    for im in warm + warm:
        t0 = time.perf_counter()
        model.predict_on_batch(np.asarray(im, np.float32)[None])
        t.append(time.perf_counter() - t0)
    report["keras_latency_s"] = float(np.median(t[len(warm):])) if warm else None
    old = json.loads((out / "export.json").read_text()) if (out / "export.json").is_file() else {}
    (out / "export.json").write_text(json.dumps({**old, **report}, indent=1))
    if warm:
        print(f"keras predict_on_batch median {report['keras_latency_s']:.2f} s", flush=True)


def _fake_quantize(model, part):
    """Round the Conv/Dense kernels of one part of ``model`` to int8 per output channel (symmetric,
    as the converter's dynamic-range quantization stores them); activations stay float."""
    import numpy as np

    parts = {"backbone": [model.backbone], "box_head": [model.box_head], "mask_head": [model.mask_head],
             "encoder": [model.backbone], "fpn_rpn": [model.backbone]}
    subs = parts.get(part, [model.backbone, model.box_head, model.mask_head])
    for sub in subs:
        for layer in sub.layers:
            if not hasattr(layer, "kernel") or layer.kernel is None:
                continue
            head = layer.name.startswith(("fpn_", "rpn_"))
            if (part == "encoder" and head) or (part == "fpn_rpn" and not head):
                continue
            w = np.asarray(layer.kernel)
            # output channels: last axis (Conv2D/Dense/Depthwise multiplier), Conv2DTranspose: axis -2
            axis = w.ndim - 2 if layer.__class__.__name__ == "Conv2DTranspose" else w.ndim - 1
            if layer.__class__.__name__ == "DepthwiseConv2D":
                axis = w.ndim - 2
            red = tuple(i for i in range(w.ndim) if i != axis)
            scale = np.maximum(np.abs(w).max(axis=red, keepdims=True), 1e-12) / 127.0
            layer.kernel.assign(np.round(w / scale).clip(-127, 127) * scale)


def _trained_and_val_images(args):
    """The config, run folder, trained model and the first ``args.parity_images`` COCO val images
    (letterboxed to the model's size) that the quantization and parity studies compare on."""
    from kseg.data.instances import letterbox
    from kseg.data.readers import read_image

    cfg = load_cfg(args.config, args.set)
    out = run_dir(args, cfg)
    model = build(cfg, pretrained=False)
    model.load_weights(out / "last.weights.h5")
    _, vals = coco_train_and_val(cfg)
    paths = [p for _, va in vals for p in va.image_paths][: args.parity_images]
    return cfg, out, model, [letterbox(read_image(p), cfg["data"]["size"])[0] for p in paths]


def cmd_quant(args):
    """Which part of the network makes int8 weights change the detections (Keras simulation)."""
    from kseg.export_instances import parity

    cfg, out, model, images = _trained_and_val_images(args)

    class KerasRunner:
        def __init__(self, m):
            self.m = m

        def detect(self, image):
            import numpy as np

            return {k: np.asarray(v)[0] for k, v in self.m.predict_on_batch(np.asarray(image, np.float32)[None]).items()}

    report = {}
    for part in args.parts:
        q = build(cfg, pretrained=False)
        q.load_weights(out / "last.weights.h5")
        _fake_quantize(q, part)
        report[part] = parity(model, KerasRunner(q), images)
        print(part, json.dumps(report[part]), flush=True)
    old = json.loads((out / "quant_study.json").read_text()) if (out / "quant_study.json").is_file() else {}
    (out / "quant_study.json").write_text(json.dumps({**old, **report}, indent=1))


def cmd_parity(args):
    """Parity (all detections and score >= 0.5) and COCO mask AP of each exported variant."""
    from kseg.evaluate_instances import evaluate_instances
    from kseg.export_instances import parity
    from kseg.runtime import TFLiteMaskRCNN, load_instance_model

    cfg, out, model, images = _trained_and_val_images(args)
    report = {}
    for q in args.quantization:
        f = out / f"{cfg['name']}_{q}.tflite"
        runner = TFLiteMaskRCNN(f, num_threads=2)
        r = {"size_mb": round(f.stat().st_size / 2**20, 2)}
        for ms in (0.0, 0.5):
            r[f"parity_score_{ms}"] = parity(model, runner, images, min_score=ms)
        m = load_instance_model(f)
        m.class_names = ("background", "person")
        for sub in ("coco-tiny", "coco-mini"):
            e = evaluate_instances(m, f"coco/{sub}", "val", categories=("person",))
            r[f"{sub}_val"] = {"mask_AP": e["segm"]["AP"], "box_AP": e["bbox"]["AP"], "images": e["images"]}
        report[q] = r
        print(q, json.dumps(r), flush=True)
    (out / "parity_study.json").write_text(json.dumps(report, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("train", "eval", "export", "quant", "parity", "people-val", "people-masks-val"),
                   help="(the --keep frame rate: benchmarks/app_fps.py --keep largest)")
    p.add_argument("--config", default=str(ROOT / "configs" / "mask_rcnn_person_lite0.yaml"))
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values (YAML), e.g. train.epochs=2 data.composites.count=20")
    p.add_argument("--out-dir", default=None, help="parent of the run folder (default $KSEG_RUNS or runs/)")
    p.add_argument("--minutes", type=float, default=None, help="train: stop after the epoch that passes this")
    p.add_argument("--epochs", type=int, default=None, help="train: stop after this epoch (default train.epochs; "
                   "the learning-rate schedule still spans train.epochs)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="train: override train.steps_per_epoch")
    p.add_argument("--limit", type=int, default=None, help="eval: first N val images of each subset")
    p.add_argument("--people-masks", action="store_true",
                   help="eval: also the held-out people-masks images (one instance per connected person region)")
    p.add_argument("--people-sets", nargs="+", default=[], choices=PEOPLE_SETS,
                   help="eval: also these held-out people sets as instances; people-val: the sets to write "
                        "(default people-masks; portraits, people-parsing: one person per photo)")
    p.add_argument("--rpn-post-nms-test", nargs="+", type=int, default=None,
                   help="eval: AP at each of these test-time proposal counts (eval_proposals.json)")
    p.add_argument("--quantization", nargs="+", default=["float32", "dynamic"],
                   help="export: one file each (float32, float16, dynamic, int8)")
    p.add_argument("--parity-images", type=int, default=20, help="export: val images for Keras/TFLite parity")
    p.add_argument("--parts", nargs="+", default=["backbone", "box_head", "mask_head", "all"],
                   help="quant: parts whose weights are rounded to int8 (backbone, encoder, fpn_rpn, box_head, mask_head, all)")
    args = p.parse_args(argv)
    if args.command == "people-masks-val":
        args.people_sets = ["people-masks"]
    {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "quant": cmd_quant, "parity": cmd_parity,
     "people-val": cmd_people_val, "people-masks-val": cmd_people_val}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
