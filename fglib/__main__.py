"""A thin command line over fglib (the library itself takes dataclasses, never argv).

    python -m fglib train --method baseline --dataset synth --profile book --seed 0
    torchrun --nproc_per_node 2 -m fglib train --method baseline --epochs 1
    python -m fglib data prepare cub --root ~/data/CUB_200_2011
    python -m fglib data synth            # generate (or find) the book's benchmark and print its path
    python -m fglib store status          # the results store: chapters, runs, stale runs, size
    python -m fglib store verify          # re-train CI's sample of stored runs and compare
    python -m fglib store migrate --from OLD   # after a refactor: prove the training code unchanged
                                          # against commit OLD, then carry the stored runs over
    python -m fglib reproduce mcloss      # re-train a chapter's runs (or `all`) and compare with the store
    python -m fglib record mcloss         # after an intended change: write the chapter's runs into the store
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

import fglib
from fglib.core.config import PROFILES, RunConfig, parse_setting
from fglib.data import download
from fglib.data.cub import CorruptImageError
from fglib.data.folder import folder_data, folder_dataset, index_folder
from fglib.data.download import ArchiveError, DownloadError, ManualDownloadError
from fglib.data.synth import SynthConfig, synthetic_benchmark
from fglib.experiments import measured, store
from fglib.experiments.migrate import migrate
from fglib.experiments.pretraining import pretraining_config
from fglib.experiments.recipes import recipe
from fglib.experiments.record import book_chapters, record
from fglib.experiments.runner import cache_folder, stored_record, train_missing, train_run, why_not_stored
from fglib.experiments.store import StoreError
from fglib.experiments.verify import (commit_id, extra_from_env, parse_shard, reproduce, sample,
                                      verify)
from fglib.models.backbones import PretrainedWeightsError


def train_command(args: argparse.Namespace) -> int:
    if args.recipe:                                 # a paper's recipe; --set and options on top
        r = recipe(args.recipe)
        base = r.config("cub" if args.dataset in (None, "folder") else args.dataset, args.root)
        overrides = {}
        if args.method not in (None, "baseline", r.settings["model.method"]):
            raise ValueError(f"the {r.name} recipe trains {r.settings['model.method']}; "
                             "--method baseline trains its baseline on the same settings")
        if args.method == "baseline":               # the recipe's baseline: same batches, no terms
            overrides.update({"model.method": "baseline", "model.options": {}})
    else:
        r, base = None, PROFILES[args.profile]()
        overrides = {"model.method": args.method or "baseline", "data.name": args.dataset or "synth"}
    if args.dataset == "folder":                    # your own images: checked before anything runs
        if args.root is None:
            raise ValueError("--dataset folder needs --root, the folder with one sub-folder of "
                             "images per class")
        index_folder(args.root, progress=not args.quiet)
        overrides.update(folder_data(args.root))
        args.root = None
    for opt, key in [("seed", "train.seed"), ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                     ("lr", "train.lr"), ("root", "data.root"), ("image_size", "data.image_size"),
                     ("device", "train.device")]:
        if getattr(args, opt) is not None:
            overrides[key] = getattr(args, opt)
    for item in args.set:                           # true/false, JSON, or text (see parse_setting)
        key, value = parse_setting(item)
        overrides[key] = value
    cfg = base.override(**overrides)
    if cfg.data.name == "folder" and not cfg.data.in_memory:    # files: the folder's CUB index
        index = folder_dataset(cfg.data.image_size, cfg.data.synth)
        cfg = cfg.override(**{"data.name": "cub", "data.root": str(index), "data.synth": {}})

    fglib.setup(cfg.train.seed, plots=False)        # torch threads from FGLIB_THREADS
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:                                   # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo")
    try:
        result = train_run(cfg, run_dir=args.run_dir, progress=not args.quiet)
    finally:
        if world > 1:
            dist.barrier()
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        summary = {"key": result.key, "metrics": {k: v for k, v in result.metrics.items() if k != "per_class"},
                   "seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1)}
        print(json.dumps(summary, indent=2))
        if r is not None and cfg.data.name == "cub":
            print(f"the paper's number: {r.where()}")
        if args.out:
            Path(args.out).write_text(json.dumps(asdict(result)))
        if args.save_weights:
            torch.save(result.model.state_dict(), args.save_weights)
    if world > 1:
        dist.destroy_process_group()
    return 0


def data_command(args: argparse.Namespace) -> int:
    if args.action == "synth":
        print(synthetic_benchmark(SynthConfig(image_size=args.image_size)))
        return 0
    return download.main(["prepare", args.name, "--root", args.root] + (["--force"] if args.force else [])) or 0


def _chapters(name: str) -> list[str]:
    if name == "all":
        return [ch for ch in book_chapters() if ch in store.indexed_chapters() and store.read_index(ch)]
    return [name]


def record_command(args: argparse.Namespace) -> int:
    for ch in (book_chapters() if args.chapter == "all" else [args.chapter]):
        record(ch)
    return 0


def reproduce_command(args: argparse.Namespace) -> int:
    for ch in _chapters(args.chapter):
        if not store.read_index(ch):
            print(f"{ch}: the chapter has no training runs")
            continue
        if args.shard and args.merge:
            raise ValueError("--shard trains one share and --merge compares them all: give one")
        shard = parse_shard(args.shard) if args.shard else None
        table = reproduce(ch, progress=not args.quiet, shard=shard, merge=args.merge)
        if table is None:
            print(f"{ch}: share {shard[0]} of {shard[1]} re-trained; when every share is done, "
                  f"`python -m fglib reproduce {ch} --merge` compares them with the store")
            continue
        cpu = table.attrs["cpu"]
        print(f"\n{ch}: top-1 (%) stored vs reproduced on {cpu['cpu']} ({cpu['torch_capability']}, "
              f"oneDNN ISA {cpu['onednn_max_isa']}, kind {cpu['id']}); "
              + ("same CPU kind as the recording: runs should be identical" if table.attrs["exact"]
                 else "another CPU kind than the recording: runs differ like seeds, means should agree"))
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(table.to_string(index=False))
        bad = table[table["within seed noise"] != "yes"]
        if len(bad):
            print(f"{len(bad)} variant(s) moved beyond seed noise: {', '.join(map(str, bad.variant))}")
    return 0


def store_command(args: argparse.Namespace) -> int:
    if args.action == "status":

        stale_total = 0
        for ch in store.indexed_chapters():
            runs = store.read_index(ch)
            stale = [r for r in runs
                     if stored_record(RunConfig.from_dict(store.read_record(store.run_path(r["key"]))["config"]))
                     is None]
            evidence = store.read_evidence_index(ch)
            stale_ev = []
            for e in evidence:
                try:
                    m = measured.from_record(measured.read(measured.stored_path(e["file"]), ch))
                except measured.OutdatedEvidenceError as err:         # its function moved or is gone
                    stale_ev.append((e["file"], str(err)))
                    continue
                if measured.lookup(m)[1] != "store":
                    stale_ev.append((e["file"], measured.why_not_stored(m)))
            stale_total += len(stale) + len(stale_ev)
            print(f"{ch:>12}: {len(runs):3d} runs, {sum(r['weights'] for r in runs):2d} with weights, "
                  f"{len(stale)} stale; {len(evidence):2d} measurements, {len(stale_ev)} stale"
                  + (f" -> make record CH={ch}" if stale or stale_ev else ""))
            for r in stale:
                cfg = RunConfig.from_dict(store.read_record(store.run_path(r["key"]))["config"])
                print(f"{'':>14}{r['key']} ({r['variant']}, seed {r['seed']}): {why_not_stored(cfg)}")
            for file, why in stale_ev:
                print(f"{'':>14}{file}: {why}")
        ev_bytes = store.size_bytes(store.evidence_dir()) if store.evidence_dir().exists() else 0
        print(f"store {store.store_dir()}: {store.size_bytes() / 1e6:.2f} MB in "
              f"{sum(1 for _ in store.store_dir().rglob('*') if _.is_file())} files "
              f"({ev_bytes / 1e6:.2f} MB of measurements)")
        return 1 if stale_total else 0
    if args.action == "migrate":
        if not args.old:
            raise ValueError("store migrate needs --from OLD, the commit the store was recorded with")
        verdicts = migrate(args.old, dry_run=args.dry_run, progress=not args.quiet)
        table = pd.DataFrame([{"config": v.key, "method": v.method, "runs": len(v.runs), "steps": v.steps,
                               "carried over": "no (dry run)" if args.dry_run and v.accepted
                               else "yes" if v.accepted else "NO", "why": v.why} for v in verdicts])
        with pd.option_context("display.width", 250, "display.max_colwidth", 90, "display.max_rows", 500):
            print(table.to_string(index=False) if len(table) else "nothing to migrate")
        return 0 if all(v.accepted for v in verdicts) else 1
    entries = sample(extra=[*extra_from_env(), *args.keys])
    table = verify(entries, progress=not args.quiet)
    evidence = measured.verify(measured.sample(store.indexed_chapters(), commit_id(), None if args.all else measured.SAMPLE_BUDGET_SECONDS))
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(table.drop(columns=["key"]).to_string(index=False))
        print(evidence.to_string(index=False))
    return 0 if table.ok.all() and evidence.ok.all() else 1


def pretrain_command(args) -> int:
    """Train the pretraining run of a small ResNet into the local run cache (the store keeps it once a
    chapter that uses it is recorded)."""

    shape = dict(parse_setting(item) for item in args.set)
    unknown = set(shape) - {"model.widths", "model.blocks"}
    if unknown:
        raise ValueError(f"pretrain takes only model.widths and model.blocks, not {sorted(unknown)}")
    cfg = pretraining_config(shape.get("model.widths", (16, 32, 64, 128)), shape.get("model.blocks", (1, 1, 1, 1)))
    train_missing([cfg], progress=not args.quiet, workers=1)
    print(f"pretraining run {cfg.key()}: {cache_folder(cfg) / 'model.pt'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fglib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one configuration")
    t.add_argument("--method", default=None,
                   help="a method of fglib.models.MODELS (default baseline); with --recipe, "
                        "baseline trains the recipe's baseline")
    t.add_argument("--recipe", help="a paper's CUB recipe (fglib.experiments.recipes): "
                                    "apinet, mamc, cin, rra or mcloss; --dataset cub by default")
    t.add_argument("--dataset", default=None,
                   help="synth (the book's benchmark, default), cub, nabirds, cars, aircraft, dogs, "
                        "flowers, or folder: your own images, one sub-folder per class, in --root")
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
    pt = sub.add_parser("pretrain", help="train the book's pretraining run (what model.pretrained=true loads)")
    pt.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="model.widths / model.blocks of another small ResNet, e.g. --set model.widths=[8,16]")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.set_defaults(func=pretrain_command)
    d = sub.add_parser("data", help="prepare datasets")
    d.add_argument("action", choices=["prepare", "synth"])
    d.add_argument("name", nargs="?", default="cub")
    d.add_argument("--root", default=".")
    d.add_argument("--force", action="store_true")
    d.add_argument("--image-size", type=int, default=64)
    d.set_defaults(func=data_command)
    r = sub.add_parser("record", help="write a chapter's runs into the results store (never under CI)")
    r.add_argument("chapter", help="a chapter name (book/<name>.md) or 'all'")
    r.set_defaults(func=record_command)
    rp = sub.add_parser("reproduce", help="re-train a chapter's stored runs and compare (never writes the store)")
    rp.add_argument("chapter", help="a chapter name or 'all'")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.add_argument("--shard", help="i/n: re-train share i of n of the runs only (a job array)")
    rp.add_argument("--merge", action="store_true",
                    help="train nothing: compare once every share's runs are there")
    rp.set_defaults(func=reproduce_command)
    st = sub.add_parser("store", help="inspect, verify or (after a refactor) migrate the results store")
    st.add_argument("action", choices=["status", "verify", "migrate"])
    st.add_argument("keys", nargs="*", help="verify: run keys to add to the sample")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.add_argument("--all", action="store_true",
                    help="verify: re-compute every stored measurement, not only CI's sample")
    st.add_argument("--from", dest="old", metavar="OLD",
                    help="migrate: the commit whose code the store was recorded with")
    st.add_argument("--dry-run", action="store_true", help="migrate: probe and report, write nothing")
    st.set_defaults(func=store_command)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a problem with the input, the data or the store, not a bug.

    ValueError covers the configuration errors (ConfigError), StoreError the stale runs.
    """

    return (ValueError, FileNotFoundError, StoreError, DownloadError, ManualDownloadError,
            ArchiveError, CorruptImageError, PretrainedWeightsError)


def main(argv: list[str] | None = None) -> int:
    """Run a command; an expected error prints `error: <message>` and returns 2, an interrupt returns 130,
    and anything else (a bug) keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, _expected_errors()):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
