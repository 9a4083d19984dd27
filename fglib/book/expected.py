"""Checked results that are not training runs (training runs live in the results store, fglib.experiments.store).

The introduction's toy model and the data chapter's dataset statistics are compared with
data/expected/<chapter>.csv.

A chapter computes a tidy table (one row per number: key columns + a `value` column) and calls
`check(chapter, table, keys=..., tol=...)` in a cell of its own. The call raises `ResultMismatch`
when a value moved by more than the tolerance the chapter states, when a row is missing or new, so
that `pytest --nbval` goes red. After an intended change, regenerate the file with
FGLIB_UPDATE_EXPECTED=1 (see README) and commit it beside the re-executed notebook.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from fglib.core.paths import expected_dir


class ResultMismatch(AssertionError):
    """A chapter's result differs from the stored expectation by more than the stated tolerance."""


@dataclass
class CheckReport:
    chapter: str
    path: Path
    table: pd.DataFrame          # keys, ours, expected, diff, tol, ok
    updated: bool = False

    def __repr__(self) -> str:
        if self.updated:
            return f"{self.chapter}: wrote {len(self.table)} expected values to {self._rel()}"
        return (f"{self.chapter}: all {len(self.table)} values match {self._rel()} "
                f"within the stated tolerance")

    def _rel(self) -> str:
        try:
            return str(self.path.relative_to(expected_dir().parent.parent))
        except ValueError:
            return str(self.path)


def updating(update: bool | None = None) -> bool:
    """Whether a check records instead of comparing: `update`, else FGLIB_UPDATE_EXPECTED=1;
    refused under CI, where expectations are only compared."""
    if update is None:
        update = os.environ.get("FGLIB_UPDATE_EXPECTED", "") == "1"
    if update and os.environ.get("CI"):
        raise RuntimeError("FGLIB_UPDATE_EXPECTED=1 is refused under CI: expectations are updated by hand")
    return bool(update)


def expected_path(chapter: str) -> Path:
    return expected_dir() / f"{chapter}.csv"


def _tolerance(row: pd.Series, tol: float | Mapping[str, float], tol_by: str) -> float:
    if isinstance(tol, Mapping):
        if row[tol_by] not in tol:
            raise KeyError(f"no tolerance given for {tol_by}={row[tol_by]!r}; pass it in tol={dict(tol)}")
        return float(tol[row[tol_by]])
    return float(tol)


def check(chapter: str, results: pd.DataFrame, *, keys: list[str], tol: float | Mapping[str, float],
          value: str = "value", tol_by: str = "metric", update: bool | None = None) -> CheckReport:
    """Compare `results[value]` with the stored expectation row by row (matched on `keys`)."""
    missing = [c for c in [*keys, value] if c not in results.columns]
    if missing:
        raise KeyError(f"results has no column(s) {missing}; it has {list(results.columns)}")
    if results.duplicated(keys).any():
        dup = results[results.duplicated(keys, keep=False)][keys].iloc[0].to_dict()
        raise ValueError(f"two result rows share the keys {dup}: add a key column that tells them apart")
    path = expected_path(chapter)
    ours = results[[*keys, value]].rename(columns={value: "ours"})
    if updating(update):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        ours.rename(columns={"ours": "value"}).to_csv(tmp, index=False)
        tmp.replace(path)
        return CheckReport(chapter, path, ours.assign(expected=ours["ours"], diff=0.0, tol=math.nan, ok=True),
                           updated=True)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run this chapter once with FGLIB_UPDATE_EXPECTED=1 "
                                "to record its results, check them, and commit the file")
    expected = pd.read_csv(path, dtype={k: str for k in keys})
    ours = ours.astype({k: str for k in keys})
    table = ours.merge(expected.rename(columns={"value": "expected"}), on=keys, how="outer", indicator=True)
    new = table[table["_merge"] == "left_only"]
    gone = table[table["_merge"] == "right_only"]
    if len(new) or len(gone):
        raise ResultMismatch(
            f"{chapter}: the rows differ from {path.name}: "
            f"new {new[keys].to_dict('records')}, missing {gone[keys].to_dict('records')}")
    table = table.drop(columns="_merge")
    table["diff"] = table["ours"] - table["expected"]
    table["tol"] = [_tolerance(r, tol, tol_by) for _, r in table.iterrows()]
    table["ok"] = table["diff"].abs() <= table["tol"]
    report = CheckReport(chapter, path, table)
    if not table["ok"].all():
        bad = table[~table["ok"]]
        raise ResultMismatch(f"{chapter}: {len(bad)} value(s) moved beyond the tolerance:\n"
                             f"{bad.to_string(index=False)}")
    return report
