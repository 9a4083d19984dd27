"""Experiment runner: an ablation grid x seeds -> a pandas DataFrame, read from the results store.

A run is looked up, in order, in
1. the results store (data/runs, committed): the chapters' runs, recorded with `make record`;
2. the local cache (data/cache/runs/<key>-<fingerprint>/): runs trained on this machine;
and only then trained, into the local cache, with a line that says so. Both lookups require the
config's key *and* the code fingerprint of its method (fglib.experiments.provenance) to match, so an edited model
never returns old numbers. Under FGLIB_STORE_ONLY=1 (`make test`) nothing is trained: a missing or
stale run is an error that lists the runs and the command that records them.

Every run trains on ONE torch thread, and runs go in parallel across processes (FGLIB_WORKERS,
default: the number of cores), so results do not depend on the number of cores: a run is
reproducible bit for bit on the same kind of CPU (fglib.core.hardware.cpu_kind). A run that was
interrupted resumes from its checkpoint in its cache folder.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import textwrap
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from scipy import stats

from fglib.core.config import RunConfig
from fglib.core.hardware import cpu_kind
from fglib.core.paths import cache_dir
from fglib.core import verdict
from fglib.core.runtime import current_chapter, progress_bar
from fglib.engine.train import RunResult, build, load_data, train
from fglib.experiments import store
from fglib.experiments.pretraining import PretrainedWeightsMissing, pretraining_config
from fglib.experiments.provenance import (code_fingerprint, edited_since_import, module_hash,
                                          module_hashes, starts_from_weights)
from fglib.experiments.store import runs_dir
from fglib.experiments.usage import note_usage
from fglib.models import RunFiles


# -- the files a run starts from, and its fingerprint --------------------------------------------------

def pretrained_weights_file(widths: tuple[int, ...], blocks: tuple[int, ...]) -> Path:
    """The weights of the pretraining run recorded with the current code: from the results store,
    else from the local run cache; PretrainedWeightsMissing when neither holds a fresh one."""
    cfg = pretraining_config(widths, blocks)
    record, where = lookup(cfg)
    path = store.weights_path(cfg.key()) if where == "store" else cache_folder(cfg) / "model.pt"
    if record is not None and path.exists():
        return path
    why = ("is stale in the results store (recorded with other code)" if store.run_path(cfg.key()).exists()
           else "is not in the results store")
    raise PretrainedWeightsMissing(
        f"model.pretrained=true needs the book's pre-trained small_resnet (widths {tuple(widths)}, "
        f"blocks {tuple(blocks)}): the weights of pretraining run {cfg.key()}, which {why} "
        f"nor in the local cache. Train it (about 8 minutes on one CPU core) with "
        f"`python -m fglib pretrain{_cli_shape(widths, blocks)}`, or set model.pretrained=false")


def _cli_shape(widths, blocks) -> str:
    if tuple(widths) == (16, 32, 64, 128) and tuple(blocks) == (1, 1, 1, 1):
        return ""
    as_json = lambda v: json.dumps(list(v), separators=(",", ":"))        # no spaces: one argument
    return f" --set 'model.widths={as_json(widths)}' --set 'model.blocks={as_json(blocks)}'"


def initial_weights(cfg: RunConfig) -> Path | None:
    """The file cfg's small_resnet starts from when model.pretrained (the book's pretraining run's
    weights), else None; None too while that run is not trained yet (its fingerprint then says
    "missing", so nothing trained without it can pass for trained with it)."""
    m = cfg.model
    if not starts_from_weights(cfg) or m.weights_path is not None:
        return None
    try:
        return pretrained_weights_file(m.widths, m.blocks)
    except PretrainedWeightsMissing:
        return None


def run_files(cfg: RunConfig) -> RunFiles:
    """The saved weights cfg's run starts from, for the engine (fglib.engine.train.train(files=)):
    the pretraining run's for model.pretrained (PretrainedWeightsMissing when it is not there), the
    weights of run model.options["cam_run"] for RRA's proposal network."""
    m = cfg.model
    backbone = None
    if m.backbone == "small_resnet" and m.pretrained and m.weights_path is None:
        backbone = pretrained_weights_file(m.widths, m.blocks)
    cam_run = (m.options or {}).get("cam_run") if isinstance(m.options, dict) else None
    return RunFiles(backbone=backbone, proposals=store.weights_of(cam_run) if cam_run else None)


def run_fingerprint(cfg: RunConfig) -> str:
    """The code fingerprint of cfg's run under the current code (fglib.experiments.provenance), with
    the weights it starts from."""
    return code_fingerprint(cfg, initial_weights(cfg))


def run_modules(cfg: RunConfig) -> dict[str, str]:
    """{module: hash} behind `run_fingerprint(cfg)`."""
    return module_hashes(cfg, initial_weights(cfg))


def cache_folder(cfg: RunConfig) -> Path:
    """The local cache folder of cfg under the current code: <cache>/runs/<key>-<fingerprint>."""
    return runs_dir() / f"{cfg.key()}-{run_fingerprint(cfg)}"


def fresh_model(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """cfg's untrained model as the engine builds it, with the files it starts from (run_files)."""
    return build(cfg, num_classes, run_files(cfg))


def train_run(cfg: RunConfig, **kw) -> RunResult:
    """fglib.engine.train.train(cfg, **kw) with the files the run starts from (run_files)."""
    return train(cfg, files=run_files(cfg), **kw)


def _single_thread_train(cfg: RunConfig, **kw) -> RunResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_run(cfg, **kw)
    finally:
        torch.set_num_threads(threads)


def provenance() -> dict[str, Any]:
    """Where and when a run was trained (its precision is added from the run itself)."""
    kind = cpu_kind()
    return {"cpu": kind["cpu"], "isa_flags": kind["isa_flags"], "torch_capability": kind["torch_capability"],
            "onednn_max_isa": kind["onednn_max_isa"], "torch": kind["torch"], "cpu_kind": kind["id"],
            "threads": 1, "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def train_into(folder: Path, cfg: RunConfig, data=None, progress: bool | None = False,
               fingerprint: str | None = None) -> dict[str, Any]:
    """Train cfg on one thread into `folder` (result.json + float16 model.pt), resuming a checkpoint.

    The record is stamped with the fingerprint of the code this process runs, taken before training;
    training is refused when fglib's source changed on disk after this process imported it (the
    fingerprint would describe other code), or differs from `fingerprint`, the one the caller expects.
    """
    method = cfg.model.method
    edited = edited_since_import(cfg)
    if edited:
        raise store.StoreError(f"fglib's source changed after this Python process imported it ({', '.join(edited)}): "
                               "restart the kernel (or the process) so that the code that trains is the code "
                               "the run's fingerprint describes")
    fp, modules = run_fingerprint(cfg), run_modules(cfg)
    if fingerprint is not None and fp != fingerprint:
        raise store.StoreError(f"run {cfg.key()} was scheduled for code {fingerprint} but this process sees {fp}: "
                               "fglib changed during the run; run the command again")
    result = _single_thread_train(cfg, run_dir=folder, data=data, progress=progress)
    record = store.make_record(result, fp, modules, provenance())
    store.save_weights(folder / "model.pt", result.model.state_dict())
    store.write_record(folder / "result.json", record)
    (folder / "checkpoint.pt").unlink(missing_ok=True)            # keep only the final weights
    return record


def stored_record(cfg: RunConfig) -> dict[str, Any] | None:
    """The store's record of cfg when it was recorded with the current code, else None."""
    path = store.run_path(cfg.key())
    if not path.exists():
        return None
    record = store.read_record(path, chapter=_chapter())
    return record if record["fingerprint"] == run_fingerprint(cfg) else None


def cached_record(cfg: RunConfig) -> dict[str, Any] | None:
    path = cache_folder(cfg) / "result.json"
    if not path.exists():
        return None
    record = store.read_record(path)
    fresh = record["fingerprint"] == run_fingerprint(cfg) and record["key"] == cfg.key()
    return record if fresh else None


def lookup(cfg: RunConfig) -> tuple[dict[str, Any] | None, str]:
    """(record, where): where is 'store', 'cache' or 'none'."""
    record = stored_record(cfg)
    if record is not None:
        return record, "store"
    record = cached_record(cfg)
    return (record, "cache") if record is not None else (None, "none")


def _chapter() -> str | None:
    return current_chapter()


def why_not_stored(cfg: RunConfig) -> str:
    """'missing from the store' or 'stale: fglib.models.mcloss changed' (for messages)."""
    path = store.run_path(cfg.key())
    if not path.exists():
        return "not in the store"
    record = store.read_record(path)
    now = run_modules(cfg)
    changed = sorted(m for m in set(now) | set(record["modules"]) if now.get(m) != record["modules"].get(m))
    if not changed:
        return "stale: recorded under another code fingerprint"
    return "stale: recorded before a change to " + ", ".join(changed)


def describe(cfg: RunConfig) -> str:
    t, m = cfg.train, cfg.model
    return f"{cfg.key()} ({m.method}, seed {t.seed})"


def ensure_trainable(cfgs: list[RunConfig]) -> None:
    """Under FGLIB_STORE_ONLY=1, raise StaleRunError listing cfgs (which the store cannot serve)."""
    if not cfgs:
        return
    if store.store_only():
        chapter = _chapter()
        lines = [f"  {describe(c)}: {why_not_stored(c)}" for c in cfgs]
        raise store.StaleRunError(
            f"{len(cfgs)} run(s) this chapter needs are not in the results store for the current code, and "
            f"FGLIB_STORE_ONLY=1 forbids training them:\n" + "\n".join(lines) +
            f"\nRecord them with `{store.RECORD_HINT.format(chapter=chapter or '<chapter>')}` (it trains them, "
            "writes data/runs/, and re-executes the chapter), then commit data/runs/ and the notebook.")
    print(f"fglib: training {len(cfgs)} run(s) the results store does not hold for this code "
          f"(local cache: {runs_dir()})", flush=True)


def result_from_record(record: dict[str, Any], source: str) -> RunResult:
    result = RunResult(key=record["key"], config=record["config"], metrics=record["metrics"],
                       history=store.history_rows(record["history"]), evals=record["evals"],
                       seconds=record["seconds"], images_per_second=record["images_per_second"],
                       precision=record["provenance"]["precision"])
    result.source, result.fingerprint, result.provenance = source, record["fingerprint"], record["provenance"]
    return result


def run(cfg: RunConfig, data=None, progress: bool | None = None, cache: bool = True) -> RunResult:
    """The result of cfg: from the store, else the local cache, else trained (on one thread) and cached."""
    note_usage(cfg)
    record, where = lookup(cfg)
    if record is not None:
        return result_from_record(record, where)
    ensure_trainable([cfg])
    if not cache:                                                   # train without touching the cache
        return _single_thread_train(cfg, data=data, progress=progress)
    ensure_fresh_data_cache()
    return result_from_record(train_into(cache_folder(cfg), cfg, data=data, progress=progress), "trained")


def ensure_fresh_data_cache() -> None:
    """Regenerate the cached benchmark when the code that renders or decodes it changed.

    The generated images are cached by their config alone; their code is part of every run's
    fingerprint, so a changed generator must not train on old images. A marker file in the cache
    remembers the data modules' hashes; when they differ, the generated datasets are removed.
    """
    decoding = ("fglib.data.memory", "fglib.data.cub")
    generated = {"synth-*": ("data-code.json", ("fglib.data.synth", *decoding)),
                 "pretrain-*": ("pretrain-code.json", ("fglib.data.pretrainset", "fglib.data.synth", *decoding))}
    for pattern, (name, mods) in generated.items():
        now = {m: module_hash(m) for m in mods}
        marker = cache_dir() / name
        if (marker.exists() or pattern != "synth-*") and (not marker.exists() or json.loads(marker.read_text()) != now):
            for folder in cache_dir().glob(pattern):   # a missing pretraining marker: made by older code
                print(f"fglib: the data code changed since {folder.name} was generated; regenerating it", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
        if not marker.exists() or json.loads(marker.read_text()) != now:
            store.write_text_atomic(marker, json.dumps(now))


def _cost(cfg: RunConfig) -> float:
    """A rough relative cost of a run, for scheduling: epochs x pixels x the backbone's summed widths squared."""
    return cfg.train.epochs * cfg.data.image_size ** 2 * sum(w * w for w in cfg.model.widths)


def run_many(cfgs: list[RunConfig], progress: bool | None = None, workers: int | None = None) -> list[RunResult]:
    """Results of cfgs: stored and cached ones are read back, the others trained in parallel processes."""
    missing = list({c.key(): c for c in cfgs if lookup(c)[1] == "none"}.values())
    ensure_trainable(missing)
    train_missing(missing, progress=progress, workers=workers)
    return [run(c) for c in cfgs]


def train_missing(cfgs: list[RunConfig], folder_of=cache_folder, progress: bool | None = None,
                  workers: int | None = None) -> None:
    """Train cfgs into folder_of(cfg) in FGLIB_WORKERS processes of one thread (a bar with an ETA)."""
    todo = [c for c in cfgs if not (folder_of(c) / "result.json").exists()]
    todo.sort(key=_cost, reverse=True)                # longest first, so that no core idles at the end
    if todo:
        ensure_fresh_data_cache()
    workers = workers or int(os.environ.get("FGLIB_WORKERS", "0")) or (os.cpu_count() or 1)
    workers = min(workers, len(todo))
    bar = progress_bar(progress if todo else False, total=len(todo), desc="runs", unit="run")
    if workers > 1:
        for c in {json.dumps(asdict(c.data), sort_keys=True): c for c in todo}.values():
            load_data(c)                              # generate and cache each dataset once, before the workers
        ctx = mp.get_context("spawn")                 # fork after torch's thread pools can deadlock
        with ctx.Pool(workers) as pool:               # workers inherit os.environ (FGLIB_DATA_CACHE...)
            jobs = [(c.to_dict(), str(folder_of(c)), run_fingerprint(c)) for c in todo]
            for _ in pool.imap_unordered(_train_job, jobs):
                bar.update(1)
    else:
        data_cache: dict[str, Any] = {}
        for c in todo:
            dkey = json.dumps(asdict(c.data), sort_keys=True)
            if dkey not in data_cache:
                data_cache[dkey] = load_data(c)
            train_into(folder_of(c), c, data=data_cache[dkey], fingerprint=run_fingerprint(c))
            bar.update(1)
    bar.close()


def _train_job(job: tuple[dict, str, str]) -> str:
    cfg_dict, folder, fingerprint = job
    cfg = RunConfig.from_dict(cfg_dict)
    train_into(Path(folder), cfg, fingerprint=fingerprint)
    return cfg.key()


def load_model(cfg: RunConfig, dtype: torch.dtype = torch.float64):
    """The trained model of a run (eval mode) and its result, from the stored float16 weights.

    By default the model computes in float64: evidence computed from stored weights then prints the
    same digits on every kind of CPU (float32 kernels sum in an order that depends on the CPU).
    """
    note_usage(cfg, weights=True)
    result = run(cfg)
    stored = store.read_record(store.run_path(cfg.key())) if result.source == "store" else None
    if stored is not None and stored["weights"]:
        state = store.load_weights(store.weights_path(cfg.key()), stored["weights"]["sha256"], chapter=_chapter())
    else:
        path = cache_folder(cfg) / "model.pt"
        if not path.exists():                     # the store holds its numbers but not its weights
            if store.store_only():
                raise store.StaleRunError(
                    f"run {describe(cfg)} is stored without weights, and a figure needs them; record the "
                    f"chapter with `{store.RECORD_HINT.format(chapter=_chapter() or '<chapter>')}`")
            print(f"fglib: training {describe(cfg)} again for its weights (the store keeps only its numbers)")
            train_into(cache_folder(cfg), cfg)
        state = store.load_weights(path)
    train_set, _ = load_data(cfg)
    model = build(cfg, train_set.num_classes, run_files(cfg))
    model.load_state_dict(state)
    return model.to(dtype).eval(), result


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
    return collect(_jobs(base, variants, seeds), progress=progress)


def collect(jobs: list[tuple[str, int, RunConfig]], progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`grid` for explicit configs: jobs are (variant name, seed, config); same (runs, summary)."""
    for name, seed, cfg in jobs:
        note_usage(cfg, variant=name, seed=seed)
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
    results = dict(zip(runs.key, results_of(runs)))
    for row in runs.itertuples():
        h = pd.DataFrame(results[row.key].history).drop(columns=["lr"])
        h = h.melt(id_vars=["step", "epoch"], var_name="term", value_name="value")
        frames.append(h.assign(variant=row.variant, seed=row.seed))
    return pd.concat(frames, ignore_index=True)


def results_of(runs: pd.DataFrame) -> list[RunResult]:
    """The full results (metrics incl. per-class accuracy, history, provenance) of a grid's rows."""
    return [run(RunConfig.from_dict(store.config_of(key))) for key in runs.key]


def store_note(runs: pd.DataFrame, width: int = 88) -> str:
    """Where a table's runs come from: the results store (recorded when, on which CPU, in which
    precision), or this machine. The same text on every machine when the runs are stored;
    lines wrapped at `width` characters, the width of the book's code blocks."""
    sources: dict[str, list[dict[str, Any]]] = {}
    for result in results_of(runs.drop_duplicates("key")):
        sources.setdefault(result.source, []).append(result.provenance)
    chapter = _chapter() or "<chapter>"
    parts = []
    stored = sources.pop("store", [])
    if stored:
        kinds = sorted({f"{p['cpu']} ({p['torch_capability']}, {p['precision']})" for p in stored})
        days = sorted({p["date"][:10] for p in stored})
        parts.append(f"{len(stored)} runs read from the results store (data/runs/), recorded with the current "
                     f"code on {' and '.join(kinds)}, {days[0]}" + (f" to {days[-1]}" if len(days) > 1 else "")
                     + f". `make reproduce CH={chapter}` re-trains them on your machine and compares.")
    local = sum(len(v) for v in sources.values())
    if local:
        parts.append(f"{local} runs were trained on this machine: the store does not hold them for the "
                     f"current code (`make record CH={chapter}` writes them into it).")
    return "\n".join(textwrap.fill(p, width=width, break_on_hyphens=False) for p in parts)


def summarise(summary: pd.DataFrame, metrics: Iterable[str] | None = None, digits: int = 1) -> pd.DataFrame:
    """'mean ± std (n)' strings per variant and metric: the form every table of the book uses."""
    metrics = list(metrics or dict.fromkeys(m for m, _ in summary.columns))
    out = pd.DataFrame(index=summary.index)
    for m in metrics:
        mean, std, n = summary[(m, "mean")], summary[(m, "std")], summary[(m, "count")]
        out[m] = [f"{a:.{digits}f} ± {s:.{digits}f} ({int(c)})" if c > 1 else f"{a:.{digits}f} (1)"
                  for a, s, c in zip(mean, std, n)]
    return out


def by_seed(runs: pd.DataFrame, value: str, by: str = "variant", metric: str = "top1") -> pd.Series:
    """`metric` of the runs whose column `by` is `value`, indexed by seed (for paired verdicts)."""
    g = runs[runs[by] == value]
    if g.empty:
        raise ValueError(f"no runs with {by} {value!r}; there are {sorted(set(runs[by]))}")
    if g.seed.duplicated().any():
        raise ValueError(f"{by} {value!r} has seeds {sorted(g.seed[g.seed.duplicated()])} twice")
    return g.set_index("seed")[metric]


def versus_baseline(runs: pd.DataFrame, baseline: str, metric: str = "top1",
                    margin: float = verdict.MARGIN) -> pd.DataFrame:
    """Every variant of `runs` (from `grid` or `collect`) against the variant `baseline`, paired
    by seed, the variants with two or more seeds one family (fglib.core.verdict.family).

    Columns: `metric` as 'mean ± std (n)'; `diff`, `low`, `high`, the mean paired difference and
    its 95 % interval; `se`, the paired standard error; `p (Holm)` and `verdict`, the verdict
    function's; `MDE`; `time ratio`, the mean training time over the baseline's (equal numbers of
    steps, so the ratio of the time per step). A variant of one seed gets its difference alone.
    """
    base = by_seed(runs, baseline, metric=metric)
    groups = {name: g for name, g in runs.groupby("variant", sort=False)}
    pairs = {name: verdict.aligned(base, g.set_index("seed")[metric], name)
             for name, g in groups.items() if name != baseline and len(g) > 1}
    verdicts = verdict.family(pairs, margin) if pairs else {}
    rows = []
    for name, g in groups.items():
        v = verdicts.get(name)
        if name == baseline:
            d, low, high, se, p, word, mde = 0.0, 0.0, 0.0, 0.0, math.nan, "", math.nan
        elif v is None:                      # one seed: a difference without a spread
            d = float(g[metric].mean() - base[g.seed].mean())
            low = high = se = p = mde = math.nan
            word = "one seed: no verdict"
        else:
            d, low, high, p, word, mde = v.mean, v.low, v.high, v.p_holm, v.word, v.mde
            se = (v.high - v.mean) / stats.t.ppf(0.975, v.n - 1)    # the interval's se
        rows.append({"variant": name,
                     metric: f"{g[metric].mean():.1f} ± {g[metric].std():.1f} ({len(g)})" if len(g) > 1
                     else f"{g[metric].mean():.1f} (1)",
                     "diff": d, "low": low, "high": high, "se": se, "p (Holm)": p,
                     "verdict": word, "MDE": mde,
                     "time ratio": g.seconds.mean() / base_seconds(runs, baseline)})
    return pd.DataFrame(rows).set_index("variant")


def base_seconds(runs: pd.DataFrame, baseline: str) -> float:
    return float(runs[runs.variant == baseline].seconds.mean())


def between(runs: pd.DataFrame, a: str, b: str, metric: str = "top1",
            by: str = "variant") -> tuple[float, float]:
    """(mean paired difference b - a over seeds, its standard error sd(d) / sqrt(n)) for two
    groups of `runs` (the rows whose column `by` is a or b), e.g. two rows of an ablation; for a
    verdict, `verdict_between`."""
    x, y = verdict.aligned(by_seed(runs, a, by, metric), by_seed(runs, b, by, metric), f"{a} vs {b}")
    d = np.asarray(y) - np.asarray(x)
    if len(d) < 2:
        raise ValueError(f"{a} vs {b}: {len(d)} paired seed(s); a spread needs two or more")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def verdict_between(runs: pd.DataFrame, a: str, b: str, metric: str = "top1", by: str = "variant",
                    margin: float = verdict.MARGIN) -> verdict.Verdict:
    """The verdict function on b against a (a family of one), paired by seed."""
    pair = verdict.aligned(by_seed(runs, a, by, metric), by_seed(runs, b, by, metric), f"{a} vs {b}")
    return verdict.family({b: pair}, margin)[b]
