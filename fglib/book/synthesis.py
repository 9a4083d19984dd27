"""The closing chapter's reading of its tables: each paper's claim against our difference, the
verdicts grouped, and the synthesis, all as sentences made from the numbers.

Until the single verdict function of issue 29 replaces it, a verdict here is the book's current
rule, fglib.core.stats.effect (a gain or a loss beyond two standard errors).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from fglib.core.stats import effect

# method: (claimed gain in top-1 points or None, what the paper reports, the regime of the claim);
# from single transcriptions of the papers' tables (shared/papers.md).
CLAIMS = {
    "mcloss": (59.41 - 45.70, "R-18, scratch: 45.70 -> 59.41", "from scratch"),
    "apinet": (None, "R-50: 87.7, no baseline row", "paper"),
    "cin": (87.5 - 84.9, "R-50: 84.9 -> 87.5", "paper"),
    "mamc": (86.2 - 81.7, "R-50: 81.7 -> 86.2", "paper"),
    "rra": (2.0, '"up to 2 %", no table', "paper"),
}
VERDICTS = ("a gain", "no measurable effect", "a loss")


def listed(names: Iterable[str]) -> str:
    """'a, b, c', or 'none'."""
    names = list(names)
    return ", ".join(names) if names else "none"


def verdict_groups(table: pd.DataFrame) -> dict[str, list[str]]:
    """{verdict: the rows of a `compared` table with that verdict}, every verdict present."""
    return {v: [n for n in table.index if table.loc[n, "verdict"] == v] for v in VERDICTS}


def claim_verdict(d: float, se: float, claim: float | None) -> str:
    """Our difference d ± se against the paper's claimed gain: 'reproduced' (a gain,
    the claim within 2 se), 'a smaller gain than claimed', 'inconclusive' (0 and the
    claim within 2 se), 'not reproduced' (the claim beyond 2 se and no gain)."""
    word = effect(d, se)
    if claim is None:
        return f"no claimed gain (ours: {word})"
    reach = d + 2 * se >= claim
    if word == "a gain":
        return "reproduced" if reach else "a smaller gain than claimed"
    if reach:
        return "inconclusive (0 and the claim within 2 se)"
    return f"not reproduced ({word})"


def claims_table(paper: pd.DataFrame, scratch: pd.DataFrame,
                 names: Mapping[str, str]) -> pd.DataFrame:
    """One row per paper: its claim, ours in both regimes, the verdict in the claim's regime."""
    rows = {}
    for m, (claim, text, regime) in CLAIMS.items():
        t = paper if regime == "paper" else scratch
        d, se = float(t.loc[names[m], "diff"]), float(t.loc[names[m], "se"])
        rows[names[m]] = {
            "claimed": ("—" if claim is None else f"≤ {claim:+.1f}" if m == "rra"
                        else f"{claim:+.1f}"),
            "paper (CUB)": text, "claimed for": regime,
            "ours, paper regime": paper.loc[names[m], "Δ vs baseline"],
            "ours, from scratch": scratch.loc[names[m], "Δ vs baseline"],
            "verdict": claim_verdict(d, se, claim)}
    return pd.DataFrame(rows).T


def synthesis(paper: pd.DataFrame, scratch: pd.DataFrame, held: pd.DataFrame,
              claims: pd.DataFrame, tuned_change: pd.DataFrame | None = None) -> str:
    """The chapter's synthesis: what holds on both benchmarks, what depends on the regime, what
    tuning changes, and which claims stand, in sentences made from the tables."""
    vp, vs, vh = verdict_groups(paper), verdict_groups(scratch), verdict_groups(held)
    robust = [n for n in vp["a gain"] if n in vh["a gain"]]
    main_only = [n for n in vp["a gain"] if n not in vh["a gain"]]
    losses = sorted(set(vp["a loss"]) | set(vs["a loss"]) | set(vh["a loss"]))
    regime_dep = [n for n in paper.index if paper.loc[n, "verdict"] != scratch.loc[n, "verdict"]]
    reproduced = [n for n in claims.index if claims.loc[n, "verdict"] == "reproduced"]
    smaller = [n for n in claims.index if claims.loc[n, "verdict"] == "a smaller gain than claimed"]
    k = len(vp["a gain"])
    if not k:
        held_out = ""
    elif not robust:
        held_out = ", but not on the held-out benchmark" if k == 1 else \
            ", but none of them on the held-out benchmark"
    elif not main_only:
        held_out = ", and on the held-out benchmark too"
    else:
        held_out = (f"; on the held-out benchmark too: {listed(robust)}; on the main benchmark "
                    f"only: {listed(main_only)}")
    out = [f"{k} of the five methods {'gains' if k == 1 else 'gain'} over the baseline on "
           f"{'its' if k == 1 else 'their'} own batches in the paper regime "
           f"({listed(vp['a gain'])}){held_out}."]
    out.append(f"The verdict depends on the regime for {len(regime_dep)} of 5 "
               f"({listed(regime_dep)}); a loss appears somewhere for {listed(losses)}.")
    out.append(f"Against the papers' own numbers: reproduced at the claimed size for "
               f"{listed(reproduced)}; a gain smaller than claimed for {listed(smaller)}; the "
               "other claims are not supported at this scale (the table above says which are "
               "inconclusive and which are excluded).")
    if tuned_change is not None:
        flips = [n for n in tuned_change.index
                 if tuned_change.loc[n, "verdict, tuned"] != tuned_change.loc[n, "verdict, untuned"]]
        out.append("Tuned against tuned, with one budget for every method and baseline, "
                   + (f"the verdict changes for {listed(flips)}." if flips
                      else "no verdict changes."))
    out.append("Every verdict here is the two-standard-error rule on five seeds (three on the "
               "held-out benchmark), without a correction for the number of verdicts: a first "
               "reading, not yet a test that pairs the seeds and corrects for the many verdicts.")
    return " ".join(out)


def discussion(paper: pd.DataFrame, paper3: pd.DataFrame, held: pd.DataFrame,
               claims: pd.DataFrame, counts: pd.DataFrame, rho_diff: float,
               p_diff: float) -> str:
    """The discussion's bullets: claims, the held-out benchmark, cost, three seeds or five.
    paper3: the paper-regime table on the first three seeds; counts: parameters per model
    (columns "training", "test", a "baseline" row); rho_diff, p_diff: the rank correlation of
    the differences between the two benchmarks and its exact one-sided p-value."""
    names = list(paper.index)
    flips = [(n, paper.loc[n, "verdict"], paper3.loc[n, "verdict"]) for n in names
             if paper.loc[n, "verdict"] != paper3.loc[n, "verdict"]]
    ratio = counts["test"] / counts.loc["baseline", "test"]
    free = [n for n in names if abs(ratio[n] - 1) < 0.01]
    cost = (f"{listed(free)} test with the baseline's network (what they add trains only); "
            + ", ".join(f"{n} with {ratio[n]:.2f} times the baseline's parameters"
                        for n in names if n not in free) + ".")
    same = [n for n in names if paper.loc[n, "verdict"] == held.loc[n, "verdict"]]
    detected = [n for n in same if paper.loc[n, "verdict"] != "no measurable effect"]
    both = listed([f"{n} ({paper.loc[n, 'verdict']})" for n in detected])
    seeds = ("; ".join(f"{n}: {v3} with three, {v5} with five" for n, v5, v3 in flips)
             + (": the chapters' three-seed verdicts "
                + ("for these do not" if len(flips) > 1 else "for it does not")
                + " hold with five seeds." if flips
                else "every verdict of the paper regime is the same as with five."))
    return ("* **Claims.** " + "; ".join(f"{n}: {v}" for n, v in claims.verdict.items()) + ".\n"
            "* **The held-out benchmark.** The differences to the baseline rank the methods "
            f"with a correlation of {rho_diff:+.2f} between the two benchmarks (exact one-sided "
            f"p = {p_diff:.3f}; five methods, three seeds on the held-out one), and "
            f"{len(same)} of {len(names)} verdicts agree, {len(same) - len(detected)} of them as "
            f"two non-detections. The effects measurable on both benchmarks: {both}. Methods "
            "that share a baseline (API-Net and CIN; MC-Loss and RRA) have correlated "
            "differences, which the p-value does not account for.\n"
            "* **Cost.** " + cost + "\n"
            "* **Three seeds or five.** With the first three seeds only (as in the chapters), "
            + seeds)
