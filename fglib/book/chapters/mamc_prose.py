"""The MAMC chapter's generated prose: the sentences that read its tables out.

Each function takes what the chapter has already computed (its tables, runs and measured values)
and returns Markdown, which the chapter shows as a cell's output; so every number in these
sentences comes from the runs, and the sentences change with them. Nothing here trains or
measures: the measurements on trained weights are in fglib.book.chapters.mamc.

The row names are those of fglib.experiments.regimes (MAMC_ROWS, MAMC_EXTRAS, MAMC_SEARCH) and
of the chapter's part table.
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
import torch

from fglib.book.tables import diff_se, within
from fglib.core.stats import effect
from fglib.models.attention import distinct_parts

SOFTMAX = "OSME P=2, softmax only"
MAMC = "+MAMC"
P3 = "OSME P=3 + MAMC"
GAP = "GAP pooling + MAMC"
RANDOM = "random peaks (control)"
SEARCH_BASELINE = "softmax only (lambda 0)"
PAPER_FORM = "raw f, lambda 0.5"                 # the paper's own MAMC: raw f, lambda 0.5


# -- the search ---------------------------------------------------------------------------------

def failed_settings(search_table: pd.DataFrame) -> list[str]:
    """The MAMC settings of the search table that did not train (its "trained" column)."""
    st = search_table.drop(index=SEARCH_BASELINE)
    return [r for r in st.index if st.loc[r, "trained"] != "yes"]


def loss_scale(at_zero: Mapping[str, torch.Tensor], batch_classes: int, classes: int,
               lam: float = 0.5) -> str:
    """What the paper's weight `lam` adds at f = 0 (`at_zero`: the three MAMC terms there, for
    `batch_classes` classes per batch) to the softmax loss of uniform predictions over
    `classes` classes."""
    total = sum(float(v) for v in at_zero.values())
    return (
        f"At $f = 0$ the three MAMC terms sum to {total:.0f} for $N = {batch_classes}$ (the "
        f"table of set sizes above), so the paper's $\\lambda = {lam:g}$ adds {lam * total:.0f} to a "
        f"softmax loss of $\\log {classes} = {math.log(classes):.1f}$; the sadc term alone "
        "grows like $N \\log N$, as it sums $2(N-1)$ positives for every one of the $2NP$ "
        "anchors, and with raw $f$ every term also grows with $\\lVert f \\rVert$. The "
        "paper's $\\lambda$ belongs to its own $N$ and its own feature scale, and the book "
        "could not find either, nor the paper's learning rate.")


def search_verdict(search_table: pd.DataFrame, chance: float, search: Mapping[str, dict],
                   main: Mapping) -> str:
    """The search's outcome: how many settings fail to train, which one the rule (the best
    top-1) picks and whether the ablation uses it (`main`, the ablation's setting; `search`,
    row -> the options each row of the table trained with), and the weights between which
    normalised f starts to fail."""
    st = search_table.drop(index=SEARCH_BASELINE)
    ok = st[st["trained"] == "yes"]
    best = ok["top-1 (%)"].idxmax()
    broken = failed_settings(search_table)
    nan = [r for r in broken if pd.notna(st.loc[r, "first NaN step"])]
    normalised = {r: search[r]["lam"] for r in st.index if search[r].get("normalize")}
    fails = [lam for r, lam in normalised.items() if r in broken]
    trains = [lam for r, lam in normalised.items() if r not in broken]
    text = (
        f"{len(broken)} of the {len(st)} MAMC settings end below twice the chance level "
        f"({chance:.1f} %), {len(nan)} of them with an overflow to NaN, and the paper's own "
        "form (raw $f$, $\\lambda = 0.5$) "
        + ("is among them" if PAPER_FORM in broken else "is not among them")
        + f"; the rule picks **{best}** ({ok.loc[best, 'top-1 (%)']:.1f} % against the "
        f"softmax-only {search_table.loc[SEARCH_BASELINE, 'top-1 (%)']:.1f} %, one seed "
        "each, a difference within one seed spread: read it as the largest normalised "
        "weight that trains), "
        + ("the setting the ablation above uses (`regimes.MAMC_MAIN`)"
           if search[best] == main else
           "**but the ablation above uses another setting (`regimes.MAMC_MAIN`)**"))
    if fails and trains and min(fails) > max(trains):
        text += (f". Why normalised $f$, whose inner products are bounded, fails at every "
                 f"weight from {min(fails):g} up stays open, and the tenfold grid cannot say "
                 f"where between {max(trains):g} and {min(fails):g} training starts to break")
    return text + "."


# -- the ablation -------------------------------------------------------------------------------

def ablation_summary(tables: Mapping[str, pd.DataFrame], runs: pd.DataFrame) -> str:
    """One bullet per regime (`tables`: regime -> its versus_baseline table; `runs`: the
    ablation's runs with "regime" and "row" columns): what OSME, MAMC on top of it and a third
    attention on top of MAMC change, each with its standard error and verdict."""
    lines = []
    for regime, table in tables.items():
        d_o, s_o = diff_se(table, SOFTMAX)
        d_m, s_m = within(runs, regime, SOFTMAX, MAMC)
        d_3, s_3 = within(runs, regime, MAMC, P3)
        lines.append(
            f"* **{regime}**: OSME alone changes top-1 by {d_o:+.1f} ± {s_o:.1f} "
            f"({effect(d_o, s_o)}); MAMC on top of OSME by {d_m:+.1f} ± {s_m:.1f} "
            f"({effect(d_m, s_m)}); a third attention on top of MAMC by "
            f"{d_3:+.1f} ± {s_3:.1f} ({effect(d_3, s_3)}).")
    return "\n".join(lines)


def _head(variants: pd.DataFrame, runs: pd.DataFrame, rows: list[str]
          ) -> tuple[float, float, float]:
    """(GAP-pooled row's difference to the baseline, the flattened +MAMC row's, the median
    seed-to-seed spread of the main `rows` in the paper regime)."""
    paper = runs[runs.regime == "paper"]
    sd = paper[paper.row.isin(rows)].groupby("row").top1.std().median()
    return variants.loc[GAP, "diff"], variants.loc[MAMC, "diff"], sd


def variants_note(variants: pd.DataFrame, runs: pd.DataFrame, rows: list[str]) -> str:
    """The one-seed variants (`variants`: their versus_baseline table in the paper regime)
    against the seed spread of the main `rows`; the GAP-pooled head against the flattened."""
    gap, vec, sd = _head(variants, runs, rows)
    return (
        f"One seed each, so no verdict: the typical seed-to-seed spread of the main rows "
        f"here is {sd:.1f} points. The GAP-pooled model's {gap:+.1f} against the "
        f"flattened form's {vec:+.1f} "
        + ("is larger than that spread: the flattened form's "
           "$c g^2 d$ weights per attention, fitted on 25 images per class, may cost more "
           "than its spatial information brings (exercise 6 asks for the seeds)."
           if gap - vec > 2 * sd else "is within a few seed spreads."))


def dasc_note(terms: pd.DataFrame, at_zero: Mapping[str, torch.Tensor], lam: float,
              negatives: int) -> str:
    """How far the weighted dasc term moves in training (`terms`: smoothed_terms of the +MAMC
    runs, the term named "λ·dasc"), against its value at f = 0 and against the floor that
    normalised f puts under a term over `negatives` negatives."""
    dasc = terms[terms.term == "λ·dasc"].value
    at0 = lam * float(at_zero["dasc"])
    floor = math.log(1 + negatives * math.exp(-2))
    floor_w = at0 * floor / math.log(1 + negatives)           # all inner products at the floor
    return (
        f"The weighted dasc term stays between {dasc.min():.4f} and {dasc.max():.4f} "
        f"over training, against {at0:.4f} at $f = 0$: it hardly moves. With "
        "normalised $f$ each inner product lies in $[-1, 1]$, so a term "
        f"$\\log(1 + \\sum_k e^{{s_k - s_+}})$ over {negatives} negatives cannot fall below "
        f"$\\log(1 + {negatives} e^{{-2}}) = {floor:.2f}$, against "
        f"$\\log {negatives + 1} = {math.log(1 + negatives):.2f}$ at $f = 0$. That floor, "
        f"weighted like the term, is {floor_w:.4f}, {100 * floor_w / dasc.min():.0f} % of the "
        "smallest value the term reaches: the floor is not what holds it. With normalised "
        "$f$ and no scale (a temperature), the push the term gives the directions of $f$ is "
        "of the order of $\\lambda$, small at the chosen weight, the likelier reason that it "
        "hardly moves; the book's test of MAMC is limited with it (exercise 7 asks which "
        "temperature would let it move).")


# -- what the attentions do ---------------------------------------------------------------------

def _apart(hits: Mapping[str, torch.Tensor], part_table: pd.DataFrame
           ) -> tuple[float, float, float, float, float]:
    """(share of images whose two peaks land on different parts without MAMC, with MAMC, at
    random, the paired difference with - without in points, its standard error)."""
    apart = {row: (distinct_parts(hits[row]) == 2).double() for row in (SOFTMAX, MAMC)}
    d = apart[MAMC] - apart[SOFTMAX]
    se = d.std().item() / math.sqrt(len(d))                   # paired over the images
    rnd = part_table.loc[(RANDOM, 1), "all attentions on different parts"]
    return (apart[SOFTMAX].mean().item(), apart[MAMC].mean().item(), rnd,
            100 * d.mean().item(), 100 * se)


def attention_note(hits: Mapping[str, torch.Tensor], peaks: Mapping[str, dict],
                   part_table: pd.DataFrame) -> str:
    """Whether MAMC sends the two attentions to different parts (`hits`: model -> the part
    each attention's peak lands on per image; `peaks`: model -> attention_peaks' measurement;
    `part_table`: the chapter's table of shares), and how alike the maps and gates are."""
    so, mm, rnd, d, se = _apart(hits, part_table)
    r12 = {row: peaks[row]["map correlation"] for row in (SOFTMAX, MAMC)}
    g12 = {row: peaks[row]["gate cosine"] for row in (SOFTMAX, MAMC)}
    cons = part_table.groupby(level="model").consistency.mean()
    return (
        "With the softmax loss only, the two attentions' peaks land on two different "
        f"parts on {so:.0%} of the images; with MAMC on {mm:.0%}, a difference of "
        f"{d:+.1f} ± {se:.1f} points over the same images ({effect(d, se)}; one model each, "
        f"seed 0). Two peaks at random cells do so on {rnd:.0%}"
        + (": the two attentions peak on the *same* part far more often than chance. "
           if so < rnd / 2 and mm < rnd / 2 else ". ")
        + "Over the locations, $A^1$ and $A^2$ correlate at "
        f"{r12[SOFTMAX]:.2f} without and {r12[MAMC]:.2f} with MAMC (mean over images), and the "
        f"gates $m^1$, $m^2$ themselves have a cosine of {g12[SOFTMAX]:.2f} and "
        f"{g12[MAMC]:.2f}. With $U \\ge 0$ and gates in $(0, 1)$ a high map correlation "
        "follows almost by construction, whatever the gates do; the separation MAMC makes "
        "(below) is in feature space, through $W_3^p$, not in where the attentions look (one "
        f"model each, seed 0). The consistency within a class is {cons[SOFTMAX]:.2f} without "
        f"and {cons[MAMC]:.2f} with MAMC (mean over the attentions; {cons[RANDOM]:.2f} at "
        "random).")


def similarity_note(sims: pd.DataFrame) -> str:
    """How MAMC moves the mean cosine similarity of the sets (`sims`: model -> the mean
    similarity of sasc, sadc, dasc and dadc), and which of its orderings hold."""
    sim_a, sim_m = sims.loc[SOFTMAX], sims.loc[MAMC]
    orders = {"sasc > sadc": sim_m.sasc > sim_m.sadc,
              "sasc > dasc": sim_m.sasc > sim_m.dasc,
              "sadc > dadc": sim_m.sadc > sim_m.dadc,
              "dasc > dadc": sim_m.dasc > sim_m.dadc}
    held = [k for k, v in orders.items() if v]
    failed = [k for k, v in orders.items() if not v]
    return (
        "With MAMC the mean similarity of same-attention features of different classes "
        f"(sadc) moves from {sim_a.sadc:+.2f} to {sim_m.sadc:+.2f}, and that of "
        "different attentions of different classes (dadc) from "
        f"{sim_a.dadc:+.2f} to {sim_m.dadc:+.2f}: "
        "the constraint separates the attentions in feature space. Of its orderings, "
        + (", ".join(held) or "none") + " hold on the test batches"
        + (f", and {', '.join(failed)} does not." if failed else "."))


def norm_note(norms: Mapping[str, float]) -> str:
    """The mean feature norm of each model (`norms`: model -> mean ||f^p||) relative to the
    softmax-only model's."""
    grow = {r: v / norms[SOFTMAX] for r, v in norms.items() if r != SOFTMAX}
    return (
        "Relative to the softmax-only model, $\\lVert f^p \\rVert$ is "
        + ", ".join(f"{v:.2f} times as large with {r}" for r, v in grow.items())
        + (": at the weights that train here, no variant grows its features much."
           if max(grow.values()) < 1.5 else
           ": the raw-$f$ variants grow their features, as the derivation predicts."))


# -- the paper's claim --------------------------------------------------------------------------

def _against(d: float, s: float, claim: float) -> str:
    """One measured difference d ± s read against the paper's claimed gain."""
    if effect(d, s) == "a loss":
        return "a loss, opposite to the claim"
    if effect(d, s) != "a gain":
        return "not reproduced"
    if d + 2 * s >= claim:
        return "a gain of the claimed size is within two standard errors"
    return "a gain, smaller than the claim by more than two standard errors"


def against_the_paper(tables: Mapping[str, pd.DataFrame], runs: pd.DataFrame,
                      paper: Mapping[str, float], search_table: pd.DataFrame,
                      lam: float) -> str:
    """OSME's and MAMC's gains in the paper regime against the paper's claims (`paper`: row ->
    the paper's top-1), the weight `lam` they were tested at, and whether the paper's own form
    trained in the search."""
    claim_osme = paper[SOFTMAX] - paper["baseline"]
    claim_mamc = paper[MAMC] - paper[SOFTMAX]
    d_o, s_o = diff_se(tables["paper"], SOFTMAX)
    d_m, s_m = within(runs, "paper", SOFTMAX, MAMC)
    return (
        f"The paper credits OSME with +{claim_osme:.1f} points over its ResNet-50 and MAMC "
        f"with +{claim_mamc:.1f} more. In the paper regime as the book builds it, OSME "
        f"changes top-1 by {d_o:+.1f} ± {s_o:.1f} ({_against(d_o, s_o, claim_osme)}) and "
        f"MAMC on top of OSME by {d_m:+.1f} ± {s_m:.1f} "
        f"({_against(d_m, s_m, claim_mamc)}). The paper's MAMC is tested here at the weight "
        f"the search chose, $\\lambda = {lam:g}$ with normalised "
        "$f$ (a weight on a differently scaled loss, not comparable with the paper's 0.5); "
        "the paper's own form, raw $f$ at $\\lambda = 0.5$, "
        + ("does not train at all here (the search above)."
           if PAPER_FORM in failed_settings(search_table)
           else "trains here too (the search above)."))


def where_the_claim_holds(tables: Mapping[str, pd.DataFrame], runs: pd.DataFrame,
                          search_table: pd.DataFrame, hits: Mapping[str, torch.Tensor],
                          part_table: pd.DataFrame, sims: pd.DataFrame,
                          variants: pd.DataFrame, rows: list[str]) -> str:
    """The chapter's findings as four bullets: accuracy in each regime, where the attentions
    peak, what MAMC does to the features, and the one-seed GAP-pooled head (the arguments are
    those of the functions above)."""
    parts, verdict_mamc, verdict_osme = [], [], []
    for regime, table in tables.items():
        d_o, s_o = diff_se(table, SOFTMAX)
        d_m, s_m = within(runs, regime, SOFTMAX, MAMC)
        parts.append(f"{regime}: OSME {d_o:+.1f} ± {s_o:.1f} ({effect(d_o, s_o)}), "
                     f"MAMC on top {d_m:+.1f} ± {s_m:.1f} ({effect(d_m, s_m)})")
        verdict_osme.append(effect(d_o, s_o))
        verdict_mamc.append(effect(d_m, s_m))
    so, mm, rnd, _, _ = _apart(hits, part_table)
    sim_a, sim_m = sims.loc[SOFTMAX], sims.loc[MAMC]
    gap, vec, sd = _head(variants, runs, rows)
    return (
        "* **Accuracy.** "
        + ("OSME's and MAMC's claimed gains are not reproduced at the book's scale: "
           if "a gain" not in verdict_mamc + verdict_osme else "At the book's scale: ")
        + "; ".join(parts) + ". "
        + ("In neither regime does MAMC add a measurable gain to OSME. "
           if "a gain" not in verdict_mamc else "")
        + "The paper's own MAMC (raw $f$, $\\lambda = 0.5$) "
        + ("does not train here at all. " if PAPER_FORM in failed_settings(search_table)
           else "trains here. ")
        + "\n* **Attention.** The two attentions peak on different parts on "
        f"{so:.0%} (softmax only) and {mm:.0%} (MAMC) of the test images, against "
        f"{rnd:.0%} for random peaks"
        + (": MAMC does not send them to different parts here." if mm < rnd else ".")
        + "\n* **Features.** "
        + ("MAMC does reshape the part features: "
           if sim_m.sadc - sim_a.sadc > 0.1 and sim_a.dadc - sim_m.dadc > 0.1
           else "MAMC barely moves the part features: ")
        + "same-attention features of different classes move from "
        f"{sim_a.sadc:+.2f} to {sim_m.sadc:+.2f} in cosine and features of different "
        f"attentions from {sim_a.dadc:+.2f} to {sim_m.dadc:+.2f}."
        + "\n* **The head.** One seed with global average pooling in place of the "
        f"flattened map gave {gap:+.1f} against {vec:+.1f}"
        + (": part of OSME's loss may be its flattened head on 25 images per class, which "
           "the book has not yet tested with seeds (exercise 6)." if gap - vec > 2 * sd
           else ", within a few seed spreads (exercise 6 asks for the seeds)."))
