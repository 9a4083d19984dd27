"""The closing chapter's reading of its family of verdicts (fglib.book.closing), as sentences
made from the verdict function's output: what holds in the paper regime, what the controls say
the gains belong to, which claims stand, and what the smaller cells can and cannot say.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fglib.book.closing import (CELL_NAMES, CLAIMS, NAMES, claims_table,  # noqa: F401
                                closing_sentence)
from fglib.core.verdict import ALPHA, WORDS, Verdict, smallest_p

Family = Mapping[tuple[str, str, str], Verdict]


def listed(names: Iterable[str]) -> str:
    """'a, b, c', or 'none'."""
    names = list(names)
    return ", ".join(names) if names else "none"


def verdict_groups(verdicts: Family, cell: str = "paper",
                   against: str = "baseline") -> dict[str, list[str]]:
    """{word: the methods whose verdict in `cell` against `against` is that word}, every word
    of fglib.core.verdict.WORDS present."""
    return {w: [NAMES[m] for (m, c, a), v in verdicts.items()
                if c == cell and a == against and v.word == w] for w in WORDS}


def synthesis(verdicts: Family, claims: pd.DataFrame) -> str:
    """The chapter's synthesis, from the family and the claims table."""
    g = verdict_groups(verdicts)
    n = {m: verdicts[(m, "paper", "baseline")].n for m in NAMES}
    seeds = (f"{min(n.values())}" if min(n.values()) == max(n.values())
             else f"{min(n.values())} to {max(n.values())}")
    out = [f"In the tuned paper regime ({seeds} paired seeds per "
           f"method), against the baseline on the same batches: gains for "
           f"{listed(g['a gain'])}; losses for {listed(g['a loss'])}; no effect (equivalent "
           f"within ±1 point) for {listed(g['no effect'])}; inconclusive for "
           f"{listed(g['inconclusive'])}."]
    owned, not_owned = [], []
    for (m, c, a), v in verdicts.items():
        if c == "paper" and a != "baseline" and verdicts[(m, c, "baseline")].word == "a gain":
            (owned if v.word == "a gain" else not_owned).append(f"{NAMES[m]} (vs {a}: {v.word})")
    gains = g["a gain"]
    if gains:
        out.append("Against the decisive controls, the gain belongs to the paper's idea for "
                   f"{listed(owned)}" + (f"; it is not shown to for {listed(not_owned)}"
                                         if not_owned else "") + ".")
    else:
        out.append("With no gain over the baseline, the controls have no gain to attribute; "
                   "they show whether the idea's own part changes anything (table above).")
    words = claims.verdict.to_dict()
    by = {w: [k for k, x in words.items() if x == w]
          for w in ("reproduced", "smaller than claimed", "claim excluded", "inconclusive")}
    out.append(f"Against the papers' own numbers, each in the cell its paper claims: reproduced "
               f"for {listed(by['reproduced'])}; a gain smaller than claimed for "
               f"{listed(by['smaller than claimed'])}; the claim excluded by our interval for "
               f"{listed(by['claim excluded'])}; inconclusive for {listed(by['inconclusive'])}.")
    small = sorted({v.n for (m, c, a), v in verdicts.items() if smallest_p(v.n) >= ALPHA})
    if small:
        out.append(f"Cells of {listed(str(k) for k in small)} seeds (from scratch, held-out) "
                   f"cannot reach the family's level by exact sign flips at all (p ≥ "
                   f"{smallest_p(max(small)):.3f}): their intervals describe, they do not decide.")
    return " ".join(out)


def discussion(verdicts: Family, claims: pd.DataFrame, counts: pd.DataFrame,
               rho: tuple[float, float, float]) -> str:
    """The discussion's bullets: claims, the held-out benchmark, cost. counts: parameters per
    model (columns "training", "test", a "baseline" row); rho: Spearman's rho between the two
    benchmarks' differences with its bootstrap interval (fglib.core.verdict)."""
    names = list(NAMES.values())
    ratio = counts["test"] / counts.loc["baseline", "test"]
    free = [n for n in names if abs(ratio[n] - 1) < 0.01]
    cost = (f"{listed(free)} test with the baseline's network (what they add trains only); "
            + ", ".join(f"{n} with {ratio[n]:.2f} times the baseline's parameters"
                        for n in names if n not in free) + ".")
    held = {NAMES[m]: verdicts[(m, "held-out", "baseline")] for m in NAMES}
    same_sign = [NAMES[m] for m in NAMES if np.sign(verdicts[(m, "held-out", "baseline")].mean)
                 == np.sign(verdicts[(m, "paper", "baseline")].mean)]
    r, lo, hi = rho
    return ("* **Claims.** " + "; ".join(f"{n}: {v}" for n, v in claims.verdict.items()) + ".\n"
            "* **The held-out benchmark.** Its differences (shared recipe, "
            f"{min(v.n for v in held.values())} seeds) have the same sign as the tuned main "
            f"benchmark's for {len(same_sign)} of {len(names)} methods ({listed(same_sign)}). "
            f"Ranked by the difference to the baseline, the untuned main benchmark and the "
            f"held-out one correlate with Spearman's rho = {r:+.2f}, bootstrap 95 % interval "
            f"[{lo:+.2f}, {hi:+.2f}] over seeds: " + (
                "the ranking is not shown to carry over." if lo <= 0 else
                "the ranking carries over beyond what the seeds' noise allows.") + "\n"
            "* **Cost.** " + cost)
