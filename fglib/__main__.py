"""A thin command line over fglib (the library itself takes dataclasses, never argv).

    python -m fglib train --method baseline --dataset synth --profile book --seed 0
    torchrun --nproc_per_node 2 -m fglib train --method baseline --epochs 1
    python -m fglib data prepare cub --root ~/data/CUB_200_2011
    python -m fglib data synth            # generate (or find) the book's benchmark and print its path
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def train_command(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from fglib.config import PROFILES
    from fglib.train import train

    overrides = {"model.method": args.method, "data.name": args.dataset}
    for opt, key in [("seed", "train.seed"), ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                     ("lr", "train.lr"), ("root", "data.root"), ("image_size", "data.image_size"),
                     ("device", "train.device")]:
        if getattr(args, opt) is not None:
            overrides[key] = getattr(args, opt)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects section.field=value, got {item!r}")
        overrides[key] = _parse_value(value)
    cfg = PROFILES[args.profile]().override(**overrides)

    import fglib

    fglib.setup(cfg.train.seed, plots=False)        # torch threads from FGLIB_THREADS
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:                                   # launched by torchrun
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo")
    try:
        result = train(cfg, run_dir=args.run_dir, progress=not args.quiet)
    finally:
        if world > 1:
            dist.barrier()
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        summary = {"key": result.key, "metrics": {k: v for k, v in result.metrics.items() if k != "per_class"},
                   "seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1)}
        print(json.dumps(summary, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(asdict(result)))
        if args.save_weights:
            import torch

            torch.save(result.model.state_dict(), args.save_weights)
    if world > 1:
        dist.destroy_process_group()
    return 0


def data_command(args: argparse.Namespace) -> int:
    if args.action == "synth":
        from fglib.data.synth import SynthConfig, synthetic_benchmark

        print(synthetic_benchmark(SynthConfig(image_size=args.image_size)))
        return 0
    from fglib.data import download

    return download.main(["prepare", args.name, "--root", args.root] + (["--force"] if args.force else [])) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fglib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one configuration")
    t.add_argument("--method", default="baseline")
    t.add_argument("--dataset", default="synth")
    t.add_argument("--profile", choices=["book", "paper"], default="book")
    t.add_argument("--root", help="dataset folder (real datasets)")
    t.add_argument("--seed", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--image-size", type=int)
    t.add_argument("--device")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any other setting, e.g. --set model.widths=[16,32,64] --set train.sampler=balanced")
    t.add_argument("--run-dir", help="checkpoint here after every epoch and resume from it")
    t.add_argument("--out", help="write the full result (history, metrics) as JSON")
    t.add_argument("--save-weights", help="write the final state_dict here")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=train_command)
    d = sub.add_parser("data", help="prepare datasets")
    d.add_argument("action", choices=["prepare", "synth"])
    d.add_argument("name", nargs="?", default="cub")
    d.add_argument("--root", default=".")
    d.add_argument("--force", action="store_true")
    d.add_argument("--image-size", type=int, default=64)
    d.set_defaults(func=data_command)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:                          # configuration errors: one sentence, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
