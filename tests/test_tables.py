"""The chapters' shared tables (fglib.book.tables) against hand-computed values."""
import math

import pandas as pd
import pytest

from fglib.book import tables


def ablation_runs():
    rows = []
    for regime, shift in (("paper", 0.0), ("from scratch", -10.0)):
        for row, gain in (("baseline", 0.0), ("+A", 2.0), ("+B", -1.0)):
            for seed, noise in enumerate((-0.5, 0.0, 0.5)):
                rows.append({"variant": f"{regime} | {row}", "seed": seed, "key": f"{regime}{row}{seed}",
                             "top1": 80 + shift + gain + noise * (1 + (row == "+B")),
                             "seconds": 10.0 + (row != "baseline")})
    return pd.DataFrame(rows)


def test_variants_split_into_regime_and_row_without_touching_the_input():
    runs = ablation_runs()
    split = tables.split_variants(runs)
    assert "regime" not in runs and list(split.regime.unique()) == ["paper", "from scratch"]
    assert set(split.row) == {"baseline", "+A", "+B"}
    assert (split.regime + " | " + split.row == split.variant).all()


def test_each_regime_is_read_against_its_own_baseline():
    runs = tables.split_variants(ablation_runs())
    t = tables.regime_tables(runs, ["paper", "from scratch"], ["baseline", "+A", "+B"])
    for regime in t:
        d, se = tables.diff_se(t[regime], "+A")
        assert d == pytest.approx(2.0)
        assert se == pytest.approx(0.0, abs=1e-12)     # paired: +A moves with its seed's noise
        assert t[regime].loc["+A", "verdict"] == "inconclusive"    # 3 seeds: p >= 0.25
        assert t[regime].loc["+B", "diff"] == pytest.approx(-1.0)  # d = -1.5, -1, -0.5
    only_a = tables.regime_tables(runs, ["paper"], ["baseline", "+A"])["paper"]
    assert list(only_a.index) == ["baseline", "+A"]


def test_shown_writes_the_interval_and_leaves_the_baseline_blank():
    runs = tables.split_variants(ablation_runs())
    shown = tables.shown(tables.regime_tables(runs, ["paper"], ["baseline", "+B"])["paper"])
    assert list(shown.columns) == ["top-1 (%)", "Δ vs baseline [95 % CI]", "p (Holm)",
                                   "verdict"]
    assert shown.loc["baseline", "Δ vs baseline [95 % CI]"] == ""
    half = 4.302652729749464 * 0.5 / math.sqrt(3)              # t_.975,2 x sd / sqrt n
    assert shown.loc["+B", "Δ vs baseline [95 % CI]"] == \
        f"-1.0 [{-1 - half:+.1f}, {-1 + half:+.1f}]"
    assert shown.loc["+B", "p (Holm)"] == "0.250"              # all three d < 0: 2 / 8


def test_within_compares_two_rows_of_one_regime_seed_by_seed():
    runs = tables.split_variants(ablation_runs())
    d, se = tables.within(runs, "from scratch", "+A", "+B")
    assert d == pytest.approx(-3.0)                            # d = -3.5, -3, -2.5
    assert se == pytest.approx(0.5 / math.sqrt(3))
    v = tables.within_verdict(runs, "from scratch", "+A", "+B")
    assert (v.n, v.word) == (3, "inconclusive") and v.p == pytest.approx(0.25)


def test_the_closing_tables_read_each_method_against_its_own_baseline_and_control():
    from fglib.book import closing

    rows = []
    for m, ctl, gain, level in (("cin", "W = I", 1.0, 70.0), ("rra", "whole image", -2.0, 60.0)):
        for s in range(6):
            for kind, top in (("baseline", level + s), ("method", level + s + gain + 0.1 * s),
                              (ctl, level + s + 0.5)):
                rows.append({"cell": "paper", "method": m, "kind": kind, "seed": s, "top1": top,
                             "hard_top1": top - 10, "within_family_errors": 90.0 + s})
    runs = pd.DataFrame(rows)
    verdicts = closing.closing_family(runs)
    fam = {k: v for k, v in verdicts.items()}
    names = dict(closing.NAMES)
    closing.NAMES.clear()
    closing.NAMES.update({"cin": "CIN", "rra": "RRA"})
    try:
        t = closing.compared(runs, fam, "paper")
        c = closing.controls_table(runs, fam)
    finally:
        closing.NAMES.clear()
        closing.NAMES.update(names)
    assert list(t.index) == ["CIN", "RRA"]
    assert t.loc["RRA", "baseline"] == "62.5 ± 1.9"            # its own baseline, 60 + seed
    assert t.loc["CIN", "Δ [95 % CI]"].startswith("+1.2 [")    # 1 + 0.1 x mean seed 2.5
    assert t.loc["CIN", "hard families"] == pytest.approx(63.8)  # 73.75 - 10, rounded
    assert t.loc["CIN", "errors in family (%)"] == 92 and t.loc["CIN", "seeds"] == 6
    assert c.loc[("CIN", "W = I"), "what it takes out"] == "SCI's attention and CCI"
    assert c.loc[("RRA", "whole image"), "Δ method - control [95 % CI]"].startswith("-2.2 [")
