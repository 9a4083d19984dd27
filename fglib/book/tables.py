"""The tables several chapters build from the same runs.

- An ablation run in several regimes (the CIN and MAMC chapters): variants named "regime | row",
  split into two columns (`split_variants`), each regime read against its baseline row
  (`regime_tables`), shown with the difference and its standard error (`shown`), and any two rows of
  one regime compared (`within`).
- The closing chapter's runs of one comparison (`gather`); its family of verdicts is
  fglib.book.closing.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fglib.core import verdict
from fglib.core.verdict import Verdict, signed
from fglib.engine.train import load_data
from fglib.experiments import regimes
from fglib.experiments.runner import (between, collect, results_of, verdict_between,
                                      versus_baseline)


def split_variants(runs: pd.DataFrame, names: tuple[str, str] = ("regime", "row")) -> pd.DataFrame:
    """runs with the variant "a | b" split into the columns `names` (a copy)."""
    out = runs.copy()
    out[list(names)] = out.variant.str.split(" | ", expand=True, regex=False)
    return out


def regime_tables(runs: pd.DataFrame, regime_names: Iterable[str], rows: Iterable[str],
                  baseline: str = "baseline") -> dict[str, pd.DataFrame]:
    """{regime: versus_baseline of its `rows`} for runs with "regime" and "row" columns."""
    rows = list(rows)
    tables = {}
    for regime in regime_names:
        r = runs[(runs.regime == regime) & runs.row.isin(rows)]
        tables[regime] = versus_baseline(r.assign(variant=r.row), baseline)
    return tables


def shown(t: pd.DataFrame) -> pd.DataFrame:
    """A versus_baseline table as the chapters print it: top-1, the paired difference with its
    95 % interval, the Holm-adjusted p-value and the verdict function's word."""
    return pd.DataFrame({
        "top-1 (%)": t.top1,
        "Δ vs baseline [95 % CI]": [
            "" if v == "" else signed(d) if np.isnan(lo) else
            f"{signed(d)} [{signed(lo)}, {signed(hi)}]"
            for d, lo, hi, v in zip(t["diff"], t.low, t.high, t.verdict)],
        "p (Holm)": [("" if np.isnan(p) else f"{p:.3f}") for p in t["p (Holm)"]],
        "verdict": t.verdict})


def within(runs: pd.DataFrame, regime: str, a: str, b: str) -> tuple[float, float]:
    """(mean paired difference row b - row a over seeds, its standard error) in one regime."""
    return between(runs[runs.regime == regime], a, b, by="row")


def within_verdict(runs: pd.DataFrame, regime: str, a: str, b: str) -> Verdict:
    """The verdict function on row b against row a in one regime (a family of one)."""
    return verdict_between(runs[runs.regime == regime], a, b, by="row")


def gather(regime: str, seeds: Iterable[int] = regimes.COMPARE_SEEDS,
           synth: Mapping | None = None, tuned: bool = False) -> pd.DataFrame:
    """The runs of one comparison: method | kind, seed, top-1 and the family metrics, with the
    top-1 on the classes of the hard families (hard_top1). tuned=True: the paper regime at the
    settings the tuning protocol chose (regimes.tuned_comparison)."""
    if tuned and regime != regimes.TUNING_REGIME:
        raise ValueError(f"the tuning protocol tuned the {regimes.TUNING_REGIME!r} regime only, "
                         f"not {regime!r}")
    runs = (regimes.tuned_comparison(seeds, synth) if tuned
            else regimes.comparison(regime, seeds, synth))
    jobs = [(f"{m} | {k}", s, c) for m, k, s, c in runs]
    runs, _ = collect(jobs)
    runs = split_variants(runs, ("method", "kind"))
    runs["hard_top1"] = hard_top1(runs, {v: c for v, _, c in jobs})
    return runs


def hard_top1(runs: pd.DataFrame, config_of: Mapping[str, object]) -> list[float]:
    """Per run, top-1 (%) on the classes of its benchmark's hard families, from its stored
    per-class accuracies; `config_of`: variant -> a config of that variant (its benchmark)."""
    hard = {}
    out = []
    for variant, r in zip(runs.variant, results_of(runs)):
        data = config_of[variant].data
        dkey = json.dumps(asdict(data), sort_keys=True, default=str)
        if dkey not in hard:
            hard[dkey] = load_data(config_of[variant])[1].hard.numpy()   # (classes,) bool
        out.append(100 * np.asarray(r.metrics["per_class"])[hard[dkey]].mean())
    return out


def diff_se(table: pd.DataFrame, row: str) -> tuple[float, float]:
    """(difference to the baseline, its standard error) of one row of a versus_baseline table."""
    return table.loc[row, "diff"], table.loc[row, "se"]


def tuning_runs() -> pd.DataFrame:
    """The tuning protocol's runs (regimes.tuning_grid): subject, trial number, top-1."""
    runs, _ = collect(regimes.tuning_jobs())
    runs = split_variants(runs, ("subject", "trial"))
    return runs.assign(trial=runs.trial.astype(int))


def tuning_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per subject of the protocol: top-1 untuned (trial 0, the default) and tuned (the trial the
    rule chooses), and the chosen lr scale, weight decay and label smoothing."""
    trials = regimes.tuning_trials()
    rows = {}
    for subject, r in runs.groupby("subject", sort=False):
        top1 = dict(zip(r.trial, r.top1))
        if sorted(top1) != list(range(len(trials))):
            raise ValueError(f"{subject}: trials {sorted(top1)} of {len(trials)}; the protocol gives every "
                             "subject the whole grid")
        best = regimes.chosen_trial(top1)
        rows[subject] = {"untuned top-1 (%)": top1[0], "tuned top-1 (%)": top1[best],
                         "gain": top1[best] - top1[0], "trials": len(top1),
                         "chosen trial": best, "lr x": trials[best]["lr_scale"],
                         "weight decay": trials[best]["train.weight_decay"],
                         "label smoothing": trials[best]["train.label_smoothing"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def tuned_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Each method against the baseline on its batches, on the tuning benchmark, untuned vs
    untuned and tuned vs tuned (one seed each: a point estimate, no verdict)."""
    rows = {}
    for m in regimes.COMPARED:
        b = regimes.baseline_subject(m)
        rows[m] = {"baseline": b,
                   "untuned gap": table.loc[m, "untuned top-1 (%)"] - table.loc[b, "untuned top-1 (%)"],
                   "tuned gap": table.loc[m, "tuned top-1 (%)"] - table.loc[b, "tuned top-1 (%)"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def tuning_sentences(table: pd.DataFrame, gaps: pd.DataFrame, names: Mapping[str, str]) -> str:
    """What the tuning protocol changed, in sentences made from its tables (one seed per trial:
    point estimates, no verdict)."""
    gain = table["gain"]
    base = [b for b in table.index if b not in names]
    moved = table[table["chosen trial"] != 0]
    smooth = table[table["label smoothing"] > 0].index
    low_wd, low_lr = min(regimes.TUNING_WEIGHT_DECAYS), min(regimes.TUNING_LR_SCALES)
    parts = [f"Tuning chose a setting other than the default for {len(moved)} of the "
             f"{len(table)} subjects; it raised the baselines by "
             + ", ".join(f"{gain[b]:+.1f}" for b in base)
             + " points and the methods by "
             + ", ".join(f"{gain[m]:+.1f} ({names[m]})" for m in names) + "."]
    parts.append("Label smoothing was chosen for "
                 + (", ".join(names.get(s, s) for s in smooth) if len(smooth) else "none of them")
                 + f"; the weight decay of {low_wd:g} for "
                 f"{int((table['weight decay'] == low_wd).sum())}, the learning rate x "
                 f"{low_lr:g} for {int((table['lr x'] == low_lr).sum())} of the {len(table)}.")
    flips = [names[m] for m in names
             if gaps.loc[m, "untuned gap"] * gaps.loc[m, "tuned gap"] < 0]
    parts.append("Tuned against tuned, each method's gap over its baseline moves from "
                 + ", ".join(f"{gaps.loc[m, 'untuned gap']:+.1f} to {gaps.loc[m, 'tuned gap']:+.1f}"
                             f" ({names[m]})" for m in names)
                 + (f"; the sign flips for {', '.join(flips)}" if flips else "")
                 + ". Each number is one run on the tuning benchmark, where the best of eight "
                 "trials is also favoured by its own noise, so these gaps are leads, not verdicts.")
    return " ".join(parts)


def paired_change(before: pd.DataFrame, after: pd.DataFrame, kind: str,
                  names: Mapping[str, str]) -> pd.DataFrame:
    """Per method (`names`: method -> row name), its `kind` runs ("method" or "baseline") of two
    gather() tables matched by seed: mean top-1 before and after, and the verdict function on
    after - before over the rows as one family (the paired difference, its 95 % interval, the
    word)."""
    pairs, means = {}, {}
    for m, name in names.items():
        a = before[(before.method == m) & (before.kind == kind)].set_index("seed").top1
        b = after[(after.method == m) & (after.kind == kind)].set_index("seed").top1
        seeds = sorted(set(a.index) & set(b.index))
        if len(seeds) < 2:
            raise ValueError(f"{name}: {len(seeds)} seeds in both tables; a paired difference "
                             "needs two or more")
        pairs[name] = (a[seeds].tolist(), b[seeds].tolist())
        means[name] = (a[seeds].mean(), b[seeds].mean())
    verdicts = verdict.family(pairs)
    return pd.DataFrame.from_dict({name: {
        "untuned top-1 (%)": means[name][0], "tuned top-1 (%)": means[name][1],
        "paired Δ": v.mean, "95 % CI": f"[{signed(v.low)}, {signed(v.high)}]", "seeds": v.n,
        "verdict": v.word} for name, v in verdicts.items()}, orient="index")


def check_tuned(table: pd.DataFrame) -> str:
    """That regimes.TUNED (the recorded choices, from which the tuned runs are built) is the
    rule's choice on these runs; a sentence saying so, else an error naming the difference."""
    chosen = {s: int(t) for s, t in table["chosen trial"].items()}
    if chosen != regimes.TUNED:
        wrong = {s: (regimes.TUNED.get(s), t) for s, t in chosen.items() if regimes.TUNED.get(s) != t}
        raise ValueError(f"regimes.TUNED disagrees with the tuning runs (subject: (recorded, rule's "
                         f"choice)): {wrong}; record the rule's choices in regimes.TUNED")
    return f"regimes.TUNED holds the rule's choice for all {len(chosen)} subjects."
