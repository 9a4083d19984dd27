"""The closing chapter's family of verdicts: every method x cell (the tuned paper regime, from
scratch, the held-out benchmark) against the baseline on its own batches, and every method
against its decisive control, all read by the one verdict function (fglib.core.verdict) and
Holm-corrected together. The method chapters quote the same verdicts (`closing_sentence`), so
no chapter can disagree with the closing one.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np
import pandas as pd

from fglib.core import verdict
from fglib.core.verdict import Verdict, interval, reading, signed
from fglib.book.tables import hard_top1
from fglib.experiments import regimes
from fglib.experiments.runner import collect

NAMES = {"mcloss": "MC-Loss", "apinet": "API-Net", "cin": "CIN", "mamc": "OSME + MAMC",
         "rra": "RRA"}
CELL_NAMES = {"paper": "paper regime, tuned", "from scratch": "from scratch",
              "held-out": "held-out benchmark"}
# method: (claimed gain in top-1 points or None, what the paper reports, the cell of the claim);
# from single transcriptions of the papers' tables (shared/papers.md).
CLAIMS = {
    "mcloss": (59.41 - 45.70, "R-18, scratch: 45.70 -> 59.41", "from scratch"),
    "apinet": (None, "R-50: 87.7, no baseline row", "paper"),
    "cin": (87.5 - 84.9, "R-50: 84.9 -> 87.5", "paper"),
    "mamc": (86.2 - 81.7, "R-50: 81.7 -> 86.2", "paper"),
    "rra": (2.0, '"up to 2 %", no table', "paper"),
}
# What each control takes out of the method (the question "vs its control" answers).
CONTROL_IDEA = {"L_dis alone": "the diversity term L_div", "W = I": "SCI's attention and CCI",
                "OSME alone": "the MAMC terms", "GAP head": "the flattened Vec(S) head",
                "whole image": "the patch the proposals choose"}


def split_runs(jobs: list[tuple[str, int, object]]) -> pd.DataFrame:
    """collect(jobs) with the variant "cell | method | kind" split into three columns."""
    runs, _ = collect(jobs)
    runs[["cell", "method", "kind"]] = runs.variant.str.split(" | ", expand=True, regex=False)
    return runs


def runs_with_hard_top1(jobs: list[tuple[str, int, object]]) -> pd.DataFrame:
    """split_runs(jobs) with top-1 on the classes of the hard families (hard_top1)."""
    runs = split_runs(jobs)
    runs["hard_top1"] = hard_top1(runs, {v: c for v, _, c in jobs})
    return runs


def closing_runs() -> pd.DataFrame:
    """Every run of the closing family (regimes.closing_jobs), read from the store, with
    top-1 on the hard families."""
    return runs_with_hard_top1(regimes.closing_jobs())


def pairs(runs: pd.DataFrame) -> dict[tuple[str, str, str], tuple[list, list]]:
    """{(method, cell, against): (against's top-1, the method's top-1)} paired by seed;
    against is "baseline" or the name of a control."""
    out = {}
    for (cell, m), g in runs.groupby(["cell", "method"], sort=False):
        method = g[g.kind == "method"].set_index("seed").top1
        for kind in [k for k in dict.fromkeys(g.kind) if k != "method"]:
            other = g[g.kind == kind].set_index("seed").top1
            out[(m, cell, kind)] = verdict.aligned(other, method,
                                                   f"{m}, {cell}, vs {kind}")
    return out


def closing_family(runs: pd.DataFrame) -> dict[tuple[str, str, str], Verdict]:
    """The verdict function over every pair of `pairs(runs)`, Holm-corrected as one family."""
    return verdict.family(pairs(runs))


@lru_cache(maxsize=1)
def _verdicts() -> dict[tuple[str, str, str], Verdict]:
    return closing_family(split_runs(regimes.closing_jobs()))


def _p4(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def family_table(verdicts: Mapping[tuple[str, str, str], Verdict]) -> pd.DataFrame:
    """One row per verdict of the family: n, mean difference, its 95 % interval, the raw and
    Holm-adjusted p, the Holm-adjusted equivalence p (within ±margin), the MDE, the word."""
    rows = {}
    for (m, cell, against), v in verdicts.items():
        rows[(NAMES[m], CELL_NAMES[cell], f"vs {against}")] = {
            "n": v.n, "Δ": signed(v.mean), "95 % CI": f"[{signed(v.low)}, {signed(v.high)}]",
            "p": _p4(v.p), "p (Holm)": _p4(v.p_holm),
            "equivalent p (Holm)": _p4(v.p_equivalence_holm),
            "MDE": "∞" if np.isinf(v.mde) else f"{v.mde:.1f}", "test": v.test,
            "verdict": v.word}
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index.names = ["method", "cell", "against"]
    return t


def compared(runs: pd.DataFrame, verdicts: Mapping, cell: str) -> pd.DataFrame:
    """One row per method in one cell: top-1 (mean ± sd over seeds), the baseline's, top-1 on
    the hard families, the share of errors inside the true family, and the family's verdict on
    the difference to the baseline."""
    rows = {}
    for m, name in NAMES.items():
        g = runs[(runs.cell == cell) & (runs.method == m)]
        mine, base = g[g.kind == "method"], g[g.kind == "baseline"]
        v = verdicts[(m, cell, "baseline")]
        rows[name] = {"top-1 (%)": f"{mine.top1.mean():.1f} ± {mine.top1.std():.1f}",
                      "baseline": f"{base.top1.mean():.1f} ± {base.top1.std():.1f}",
                      "seeds": v.n, "hard families": round(mine.hard_top1.mean(), 1),
                      "errors in family (%)": round(mine.within_family_errors.mean()),
                      "Δ [95 % CI]": interval(v), "verdict": v.word}
    return pd.DataFrame.from_dict(rows, orient="index")


def controls_table(runs: pd.DataFrame, verdicts: Mapping, cell: str = "paper") -> pd.DataFrame:
    """Each method against its decisive control(s) in one cell: the control's top-1, what the
    control takes out, the difference method - control and its verdict (API-Net: its
    balanced-sampler baseline, the row of `compared`)."""
    rows = {}
    for m, name in NAMES.items():
        g = runs[(runs.cell == cell) & (runs.method == m)]
        for (mm, c, against), v in verdicts.items():
            if mm != m or c != cell or (against == "baseline" and regimes.CONTROLS[m]):
                continue
            ctl = g[g.kind == against].top1
            rows[(name, against)] = {
                "control's top-1 (%)": f"{ctl.mean():.1f} ± {ctl.std():.1f}",
                "what it takes out": CONTROL_IDEA.get(against, "the method (balanced batches kept)"),
                "Δ method - control [95 % CI]": interval(v), "verdict": v.word}
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index.names = ["method", "control"]
    return t


def control_sentence(m: str, verdicts: Mapping) -> str:
    """Whether the method's gain in the paper regime belongs to the paper's idea or to what its
    control isolates, from the two verdicts (vs baseline, vs control)."""
    name, vb = NAMES[m], verdicts[(m, "paper", "baseline")]
    ctl = list(regimes.CONTROLS[m])
    if not ctl:
        return (f"{name}'s control is its baseline on the same balanced batches: "
                f"{reading(vb)}.")
    parts = []
    for c in ctl:
        vc = verdicts[(m, "paper", c)]
        if vb.word == "a gain" and vc.word == "a gain":
            owner = "the gain belongs to the paper's idea: it holds against the control too"
        elif vb.word == "a gain":
            owner = (f"the gain is not shown to belong to the paper's idea: against the control "
                     f"({CONTROL_IDEA[c]} taken out) it is {vc.word}")
        elif vc.word == "a loss" or vb.word == "a loss":
            owner = f"against the control ({CONTROL_IDEA[c]} taken out) {vc.word}"
        else:
            owner = f"no gain to attribute; against the control: {vc.word}"
        parts.append(f"vs {c} {interval(vc)}: {owner}")
    return f"{name} vs its baseline {interval(vb)} ({vb.word}); " + "; ".join(parts) + "."


def claim_row(m: str, verdicts: Mapping) -> dict:
    claim, text, cell = CLAIMS[m]
    v = verdicts[(m, cell, "baseline")]
    return {"claimed": "—" if claim is None else (f"≤ {claim:+.1f}" if m == "rra"
                                                   else f"{claim:+.1f}"),
            "paper (CUB)": text, "claimed for": CELL_NAMES[cell], "ours": interval(v),
            "verdict": ("no claimed gain (ours: " + v.word + ")" if claim is None
                        else verdict.against_claim(v, claim))}


def claims_table(verdicts: Mapping) -> pd.DataFrame:
    """One row per paper: its claim, ours in the cell of the claim, the claim's verdict
    (fglib.core.verdict.against_claim: reproduced, smaller than claimed, claim excluded,
    inconclusive)."""
    return pd.DataFrame.from_dict({NAMES[m]: claim_row(m, verdicts) for m in NAMES},
                                  orient="index")


def closing_sentence(m: str, verdicts: Mapping | None = None) -> str:
    """The closing chapter's verdicts on one method, as a paragraph for its own chapter."""
    verdicts = _verdicts() if verdicts is None else verdicts
    name, k = NAMES[m], len(verdicts)
    cells = "; ".join(f"{CELL_NAMES[c]} ({verdicts[(m, c, 'baseline')].n} seeds) "
                      f"{interval(verdicts[(m, c, 'baseline')])}, "
                      f"{reading(verdicts[(m, c, 'baseline')])}" for c in regimes.CELLS)
    row = claim_row(m, verdicts)
    claim = ("The paper reports no baseline row to compare with." if CLAIMS[m][0] is None else
             f"Against the paper's claim ({row['claimed']} points, {CLAIMS[m][1]}; "
             f"{row['claimed for']}): **{row['verdict']}**.")
    return (f"**The closing chapter's verdicts on {name}** (one family of {k} verdicts, "
            f"Holm-corrected together; top-1 points over the baseline on the same batches, "
            f"95 % intervals): {cells}. {control_sentence(m, verdicts)} {claim}")
