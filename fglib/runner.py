"""Experiment runner: an ablation grid x seeds -> a pandas DataFrame, with a results cache.

Each run is stored under <cache>/runs/<config key>/result.json. A re-run of an identical config
reads that file instead of training (so chapters share runs: MC-Loss's "CE only" row is the
baseline chapter's run); any change to the config changes the key and trains anew. A run that was
interrupted resumes from its checkpoint in the same folder.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from fglib.config import RunConfig
from fglib.train import RunResult, load_data, train


def runs_dir() -> Path:
    """<cache>/runs, where <cache> is $FGLIB_DATA_CACHE or data/cache (shared with the benchmark)."""
    from fglib.data.synth import default_cache_dir

    return default_cache_dir() / "runs"


def run(cfg: RunConfig, data=None, progress: bool | None = None, cache: bool = True) -> RunResult:
    """Train cfg once, or return the stored result of an identical config."""
    folder = runs_dir() / cfg.key()
    stored = folder / "result.json"
    if cache and stored.exists():
        return RunResult(**json.loads(stored.read_text()))
    result = train(cfg, run_dir=folder if cache else None, data=data, progress=progress)
    if cache:
        tmp = stored.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result)))
        tmp.replace(stored)
        (folder / "checkpoint.pt").unlink(missing_ok=True)   # keep only final weights
        import torch

        torch.save(result.model.state_dict(), folder / "model.pt")
    return result


def load_model(cfg: RunConfig):
    """The trained model of a cached run (for class activation maps and other pictures)."""
    import torch

    from fglib.train import build

    result = run(cfg)
    train_set, _ = load_data(cfg)
    model = build(cfg, train_set.num_classes)
    model.load_state_dict(torch.load(runs_dir() / cfg.key() / "model.pt", weights_only=True))
    return model.eval(), result


def grid(base: RunConfig, variants: Mapping[str, Mapping[str, Any]], seeds: Iterable[int],
         progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every variant (name -> dotted overrides) with every seed.

    Returns (runs, summary): one row per run with its metrics, and per variant the mean, std and
    number of runs of each metric.
    """
    data_cache: dict[str, Any] = {}
    rows = []
    for name, overrides in variants.items():
        for seed in seeds:
            cfg = base.override(**{**overrides, "train.seed": seed})
            dkey = json.dumps(asdict(cfg.data), sort_keys=True)
            if dkey not in data_cache and not (runs_dir() / cfg.key() / "result.json").exists():
                data_cache[dkey] = load_data(cfg)
            result = run(cfg, data=data_cache.get(dkey), progress=progress)
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
