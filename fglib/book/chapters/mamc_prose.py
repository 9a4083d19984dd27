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

from fglib.book.tables import within_verdict
from fglib.core.verdict import Verdict, family, interval, reading, signed, smallest_p
from fglib.models.attention import distinct_parts

SOFTMAX = "OSME P=2, softmax only"
MAMC = "+MAMC"
P3 = "OSME P=3 + MAMC"
GAP = "GAP pooling + MAMC"
RANDOM = "random peaks (control)"
SEARCH_BASELINE = "softmax only (lambda 0)"
PAPER_FORM = "raw f, lambda 0.5"                 # the paper's own MAMC: raw f, lambda 0.5


# -- the verdict function's rows, in words ------------------------------------------------------

def _row(table: pd.DataFrame, row: str) -> str:
    """A row of a versus_baseline table: its paired difference, 95 % interval and the verdict
    function's word with the row's Holm p over the table's family."""
    t = table.loc[row]
    return (f"{signed(t['diff'])} [{signed(t['low'])}, {signed(t['high'])}] points, "
            f"{t['verdict']} (Holm p = {t['p (Holm)']:.3f})")


def _pair(v: Verdict) -> str:
    """One verdict (a family of one): its difference, 95 % interval and reading."""
    return f"{interval(v)} points, {reading(v)}"


def _seeds(runs: pd.DataFrame, regime: str, rows: list[str]) -> int:
    """The fewest seeds of `rows` in `regime`."""
    r = runs[(runs.regime == regime) & runs.row.isin(rows)]
    return int(r.groupby("row").seed.nunique().min())


def _why_inconclusive(n: int) -> str:
    """Why every difference on n <= 5 paired seeds is "inconclusive", whatever its size."""
    return (f"with {n} paired seeds the exact sign-flip test cannot give a p-value below "
            f"2 / 2^{n} = {smallest_p(n):.3f}, so no difference can be called a gain or a loss "
            "at the 5 % level whatever its size: read these rows by their intervals")


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
        "each, so no verdict on the difference: read it as the largest normalised weight "
        "that trains), "
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
    attention on top of MAMC change, each as the verdict function's paired difference, 95 %
    interval and word (OSME from the table's family, the other two each a family of one)."""
    lines, words, fewest = [], [], []
    for regime, table in tables.items():
        v_m = within_verdict(runs, regime, SOFTMAX, MAMC)
        v_3 = within_verdict(runs, regime, MAMC, P3)
        words += [table.loc[SOFTMAX, "verdict"], v_m.word, v_3.word]
        fewest.append(_seeds(runs, regime, [SOFTMAX, MAMC, P3, "baseline"]))
        lines.append(
            f"* **{regime}**: OSME alone changes top-1 by {_row(table, SOFTMAX)}; MAMC on "
            f"top of OSME by {_pair(v_m)}; a third attention on top of MAMC by "
            f"{_pair(v_3)}.")
    n = min(fewest)
    if n <= 5 and set(words) == {"inconclusive"}:
        lines.append(f"\nEvery verdict here is \"inconclusive\": {_why_inconclusive(n)}. "
                     "The verdicts on OSME and MAMC are the closing chapter's, on 20 paired "
                     "seeds (*Ours and the paper's* below).")
    return "\n".join(lines)


def _head(runs: pd.DataFrame, rows: list[str]) -> tuple[float, float, float]:
    """(GAP-pooled row's top-1, the flattened +MAMC row's top-1 with the same seed, the median
    seed-to-seed sd of the main `rows` in the paper regime)."""
    paper = runs[runs.regime == "paper"]
    sd = paper[paper.row.isin(rows)].groupby("row").top1.std().median()
    gap = paper[paper.row == GAP]
    seed = int(gap.seed.iloc[0])
    vec = paper[(paper.row == MAMC) & (paper.seed == seed)]
    return float(gap.top1.iloc[0]), float(vec.top1.iloc[0]), float(sd)


def variants_note(variants: pd.DataFrame, runs: pd.DataFrame, rows: list[str]) -> str:
    """The one-seed variants (`variants`: their versus_baseline table in the paper regime,
    each against the baseline's run of the same seed) beside the seed spread of the main
    `rows`; the GAP-pooled head against the flattened one of the same seed."""
    gap, vec, sd = _head(runs, rows)
    return (
        "One seed each, so no verdict (the verdict function needs two or more paired seeds); "
        f"the typical seed-to-seed standard deviation of the main rows here is {sd:.1f} "
        f"points. The GAP-pooled model reaches {gap:.1f} % "
        f"({signed(variants.loc[GAP, 'diff'])} against the baseline's run of the same "
        f"seed) and the flattened form {vec:.1f} % with that seed "
        f"({signed(gap - vec)} points between them): a lead on the flattened "
        "form's $c g^2 d$ weights per attention, fitted on 25 images per class, that one "
        "seed cannot settle; the closing chapter compares OSME + MAMC with the GAP head on "
        "20 paired seeds (*Ours and the paper's* below).")


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
           ) -> tuple[float, float, float, Verdict]:
    """(share of images whose two peaks land on different parts without MAMC, with MAMC, at
    random, the verdict function on with - without in points, paired over the images)."""
    apart = {row: (distinct_parts(hits[row]) == 2).double() for row in (SOFTMAX, MAMC)}
    v = family({MAMC: ((100 * apart[SOFTMAX]).tolist(), (100 * apart[MAMC]).tolist())})[MAMC]
    rnd = part_table.loc[(RANDOM, 1), "all attentions on different parts"]
    return apart[SOFTMAX].mean().item(), apart[MAMC].mean().item(), rnd, v


def attention_note(hits: Mapping[str, torch.Tensor], peaks: Mapping[str, dict],
                   part_table: pd.DataFrame) -> str:
    """Whether MAMC sends the two attentions to different parts (`hits`: model -> the part
    each attention's peak lands on per image; `peaks`: model -> attention_peaks' measurement;
    `part_table`: the chapter's table of shares), and how alike the maps and gates are."""
    so, mm, rnd, v = _apart(hits, part_table)
    r12 = {row: peaks[row]["map correlation"] for row in (SOFTMAX, MAMC)}
    g12 = {row: peaks[row]["gate cosine"] for row in (SOFTMAX, MAMC)}
    cons = part_table.groupby(level="model").consistency.mean()
    return (
        "With the softmax loss only, the two attentions' peaks land on two different "
        f"parts on {so:.0%} of the images; with MAMC on {mm:.0%}, a difference of "
        f"{interval(v)} points paired over the same {v.n} images (one model each, seed 0: "
        "a verdict on these two models, not on the method), which the verdict function "
        f"reads as {reading(v).replace('the seeds detect', 'the images detect')}. "
        f"Two peaks at random cells do so on {rnd:.0%}"
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

def against_the_paper(tables: Mapping[str, pd.DataFrame], runs: pd.DataFrame,
                      paper: Mapping[str, float], search_table: pd.DataFrame,
                      lam: float) -> str:
    """OSME's and MAMC's differences in the paper regime beside the paper's claims (`paper`:
    row -> the paper's top-1), the weight `lam` they were tested at, and whether the paper's own
    form trained in the search. The verdict on the claims is the closing chapter's, not this
    ablation's (three seeds)."""
    claim_osme = paper[SOFTMAX] - paper["baseline"]
    claim_mamc = paper[MAMC] - paper[SOFTMAX]
    v_m = within_verdict(runs, "paper", SOFTMAX, MAMC)
    n = _seeds(runs, "paper", [SOFTMAX, MAMC, "baseline"])
    words = {tables["paper"].loc[SOFTMAX, "verdict"], v_m.word}
    return (
        f"The paper credits OSME with +{claim_osme:.1f} points over its ResNet-50 and MAMC "
        f"with +{claim_mamc:.1f} more. In the paper regime as the book builds it, OSME "
        f"changes top-1 by {_row(tables['paper'], SOFTMAX)} and MAMC on top of OSME by "
        f"{_pair(v_m)}, {n} paired seeds each"
        + (f": {_why_inconclusive(n)}. " if n <= 5 and words == {"inconclusive"} else ". ")
        + "The verdicts on the paper's claims are the closing chapter's, on 20 paired seeds "
        "(the paragraph below). The paper's MAMC is tested here at the weight "
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
    """The chapter's findings as four bullets: accuracy in each regime (the verdict function's
    intervals and words; the verdicts on the claims are the closing chapter's), where the
    attentions peak, what MAMC does to the features, and the one-seed GAP-pooled head (the
    arguments are those of the functions above)."""
    parts, words, fewest = [], [], []
    for regime, table in tables.items():
        v_m = within_verdict(runs, regime, SOFTMAX, MAMC)
        parts.append(f"{regime}: OSME {_row(table, SOFTMAX)}, MAMC on top {_pair(v_m)}")
        words += [table.loc[SOFTMAX, "verdict"], v_m.word]
        fewest.append(_seeds(runs, regime, [SOFTMAX, MAMC, "baseline"]))
    n = min(fewest)
    so, mm, rnd, _ = _apart(hits, part_table)
    sim_a, sim_m = sims.loc[SOFTMAX], sims.loc[MAMC]
    gap, vec, sd = _head(runs, rows)
    return (
        f"* **Accuracy.** In the ablation ({n} seeds per row): " + "; ".join(parts) + ". "
        + (f"All of these are inconclusive by construction: {_why_inconclusive(n)}. "
           if n <= 5 and set(words) == {"inconclusive"} else "")
        + "The verdict on OSME + MAMC's claimed gain is the closing chapter's, on 20 "
        "paired seeds, against the baseline, with OSME alone and the GAP head as controls "
        "(*Ours and the paper's* above). The paper's own MAMC (raw $f$, $\\lambda = 0.5$) "
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
        f"flattened map gave {gap:.1f} % ({signed(variants.loc[GAP, 'diff'])} against the "
        f"baseline's run of the same seed) against {vec:.1f} % with the same seed "
        f"({signed(gap - vec)} points; the main rows' seed-to-seed sd is {sd:.1f}): one seed, "
        "no verdict; exercise 6 asks for the seeds, and the closing chapter compares the two "
        "heads on 20.")
