"""``kseg train``: a run config (and flags over it) into ``kseg.train.fit``."""

from __future__ import annotations

from kseg.cli.common import is_interrupt, quiet_tf
from kseg.errors import Interrupted, KsegError
from kseg.paths import check_writable


def add(sub) -> None:
    """Add ``kseg train``."""
    p = sub.add_parser(
        "train",
        help="train a model (config file and/or flags); resumes a killed run of the same name",
        description="Train with model.fit. Writes runs/NAME/{best.keras, last.keras, history.csv, "
        "curves.png, config.yaml}. Run the same command again to resume after a kill.",
    )
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--name", help="run name (folder under --out-dir)")
    p.add_argument("--out-dir", help="where runs go (default runs/)")
    p.add_argument("--model", help="model name, e.g. unet, deeplab_v3_plus")
    p.add_argument("--encoder", help="encoder, e.g. efficientnet_lite0")
    p.add_argument("--data", help="dataset folder (with --format)")
    p.add_argument("--format", help="dataset format: masks, ccp, camvid, pets, coco, auto")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--lr", type=float)
    p.add_argument("--mixed-precision", choices=["mixed_float16", "mixed_bfloat16"],
                   help="float16 (GPUs, with loss scaling) or bfloat16 (TPUs, recent GPUs) computation, "
                   "float32 variables, logits and losses")
    p.add_argument("--strategy", choices=["mirrored", "multi_worker", "tpu"],
                   help="mirrored: this machine's GPUs (or --cpu-devices); multi_worker: the processes in "
                   "TF_CONFIG; tpu: a Cloud TPU (docs/distributed.md)")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="split the CPU into N logical devices (to try --strategy mirrored on a CPU)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="start N local worker processes on free 127.0.0.1 ports (multi_worker strategy, "
                   "output prefixed by worker); one failing stops all")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``kseg train``: flags become config overrides; returns the exit status."""
    quiet_tf()
    from kseg.config import load_config

    flags = {
        "name": args.name,
        "out_dir": args.out_dir,
        "model.name": args.model,
        "train.epochs": args.epochs,
        "data.batch_size": args.batch_size,
        "train.learning_rate": args.lr,
        "train.strategy": None if args.workers else args.strategy,
        "train.mixed_precision": args.mixed_precision,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.size:
        overrides.append(f"data.size=[{args.size[0]}, {args.size[1]}]")
    if args.encoder:
        overrides.append(f"model.kwargs.encoder={args.encoder}")
    if args.data:
        overrides.append(f"data.train=[{{path: '{args.data}', format: {args.format or 'auto'}}}]")
    if not args.config and not args.data:
        raise KsegError("kseg train needs --config FILE or --data PATH --format F")
    cfg = load_config(args.config, overrides + args.overrides)
    check_writable(cfg.run_dir, "--out-dir (out_dir in the config)")
    if args.workers:
        return _launch(args, cfg, overrides + args.overrides)
    if args.cpu_devices:
        from kseg.train import configure_cpu_devices

        configure_cpu_devices(args.cpu_devices)
    from kseg.train import fit

    try:
        fit(cfg)
    except BaseException as e:
        if not is_interrupt(e):
            raise
        from kseg.train import resume_epoch

        epoch = resume_epoch(cfg.run_dir)
        if epoch > cfg.train.epochs:
            raise Interrupted(f"all {cfg.train.epochs} epochs of {cfg.run_dir} were already done") from None
        raise Interrupted(f"run the same command to resume from epoch {epoch}") from None
    from kseg.distribute import read_tf_config

    if cfg.train.strategy != "multi_worker" or read_tf_config().chief:  # the others wrote a temporary folder
        written = [f for f in ("best.keras", "last.keras", "history.csv", "curves.png") if (cfg.run_dir / f).is_file()]
        print(f"run written to {cfg.run_dir} ({', '.join(written) or 'no checkpoint'})")
        if (cfg.run_dir / "logs").is_dir():
            print(f"curves in TensorBoard: tensorboard --logdir {cfg.run_dir / 'logs'}")
    return 0


def _launch(args, cfg, overrides) -> int:
    """``--workers N``: the same config and overrides in N local multi_worker processes."""
    if args.strategy and args.strategy != "multi_worker":
        raise KsegError(f"--workers runs the multi_worker strategy; drop --strategy {args.strategy}")
    if args.cpu_devices:
        raise KsegError("--workers starts one process per replica; drop --cpu-devices")
    from kseg.distribute import launch_local

    train_args = ["--config", str(args.config)] if args.config else []
    for item in overrides:
        train_args += ["--set", item]
    launch_local(train_args, args.workers)
    print(f"run written to {cfg.run_dir} by worker 0 of {args.workers} (best.keras, history.csv, curves.png)")
    return 0
