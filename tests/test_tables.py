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
        assert se == pytest.approx(math.sqrt(0.25 / 3 + 0.25 / 3))   # Welch: sd 0.5 a side, 3 seeds
        assert t[regime].loc["+A", "verdict"] == "a gain"
    only_a = tables.regime_tables(runs, ["paper"], ["baseline", "+A"])["paper"]
    assert list(only_a.index) == ["baseline", "+A"]


def test_shown_writes_the_difference_and_leaves_the_baseline_blank():
    runs = tables.split_variants(ablation_runs())
    shown = tables.shown(tables.regime_tables(runs, ["paper"], ["baseline", "+A"])["paper"])
    assert list(shown.columns) == ["top-1 (%)", "Δ vs baseline", "verdict"]
    assert shown.loc["baseline", "Δ vs baseline"] == ""
    assert shown.loc["+A", "Δ vs baseline"] == "+2.0 ± 0.4"


def test_within_compares_two_rows_of_one_regime():
    runs = tables.split_variants(ablation_runs())
    d, se = tables.within(runs, "from scratch", "+A", "+B")
    assert d == pytest.approx(-3.0)
    assert se == pytest.approx(math.sqrt(0.25 / 3 + 1.0 / 3))          # sd 0.5 and 1.0


def test_compared_has_one_row_per_method_against_its_own_baseline():
    rows = []
    for method, gain, level in (("mcloss", 1.0, 70.0), ("cin", -3.0, 60.0)):   # own baselines
        for kind in ("baseline", "method"):
            for seed, noise in enumerate((-1.0, 1.0)):
                rows.append({"method": method, "kind": kind, "seed": seed,
                             "top1": level + (gain if kind == "method" else 0) + noise,
                             "hard_top1": level - 20 + 3 * seed + 10 * (kind == "baseline"),
                             "within_family_errors": 30.0 + 10 * seed + (method == "cin")
                             + 20 * (kind == "baseline"),
                             "seconds": 20.0 if kind == "method" else 10.0})
    runs = pd.DataFrame(rows)
    t = tables.compared(runs, {"mcloss": "MC-Loss", "cin": "CIN"})
    assert list(t.index) == ["MC-Loss", "CIN"]
    assert t.loc["CIN", "diff"] == pytest.approx(-3.0)
    assert t.loc["CIN", "Δ vs baseline"] == f"-3.0 ± {math.sqrt(2 + 2) / math.sqrt(2):.1f}"
    assert t.loc["MC-Loss", "top-1 (%)"] == "71.0 ± 1.4 (2)"
    assert t.loc["CIN", "baseline"] == "60.0 ± 1.4"                # its own baseline, not MC-Loss's
    assert t.loc["MC-Loss", "time / step"] == "2.00"
    # the method's own runs only: hard families 51.5 (CIN 41.5), errors in family 35 (36)
    assert t.loc["MC-Loss", "hard families"] == "51.5" and t.loc["CIN", "hard families"] == "41.5"
    assert t.loc["MC-Loss", "errors in family (%)"] == "35"
    assert t.loc["CIN", "errors in family (%)"] == "36"
    assert t.loc["MC-Loss", "verdict"] == "no measurable effect"     # 1.0 <= 2 x 1.41
