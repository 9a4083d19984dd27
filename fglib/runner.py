"""Experiment runner: an ablation grid x seeds -> a pandas DataFrame, with a results cache.

Every run trains on ONE torch thread, and runs go in parallel across processes (FGLIB_WORKERS,
default: the number of cores). Floating-point sums then happen in the same order on any machine,
whatever its core count, so a chapter's numbers are reproducible bit for bit on the same kind of
CPU, and the tolerances in data/expected/ only have to absorb differences between CPU kinds.

Each run is stored under <cache>/runs/<config key>/result.json. A re-run of an identical config
reads that file instead of training (so chapters share runs: MC-Loss's "CE only" row is the
baseline chapter's run); any change to the config changes the key and trains anew. A run that was
interrupted resumes from its checkpoint in the same folder.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import torch

from fglib.config import RunConfig
from fglib.train import RunResult, load_data, train


def runs_dir() -> Path:
    """<cache>/runs, where <cache> is $FGLIB_DATA_CACHE or data/cache (shared with the benchmark)."""
    from fglib.data.synth import default_cache_dir

    return default_cache_dir() / "runs"


def _single_thread_train(cfg: RunConfig, **kw) -> RunResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg, **kw)
    finally:
        torch.set_num_threads(threads)


def run(cfg: RunConfig, data=None, progress: bool | None = None, cache: bool = True) -> RunResult:
    """Train cfg once (on one thread), or return the stored result of an identical config."""
    folder = runs_dir() / cfg.key()
    stored = folder / "result.json"
    if cache and stored.exists():
        return RunResult(**json.loads(stored.read_text()))
    result = _single_thread_train(cfg, run_dir=folder if cache else None, data=data, progress=progress)
    if cache:
        tmp = stored.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result)))
        tmp.replace(stored)
        (folder / "checkpoint.pt").unlink(missing_ok=True)   # keep only final weights
        torch.save(result.model.state_dict(), folder / "model.pt")
    return result


def _cost(cfg: RunConfig) -> float:
    """A rough relative cost of a run, for scheduling: epochs x pixels x the backbone's summed widths squared."""
    return cfg.train.epochs * cfg.data.image_size ** 2 * sum(w * w for w in cfg.model.widths)


def _worker(cfg_dict: dict) -> str:
    """Entry point of a worker process: train one config into the cache."""
    cfg = RunConfig.from_dict(cfg_dict)
    run(cfg, progress=False)
    return cfg.key()


def run_many(cfgs: list[RunConfig], progress: bool | None = None, workers: int | None = None) -> list[RunResult]:
    """Run configs (cached ones are read back), in parallel worker processes of one thread each."""
    from fglib.runtime import progress_bar

    missing = list({c.key(): c for c in cfgs if not (runs_dir() / c.key() / "result.json").exists()}.values())
    missing.sort(key=_cost, reverse=True)             # longest first, so that no core idles at the end
    workers = workers or int(os.environ.get("FGLIB_WORKERS", "0")) or (os.cpu_count() or 1)
    workers = min(workers, len(missing))
    bar = progress_bar(progress if missing else False, total=len(missing), desc="runs", unit="run")
    if workers > 1:
        for c in {json.dumps(asdict(c.data), sort_keys=True): c for c in missing}.values():
            load_data(c)                              # generate and cache each dataset once, before the workers
        ctx = mp.get_context("spawn")                 # fork after torch's thread pools can deadlock
        with ctx.Pool(workers) as pool:               # workers inherit os.environ (FGLIB_DATA_CACHE...)
            for _ in pool.imap_unordered(_worker, [c.to_dict() for c in missing]):
                bar.update(1)
    else:
        data_cache: dict[str, Any] = {}
        for c in missing:
            dkey = json.dumps(asdict(c.data), sort_keys=True)
            if dkey not in data_cache:
                data_cache[dkey] = load_data(c)
            run(c, data=data_cache[dkey], progress=False)
            bar.update(1)
    bar.close()
    return [run(c) for c in cfgs]


def load_model(cfg: RunConfig):
    """The trained model of a cached run (for class activation maps and other pictures)."""
    from fglib.train import build

    result = run(cfg)
    train_set, _ = load_data(cfg)
    model = build(cfg, train_set.num_classes)
    model.load_state_dict(torch.load(runs_dir() / cfg.key() / "model.pt", weights_only=True))
    return model.eval(), result


def grid_configs(base: RunConfig, variants: Mapping[str, Mapping[str, Any]], seeds: Iterable[int]) -> list[RunConfig]:
    """The configs of a grid: every variant (name -> dotted overrides) with every seed.

    Pass the configs of several grids to one run_many call to train them in one pool (no core idles
    between grids); grid() then reads them back from the cache.
    """
    return [cfg for _, _, cfg in _jobs(base, variants, seeds)]


def _jobs(base, variants, seeds):
    return [(name, seed, base.override(**{**overrides, "train.seed": seed}))
            for name, overrides in variants.items() for seed in seeds]


def grid(base: RunConfig, variants: Mapping[str, Mapping[str, Any]], seeds: Iterable[int],
         progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every variant (name -> dotted overrides) with every seed.

    Returns (runs, summary): one row per run with its metrics, and per variant the mean, std and
    number of runs of each metric.
    """
    jobs = _jobs(base, variants, seeds)
    results = run_many([cfg for _, _, cfg in jobs], progress=progress)
    rows = []
    for (name, seed, _), result in zip(jobs, results):
        m = result.metrics
        rows.append({"variant": name, "seed": seed, "key": result.key, "top1": 100 * m["top1"],
                     **({"family_top1": 100 * m["family_top1"],
                         "within_family_errors": 100 * m["within_family_errors"]}
                        if "family_top1" in m else {}),
                     "seconds": result.seconds})
    runs = pd.DataFrame(rows)
    metrics = [c for c in runs.columns if c not in ("variant", "seed", "key", "seconds")]
    summary = runs.groupby("variant", sort=False)[metrics].agg(["mean", "std", "count"])
    return runs, summary


def histories(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-step loss terms of the runs of a grid, long format: variant, seed, step, epoch, term, value."""
    frames = []
    for row in runs.itertuples():
        stored = json.loads((runs_dir() / row.key / "result.json").read_text())
        h = pd.DataFrame(stored["history"]).drop(columns=["lr"])
        h = h.melt(id_vars=["step", "epoch"], var_name="term", value_name="value")
        frames.append(h.assign(variant=row.variant, seed=row.seed))
    return pd.concat(frames, ignore_index=True)


def summarise(summary: pd.DataFrame, metrics: Iterable[str] | None = None, digits: int = 1) -> pd.DataFrame:
    """'mean ± std (n)' strings per variant and metric: the form every table of the book uses."""
    metrics = list(metrics or dict.fromkeys(m for m, _ in summary.columns))
    out = pd.DataFrame(index=summary.index)
    for m in metrics:
        mean, std, n = summary[(m, "mean")], summary[(m, "std")], summary[(m, "count")]
        out[m] = [f"{a:.{digits}f} ± {s:.{digits}f} ({int(c)})" if c > 1 else f"{a:.{digits}f} (1)"
                  for a, s, c in zip(mean, std, n)]
    return out
