"""Checking the results store by re-training: CI's sample, and `make reproduce CH=<chapter>`.

Verification re-trains stored runs into a scratch folder (never the store, never the local cache) and
compares. On the CPU kind that recorded a run (same CPU model, instruction sets, torch version and
precision), training is bit-reproducible, so the re-trained metrics must *equal* the stored ones and so
must the per-step losses. On another kind the last bits differ from the first step on and the runs
diverge like different seeds, so a metric must fall within

    tol = max(K x sqrt(2) x sd, FLOOR),   K = 3, FLOOR = 0.015 (1.5 points of accuracy)

of the stored value, where sd is the larger of the variant's own seed spread and the store's typical
one (see `seed_spread`): the difference of two runs that differ like seeds has a std of sqrt(2) sd, so the
tolerance is K standard deviations of that difference. One verification makes m comparisons (its runs
times the two metrics), so K is Bonferroni's: the normal quantile 1 - ALPHA / (2 m) for a family-wise
false-alarm rate of ALPHA = 1 % (at least 3; `family_k`). With K = 3 for every comparison, a sample of
ten runs would go red about once in twenty commits with nothing wrong. Top-1 and family top-1 are
compared (the share of errors inside the family is a ratio of small counts, too noisy to check across
kinds).

A stored run that diverged (top-1 at most twice chance, `diverged`) is chaotic: on another CPU kind the
last-bit differences decide whether it diverges at all, so it is compared only on its own kind (on
another it is reported, not judged). A run that trained normally when stored and diverges when
re-trained is still an error.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable

import pandas as pd

from fglib.core.config import RunConfig
from fglib.core.hardware import AUTO_PRECISION_ENV, cpu_kind
from fglib.core.paths import REPO_ROOT, cache_dir
from fglib.experiments import store
from fglib.experiments.runner import run_fingerprint, train_missing

K, FLOOR, MIN_SEEDS, ALPHA = 3.0, 0.015, 3, 0.01
# CI's rotating sample prefers runs that trained in at most this long (the pretraining run and the
# large-map runs take several times a book run): every chapter has such runs, and the cap keeps CI's
# time within its budget as chapters are added; `make reproduce` re-trains every run regardless.
MAX_SAMPLE_SECONDS = 150.0
# The rotating sample takes chapters, in an order that changes with the commit, while the recorded
# training times of their picks add up to at most this (at least one chapter): about two minutes on
# two workers, so that CI's time does not grow with the number of chapters; over a few commits every
# chapter is re-trained (420 s until the RRA and closing chapters needed CI's time).
SAMPLE_BUDGET_SECONDS = 240.0
METRICS = ("top1", "family_top1")


@dataclass
class Entry:
    chapter: str
    key: str
    variant: str | None
    seed: int


def commit_id() -> str:
    """The checked-out commit (the sample rotates with it); FGLIB_VERIFY_SALT overrides it."""
    if os.environ.get("FGLIB_VERIFY_SALT"):
        return os.environ["FGLIB_VERIFY_SALT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no-git"


def sample(chapters: Iterable[str] | None = None, salt: str | None = None,
           extra: Iterable[str] = (), budget: float | None = SAMPLE_BUDGET_SECONDS) -> list[Entry]:
    """Runs picked by hashing (salt, chapter), one per chapter, plus the runs named in `extra`.

    The chapters are taken in an order that rotates with the salt while the picks' recorded training
    seconds add up to at most `budget` (always at least one chapter; budget=None: every chapter).
    `extra` holds run keys (FGLIB_VERIFY="key1,key2"); a chapter whose pick was already taken by an
    earlier chapter (shared runs) takes the next run of its own.
    """
    salt = commit_id() if salt is None else salt
    chapters = list(chapters if chapters is not None else store.indexed_chapters())
    chapters.sort(key=lambda ch: hashlib.sha256(f"{salt}:order:{ch}".encode()).hexdigest())
    picked: dict[str, Entry] = {}
    spent = 0.0
    for ch in chapters:
        runs = store.read_index(ch)
        if not runs:
            continue
        start = int(hashlib.sha256(f"{salt}:{ch}".encode()).hexdigest(), 16) % len(runs)
        order = [runs[(start + i) % len(runs)] for i in range(len(runs))]
        cheap = [r for r in order if _seconds(r["key"]) <= MAX_SAMPLE_SECONDS]
        for r in cheap + [r for r in order if r not in cheap]:
            if r["key"] in picked:
                continue
            cost = _seconds(r["key"])
            if budget is None or not picked or spent + cost <= budget:
                picked[r["key"]] = Entry(ch, r["key"], r["variant"], r["seed"])
                spent += cost
            break
    index = {r["key"]: (ch, r) for ch in store.indexed_chapters() for r in store.read_index(ch)}
    for key in extra:
        if key not in index:
            raise store.StoreError(f"FGLIB_VERIFY names run {key!r}, which no chapter index in {store.chapters_dir()} "
                           "lists; give keys of data/runs/<key>.json")
        ch, r = index[key]
        picked.setdefault(key, Entry(ch, key, r["variant"], r["seed"]))
    return list(picked.values())


def _seconds(key: str) -> float:
    """The recorded training time of a stored run (inf when it cannot be read)."""
    try:
        return float(store.read_record(store.run_path(key))["seconds"])
    except (store.StoreError, OSError, KeyError, ValueError):
        return math.inf


def extra_from_env() -> list[str]:
    return [k.strip() for k in os.environ.get("FGLIB_VERIFY", "").split(",") if k.strip()]


def variant_values(chapter: str, metric: str, exclude: str | None = None) -> dict[Any, list[float]]:
    """{variant: the metric of each stored seed} for a chapter, without run `exclude`."""
    values: dict[Any, list[float]] = {}
    for r in store.read_index(chapter):
        if r["key"] == exclude or r["variant"] is None:
            continue
        m = store.read_record(store.run_path(r["key"]), chapter)["metrics"]
        if metric in m:
            values.setdefault(r["variant"], []).append(m[metric])
    return values


def typical_spread(metric: str, exclude: str | None = None) -> float:
    """The median seed-to-seed std of a metric over every variant in the store with 3+ seeds."""
    stds = [pd.Series(v).std() for ch in store.indexed_chapters()
            for v in variant_values(ch, metric, exclude).values() if len(v) >= MIN_SEEDS]
    return float(pd.Series(stds).median()) if stds else 0.0


def seed_spread(chapter: str, variant: str | None, metric: str, exclude: str | None = None) -> tuple[float, str]:
    """(sd, how): the seed-to-seed std to expect for a run of `variant`, without run `exclude`.

    The larger of the variant's own std over its other stored seeds (when there are 2 or more) and
    the store's typical spread (the median std over all variants with 3+ seeds): a noisy variant keeps
    its own larger spread, a variant with few seeds or a spread small by chance gets the typical one.
    Leaving the verified run out keeps an altered stored number from widening its own tolerance.
    """
    own = variant_values(chapter, metric, exclude).get(variant, [])
    own_sd = float(pd.Series(own).std()) if len(own) >= 2 else 0.0
    typical = typical_spread(metric, exclude)
    if own_sd > typical:
        return own_sd, f"std of {len(own)} other seeds"
    return typical, "the store's median seed std"


def family_k(comparisons: int, alpha: float = ALPHA) -> float:
    """K for `comparisons` cross-kind comparisons at family-wise false-alarm rate alpha
    (Bonferroni, two-sided), never below the single-comparison K = 3."""
    return max(K, NormalDist().inv_cdf(1 - alpha / (2 * max(1, comparisons))))


def diverged(record: dict[str, Any]) -> bool:
    """The run's top-1 is at most twice chance (1 / number of classes): it diverged."""
    classes = len(record["metrics"].get("per_class", [])) or 1
    return record["metrics"]["top1"] <= 2 / classes


def same_kind(record: dict[str, Any], precision: str) -> bool:
    p = record["provenance"]
    return p.get("cpu_kind") == cpu_kind()["id"] and p.get("precision") == precision


def compare(entry: Entry, stored: dict[str, Any], fresh: dict[str, Any],
            k: float = K) -> list[dict[str, Any]]:
    """One row per metric: stored, re-trained, difference, tolerance (k standard deviations
    of a seed difference on another CPU kind), verdict."""
    exact = same_kind(stored, fresh["provenance"]["precision"])
    rows = []
    for metric in METRICS:
        if metric not in stored["metrics"]:
            continue
        a, b = stored["metrics"][metric], fresh["metrics"][metric]
        if exact:
            tol, how = 0.0, "same CPU kind: must be equal"
            ok = (store.same_numbers(a, b) and store.same_numbers(stored["metrics"], fresh["metrics"])
                  and store.same_numbers(stored["history"], fresh["history"]))
        elif diverged(stored):
            tol, ok = math.nan, True
            how = "other CPU kind, stored run diverged: chaotic, compared on its own kind only"
        else:
            sd, how = seed_spread(entry.chapter, entry.variant, metric, exclude=entry.key)
            tol = max(k * math.sqrt(2) * sd, FLOOR)
            how = f"other CPU kind: |diff| <= max({k:.2f} x sqrt(2) x {how}, {FLOOR:g})"
            ok = abs(b - a) <= tol
        rows.append({"chapter": entry.chapter, "variant": entry.variant, "seed": entry.seed, "key": entry.key,
                     "metric": metric, "stored": a, "retrained": b, "diff": b - a, "tol": tol,
                     "rule": how, "ok": bool(ok)})
    return rows


def scratch_dir(name: str) -> Path:
    return cache_dir() / name


def retrain(keys: list[str], folder: Path, progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Re-train stored runs into folder/<key>-<fingerprint>/ (resumable); their new records by key.

    Each run is re-trained in the precision it was recorded in (FGLIB_AUTO_PRECISION for
    train.amp="auto"): a float32 run recorded on an AVX2 machine is re-trained in float32 on a
    machine where "auto" would pick bfloat16, so that only the summation order differs."""
    records = [store.read_record(store.run_path(k)) for k in keys]

    def folder_of(cfg: RunConfig) -> Path:
        return folder / f"{cfg.key()}-{run_fingerprint(cfg)}"

    by_precision: dict[str, list[RunConfig]] = {}
    for r in records:
        by_precision.setdefault(r["provenance"]["precision"], []).append(RunConfig.from_dict(r["config"]))
    before = os.environ.get(AUTO_PRECISION_ENV)
    try:
        for precision, cfgs in by_precision.items():
            if precision in ("float32", "bfloat16"):          # spawned workers inherit os.environ
                os.environ[AUTO_PRECISION_ENV] = precision
            train_missing(cfgs, folder_of=folder_of, progress=progress)
    finally:
        if before is None:
            os.environ.pop(AUTO_PRECISION_ENV, None)
        else:
            os.environ[AUTO_PRECISION_ENV] = before
    return {r["key"]: store.read_record(folder_of(RunConfig.from_dict(r["config"])) / "result.json")
            for r in records}


def verify(entries: list[Entry], progress: bool | None = False, keep: bool = False) -> pd.DataFrame:
    """Re-train each entry in a scratch folder and compare it with the store (a row per metric)."""
    folder = scratch_dir("verify")
    shutil.rmtree(folder, ignore_errors=True)
    fresh = retrain([e.key for e in entries], folder, progress=progress)
    rows, k = [], family_k(len(entries) * len(METRICS))
    for e in entries:
        rows += compare(e, store.read_record(store.run_path(e.key), e.chapter), fresh[e.key], k)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return pd.DataFrame(rows)


# -- make reproduce ------------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" (1 <= i <= n) -> (i, n), else a ValueError that says the form."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n, e.g. 2/8 (share 2 of 8), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text}: i must be between 1 and n")
    return i, n


def shard_keys(keys: list[str], shard: tuple[int, int]) -> list[str]:
    """Share i of n of a chapter's runs: every n-th run key in sorted order from the i-th, so
    the n shares are disjoint, cover every key and differ in size by at most one run."""
    i, n = shard
    return [k for j, k in enumerate(sorted(keys)) if j % n == i - 1]


def reproduce(chapter: str, progress: bool | None = True, shard: tuple[int, int] | None = None,
              merge: bool = False) -> pd.DataFrame | None:
    """Re-train every run of a chapter into data/cache/reproduce/ and compare per variant.

    shard=(i, n): re-train share i of n only (`shard_keys`; for a cluster's job array sharing
    the folder) and return None. merge=True: train nothing; compare once every share is there,
    else a StoreError naming the missing runs' shares."""
    runs = store.read_index(chapter)
    keys = list(dict.fromkeys(r["key"] for r in runs))
    folder = scratch_dir("reproduce")
    if shard is not None:
        retrain(shard_keys(keys, shard), folder, progress=progress)
        return None
    if merge:
        done = {p.parent.name.split("-")[0] for p in folder.glob("*/result.json")}
        missing = [k for k in keys if k not in done]
        if missing:
            raise store.StoreError(f"{chapter}: {len(missing)} of {len(keys)} runs are not re-trained "
                                   f"in {folder} yet (e.g. {missing[0]}); run the missing shares "
                                   "(--shard i/n) first, or reproduce without --merge")
    fresh = retrain(keys, folder, progress=progress)
    stored = {k: store.read_record(store.run_path(k), chapter) for k in keys}
    exact = all(same_kind(stored[k], fresh[k]["provenance"]["precision"]) for k in keys)
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        ks = [r["key"] for r in runs if r["variant"] == variant]
        a = pd.Series([100 * stored[k]["metrics"]["top1"] for k in ks])
        b = pd.Series([100 * fresh[k]["metrics"]["top1"] for k in ks])
        diff = b.mean() - a.mean()
        sd, _ = seed_spread(chapter, variant, "top1")
        sd_a = a.std() if len(a) >= MIN_SEEDS else 100 * sd
        sd_b = b.std() if len(b) >= MIN_SEEDS else 100 * sd
        se = math.sqrt(sd_a ** 2 / len(a) + sd_b ** 2 / len(b))
        rows.append({"variant": variant, "stored top-1": _fmt(a), "reproduced top-1": _fmt(b),
                     "difference": round(diff, 2), "2 se": round(2 * se, 2),
                     "identical runs": sum(store.same_numbers(stored[k]["metrics"], fresh[k]["metrics"])
                                           for k in ks),
                     "within seed noise": "yes" if abs(diff) <= max(2 * se, 100 * FLOOR) else "NO"})
    table = pd.DataFrame(rows)
    table.attrs["cpu"] = cpu_kind()
    table.attrs["exact"] = exact
    return table


def _fmt(s: pd.Series) -> str:
    return f"{s.mean():.2f} ± {s.std():.2f} ({len(s)})" if len(s) > 1 else f"{s.mean():.2f} (1)"
