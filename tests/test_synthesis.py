"""The closing chapter's family (fglib.book.closing) and its reading (fglib.book.synthesis),
worked by hand on small made-up families."""
import math

import numpy as np
import pandas as pd
import pytest

from fglib.book import closing
from fglib.book.synthesis import discussion, listed, synthesis, verdict_groups
from fglib.core.verdict import Verdict


def v(mean, low, high, word, n=20):
    return Verdict(n=n, mean=mean, low=low, high=high, p=0.01, p_equivalence=0.01, mde=0.5,
                   test="paired t", margin=1.0, p_holm=0.02, p_equivalence_holm=0.02, word=word)


FAMILY = {
    ("mcloss", "paper", "baseline"): v(-0.1, -0.3, 0.1, "no effect"),
    ("mcloss", "paper", "L_dis alone"): v(-0.1, -0.3, 0.1, "no effect"),
    ("apinet", "paper", "baseline"): v(-0.4, -0.7, -0.1, "no effect"),
    ("cin", "paper", "baseline"): v(1.2, 0.8, 1.6, "a gain"),
    ("cin", "paper", "W = I"): v(0.2, -0.1, 0.5, "no effect"),
    ("mamc", "paper", "baseline"): v(-1.4, -1.8, -1.0, "a loss"),
    ("mamc", "paper", "OSME alone"): v(0.2, -0.1, 0.6, "no effect"),
    ("mamc", "paper", "GAP head"): v(0.4, 0.0, 0.7, "inconclusive"),
    ("rra", "paper", "baseline"): v(0.6, 0.3, 0.9, "a gain"),
    ("rra", "paper", "whole image"): v(0.5, 0.2, 0.8, "a gain"),
    **{(m, "from scratch", "baseline"): v(d, d - 1, d + 1, "inconclusive", n=5)
       for m, d in (("mcloss", -1.2), ("apinet", 0.7), ("cin", 1.1), ("mamc", -4.4),
                    ("rra", -0.1))},
    **{(m, "held-out", "baseline"): v(d, d - 3, d + 3, "inconclusive", n=5)
       for m, d in (("mcloss", 0.1), ("apinet", 1.4), ("cin", 3.1), ("mamc", -4.2),
                    ("rra", -1.4))},
}


def test_groups_list_every_word():
    g = verdict_groups(FAMILY)
    assert g == {"a gain": ["CIN", "RRA"], "a loss": ["OSME + MAMC"],
                 "no effect": ["MC-Loss", "API-Net"], "inconclusive": []}
    assert verdict_groups(FAMILY, "from scratch")["inconclusive"] == list(closing.NAMES.values())
    assert listed([]) == "none" and listed(["a", "b"]) == "a, b"


def test_claims_are_judged_in_their_own_cell_by_the_verdict_function():
    t = closing.claims_table(FAMILY)
    assert t.loc["MC-Loss", "claimed for"] == "from scratch"
    assert t.loc["MC-Loss", "ours"] == "-1.2 [-2.2, -0.2]"           # the from-scratch cell
    assert t.loc["MC-Loss", "verdict"] == "claim excluded"            # no gain, 13.7 above
    assert t.loc["CIN", "verdict"] == "smaller than claimed"          # a gain, 2.6 above 1.6
    assert t.loc["RRA", "verdict"] == "smaller than claimed"          # a gain, 2.0 above 0.9
    assert t.loc["OSME + MAMC", "verdict"] == "claim excluded"
    assert t.loc["API-Net", "verdict"] == "no claimed gain (ours: no effect)"
    assert t.loc["API-Net", "claimed"] == "—" and t.loc["RRA", "claimed"] == "≤ +2.0"


def test_control_sentences_attribute_a_gain_only_when_it_holds_against_the_control():
    cin = closing.control_sentence("cin", FAMILY)
    assert cin.startswith("CIN vs its baseline +1.2 [+0.8, +1.6] (a gain); vs W = I")
    assert "not shown to belong to the paper's idea" in cin and "SCI's attention and CCI" in cin
    rra = closing.control_sentence("rra", FAMILY)
    assert "the gain belongs to the paper's idea: it holds against the control too" in rra
    assert "its baseline on the same balanced batches" in closing.control_sentence("apinet",
                                                                                   FAMILY)
    mamc = closing.control_sentence("mamc", FAMILY)
    assert mamc.count("vs ") == 3 and "OSME alone" in mamc and "GAP head" in mamc


def test_synthesis_and_discussion_say_what_the_family_says():
    claims = closing.claims_table(FAMILY)
    text = synthesis(FAMILY, claims)
    assert text.startswith("In the tuned paper regime (20 paired seeds per method), "
                           "against the baseline on the same batches: gains for CIN, RRA; "
                           "losses for OSME + MAMC; no effect (equivalent within ±1 point) "
                           "for MC-Loss, API-Net; inconclusive for none.")
    assert ("the gain belongs to the paper's idea for RRA (vs whole image: a gain); it is not "
            "shown to for CIN (vs W = I: no effect)") in text
    assert "a gain smaller than claimed for CIN, RRA" in text
    assert "claim excluded by our interval for MC-Loss, OSME + MAMC" in text
    assert "Cells of 5 seeds (from scratch, held-out) cannot reach" in text
    counts = pd.DataFrame({"training": [100.0, 100.0, 150.0, 120.0, 300.0, 200.0],
                           "test": [100.0, 100.0, 100.0, 120.0, 300.0, 200.0]},
                          index=["baseline", *closing.NAMES.values()])
    bullets = discussion(FAMILY, claims, counts, (0.7, 0.1, 1.0))
    assert "MC-Loss, API-Net test with the baseline's network" in bullets
    assert "CIN with 1.20 times" in bullets and "RRA with 2.00 times" in bullets
    # held-out signs +, +, +, -, - against paper -, -, +, -, +: CIN and MAMC agree
    assert "same sign as the tuned main benchmark's for 2 of 5 methods (CIN, OSME + MAMC)" \
        in bullets
    assert "rho = +0.70, bootstrap 95 % interval [+0.10, +1.00]" in bullets
    assert "carries over beyond" in bullets
    assert "not shown to carry over" in discussion(FAMILY, claims, counts, (0.7, -0.2, 1.0))


def runs_frame():
    """Two methods' runs in one cell: a baseline, the method, a control; seeds out of order."""
    rows = []
    for m, ctl in (("cin", "W = I"), ("rra", "whole image")):
        for s in (2, 0, 1, 3, 4, 5):
            base = 70.0 + s
            for kind, top in (("baseline", base), ("method", base + 1 + 0.1 * s),
                              (ctl, base + 0.5)):
                rows.append({"cell": "paper", "method": m, "kind": kind, "seed": s,
                             "top1": top, "hard_top1": top - 10, "within_family_errors": 90.0})
    return pd.DataFrame(rows)


def test_pairs_are_by_seed_and_the_family_is_corrected_together():
    runs = runs_frame()
    p = closing.pairs(runs)
    assert set(p) == {("cin", "paper", "baseline"), ("cin", "paper", "W = I"),
                      ("rra", "paper", "baseline"), ("rra", "paper", "whole image")}
    a, b = p[("cin", "paper", "baseline")]
    assert a == [70.0, 71.0, 72.0, 73.0, 74.0, 75.0]                  # seed order
    assert np.allclose(np.subtract(b, a), [1.0 + 0.1 * s for s in range(6)])
    fam = closing.closing_family(runs)
    v = fam[("cin", "paper", "baseline")]
    assert v.n == 6 and v.mean == pytest.approx(1.25) and v.p == pytest.approx(2 / 64)
    assert v.p_holm == pytest.approx(min(1.0, 4 * 2 / 64))           # four equal p-values
    assert v.word == "inconclusive"                                   # 0.125 > 0.05
    t = closing.family_table(fam)
    assert list(t.columns) == ["n", "Δ", "95 % CI", "p", "p (Holm)", "equivalent p (Holm)",
                               "MDE", "test", "verdict"]
    assert t.loc[("CIN", "paper regime, tuned", "vs W = I"), "Δ"] == "+0.8"
    dropped = runs[~((runs.method == "cin") & (runs.kind == "method") & (runs.seed == 3))]
    with pytest.raises(ValueError, match=r"seeds \[3\] are on one side only"):
        closing.pairs(dropped)


def test_the_mde_is_infinite_where_sign_flips_cannot_reach_the_level():
    fam = closing.closing_family(runs_frame()[lambda r: r.seed < 5])
    assert all(math.isinf(x.mde) for x in fam.values())               # 2 / 32 > 0.05 / 4


def test_synthesis_leaves_out_an_empty_list_of_unattributed_gains():
    fam = {**FAMILY, ("cin", "paper", "baseline"): v(0.1, -0.2, 0.4, "no effect")}
    text = synthesis(fam, closing.claims_table(fam))
    assert "belongs to the paper's idea for RRA (vs whole image: a gain)." in text
    assert "not shown to" not in text
