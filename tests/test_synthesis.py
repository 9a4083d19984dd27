"""The closing chapter's reading of its tables (fglib.book.synthesis), worked by hand."""
import pandas as pd
import pytest

from fglib.book.synthesis import (CLAIMS, claim_verdict, claims_table, discussion, listed,
                                  synthesis, verdict_groups)

NAMES = {"mcloss": "MC", "apinet": "API", "cin": "CIN", "mamc": "MAMC", "rra": "RRA"}


@pytest.mark.parametrize("d,se,claim,word", [
    (3.0, 0.5, 2.6, "reproduced"),                        # a gain, the claim within 2 se
    (1.2, 0.4, 2.6, "a smaller gain than claimed"),       # a gain, 1.2 + 0.8 < 2.6
    (0.5, 1.0, 2.0, "inconclusive (0 and the claim within 2 se)"),
    (0.1, 0.3, 4.5, "not reproduced (no measurable effect)"),
    (-2.0, 0.5, 2.0, "not reproduced (a loss)"),
    (1.0, 0.2, None, "no claimed gain (ours: a gain)"),
])
def test_claim_verdicts_by_hand(d, se, claim, word):
    assert claim_verdict(d, se, claim) == word


def table(rows):
    """A `compared`-like table from {name: (diff, se)}, with its verdict by the 2-se rule."""
    out = {}
    for n, (d, se) in rows.items():
        verdict = "no measurable effect" if abs(d) <= 2 * se else ("a gain" if d > 0 else "a loss")
        out[n] = {"diff": d, "se": se, "Δ vs baseline": f"{d:+.1f} ± {se:.1f}", "verdict": verdict}
    return pd.DataFrame(out).T


PAPER = table({"MC": (0.0, 0.4), "API": (0.3, 0.5), "CIN": (1.2, 0.4), "MAMC": (-3.0, 0.6),
               "RRA": (0.9, 0.3)})
SCRATCH = table({"MC": (-1.4, 0.4), "API": (0.1, 0.5), "CIN": (0.2, 0.4), "MAMC": (-2.0, 0.5),
                 "RRA": (0.9, 0.3)})
HELD = table({"MC": (0.1, 0.5), "API": (0.0, 0.5), "CIN": (1.5, 0.5), "MAMC": (-0.5, 0.6),
              "RRA": (0.2, 0.6)})


def test_groups_and_lists():
    g = verdict_groups(PAPER)
    assert g == {"a gain": ["CIN", "RRA"], "no measurable effect": ["MC", "API"], "a loss": ["MAMC"]}
    assert listed([]) == "none" and listed(["a", "b"]) == "a, b"


def test_claims_table_judges_each_claim_in_its_own_regime():
    t = claims_table(PAPER, SCRATCH, NAMES)
    assert t.loc["MC", "claimed for"] == "from scratch"
    assert t.loc["MC", "verdict"] == "not reproduced (a loss)"          # judged on SCRATCH
    assert t.loc["CIN", "verdict"] == "a smaller gain than claimed"     # 1.2 + 0.8 < 2.6
    assert t.loc["RRA", "verdict"] == "a smaller gain than claimed"     # 0.9 + 0.6 < 2.0
    assert t.loc["API", "claimed"] == "—" and t.loc["RRA", "claimed"] == "≤ +2.0"
    assert set(t.index) == {NAMES[m] for m in CLAIMS}


def test_synthesis_and_discussion_say_what_the_tables_say():
    claims = claims_table(PAPER, SCRATCH, NAMES)
    change = pd.DataFrame({"verdict, untuned": PAPER.verdict,
                           "verdict, tuned": PAPER.verdict.replace({"a loss": "no measurable effect"})})
    text = synthesis(PAPER, SCRATCH, HELD, claims, change)
    assert text.startswith("2 of the five methods gain over the baseline on their own batches "
                           "in the paper regime (CIN, RRA); on the held-out benchmark too: CIN; "
                           "on the main benchmark only: RRA.")
    only_cin = PAPER.assign(verdict=PAPER.verdict.where(PAPER.index != "RRA", "a loss"))
    assert synthesis(only_cin, SCRATCH, HELD, claims).startswith(
        "1 of the five methods gains over the baseline on its own batches in the paper regime "
        "(CIN), and on the held-out benchmark too.")
    only_rra = PAPER.assign(verdict=PAPER.verdict.where(PAPER.index != "CIN", "a loss"))
    assert synthesis(only_rra, SCRATCH, HELD, claims).startswith(
        "1 of the five methods gains over the baseline on its own batches in the paper regime "
        "(RRA), but not on the held-out benchmark.")
    assert "depends on the regime for 2 of 5 (MC, CIN)" in text
    assert "a loss appears somewhere for MAMC, MC" in text
    assert "the verdict changes for MAMC" in text
    counts = pd.DataFrame({"training": [100.0, 100.0, 150.0, 120.0, 300.0, 200.0],
                           "test": [100.0, 100.0, 100.0, 120.0, 300.0, 200.0]},
                          index=["baseline", "MC", "API", "CIN", "MAMC", "RRA"])
    three = table({"MC": (0.0, 0.4), "API": (0.3, 0.5), "CIN": (0.6, 0.4), "MAMC": (-3.0, 0.6),
                   "RRA": (0.9, 0.3)})
    bullets = discussion(PAPER, three, HELD, claims, counts, 0.7, 0.117)
    assert "MC, API test with the baseline's network" in bullets
    assert "CIN with 1.20 times" in bullets and "RRA with 2.00 times" in bullets
    assert "CIN: no measurable effect with three, a gain with five" in bullets
    assert "3 of 5 verdicts agree, 2 of them as two non-detections" in bullets
    assert "measurable on both benchmarks: CIN (a gain)" in bullets
