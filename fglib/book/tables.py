"""The tables several chapters build from the same runs.

- An ablation run in several regimes (the CIN and MAMC chapters): variants named "regime | row",
  split into two columns (`split_variants`), each regime read against its baseline row
  (`regime_tables`), shown with the difference and its standard error (`shown`), and any two rows of
  one regime compared (`within`).
- The closing chapter's comparison: every method beside the baseline that shares its batches
  (`gather`), one row per method (`compared`).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fglib.core.stats import effect, mean_difference, signed
from fglib.engine.train import load_data
from fglib.experiments import regimes
from fglib.experiments.runner import between, collect, results_of, versus_baseline


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
    """A versus_baseline table as the chapters print it: top-1, the difference ± se, the verdict."""
    return pd.DataFrame({
        "top-1 (%)": t.top1,
        "Δ vs baseline": [("" if v == "" else f"{signed(d)} ± {s:.1f}")
                          for d, s, v in zip(t["diff"], t.se, t.verdict)],
        "verdict": t.verdict})


def within(runs: pd.DataFrame, regime: str, a: str, b: str) -> tuple[float, float]:
    """(mean of row b - mean of row a, its standard error) within one regime."""
    r = runs[runs.regime == regime]
    return mean_difference(r[r.row == a].top1, r[r.row == b].top1)


def gather(regime: str, seeds: Iterable[int] = regimes.COMPARE_SEEDS,
           synth: Mapping | None = None) -> pd.DataFrame:
    """The runs of one comparison: method | kind, seed, top-1 and the family metrics, with the
    top-1 on the classes of the hard families (hard_top1)."""
    jobs = [(f"{m} | {k}", s, c)
            for m, k, s, c in regimes.comparison(regime, seeds, synth)]
    runs, _ = collect(jobs)
    runs = split_variants(runs, ("method", "kind"))
    hard = load_data(jobs[0][2])[1].hard.numpy()                  # (classes,) bool
    per_class = [np.asarray(r.metrics["per_class"]) for r in results_of(runs)]
    runs["hard_top1"] = [100 * p[hard].mean() for p in per_class]
    return runs


def compared(runs: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """One row per method (`names`: method -> its name in the table): its metrics over
    seeds and its difference to its own baseline."""
    rows = {}
    for m in names:
        mine = runs[(runs.method == m) & (runs.kind == "method")]
        base = runs[(runs.method == m) & (runs.kind == "baseline")]
        d, se = between(runs[runs.method == m], "baseline", "method", by="kind")
        rows[names[m]] = {
            "top-1 (%)": f"{mine.top1.mean():.1f} ± {mine.top1.std():.1f} "
                         f"({len(mine)})",
            "baseline": f"{base.top1.mean():.1f} ± {base.top1.std():.1f}",
            "hard families": f"{mine.hard_top1.mean():.1f}",
            "errors in family (%)": f"{mine.within_family_errors.mean():.0f}",
            "Δ vs baseline": f"{signed(d)} ± {se:.1f}", "diff": d, "se": se,
            "verdict": effect(d, se),
            "time / step": f"{mine.seconds.mean() / base.seconds.mean():.2f}"}
    return pd.DataFrame(rows).T


def diff_se(table: pd.DataFrame, row: str) -> tuple[float, float]:
    """(difference to the baseline, its standard error) of one row of a versus_baseline table."""
    return table.loc[row, "diff"], table.loc[row, "se"]
