"""The book's one verdict function (fglib.core.verdict) against textbook examples and scipy."""
import math

import numpy as np
import pytest
from scipy import stats

from fglib.core.verdict import (EXACT_UP_TO, against_claim, family, holm, mde, paired,
                                sign_flip_p)


def test_holm_against_a_worked_example():
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 ->
    # 0.02, 0.03, 0.06, 0.04 -> kept monotone: 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.2]), [0.5, np.nan, 0.4])
    assert holm([0.9, 0.8]).max() <= 1.0


def test_exact_sign_flips_by_hand_and_against_scipy():
    # d = (1, 2, 3): of the 8 sign patterns only (+,+,+) and (-,-,-) reach |mean| >= 2
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0, 2.0, 3.0], "greater") == pytest.approx(1 / 8)
    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 1, 9), rng.normal(70.5, 1, 9)
    ref = stats.permutation_test((b, a), lambda x, y: np.mean(x - y), permutation_type="samples",
                                 n_resamples=math.inf, alternative="two-sided").pvalue
    assert sign_flip_p(b - a) == pytest.approx(ref)
    with pytest.raises(ValueError, match="paired t"):
        sign_flip_p(np.ones(EXACT_UP_TO + 1))


def test_paired_interval_and_large_n_p_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(75, 1.0, 20)
    b = a + rng.normal(0.8, 0.7, 20)                    # 20 seeds: the paired t
    v = paired(a, b)
    ref = stats.ttest_rel(b, a)
    assert v.test == "paired t" and v.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (v.low, v.high) == pytest.approx((ci.low, ci.high))
    assert v.mean == pytest.approx(np.mean(b - a))


def test_tost_says_equivalent_only_when_both_sides_reject():
    base = np.full(10, 75.0)
    tight = base + np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.1, -0.1, 0.02, -0.02, 0.0])
    v = paired(base, tight)
    assert v.p_equivalence <= 2 / 2 ** 10                # every sign flip stays inside +-1
    wide = base + 1.5 * np.array([2.0, -2.0, 1.5, -1.5, 0.0, 2.0, -2.0, 1.0, -1.0, 0.0])
    assert paired(base, wide).p_equivalence > 0.05      # mean 0, but the seeds allow +-1
    # the TOST p is the larger one-sided p of the shifted tests
    d = tight - base
    assert v.p_equivalence == pytest.approx(max(sign_flip_p(d + 1.0, "greater"),
                                                sign_flip_p(d - 1.0, "less")))


def test_mde_matches_the_power_it_promises():
    """At the MDE the noncentral t gives the stated power (to the approximation's accuracy)."""
    sd, n, alpha = 1.2, 10, 0.05
    m = mde(sd, n, alpha)
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)
    power = 1 - stats.nct.cdf(crit, df, m / (sd / math.sqrt(n)))
    assert power == pytest.approx(0.8, abs=0.02)
    assert mde(sd, 1) == math.inf


def test_family_words_and_holm_by_hand():
    base = np.full(10, 75.0)
    noise = np.array([0.2, -0.2, 0.1, -0.1, 0.0, 0.2, -0.2, 0.1, -0.1, 0.0])
    fam = family({"gain": (base, base + 2.0 + noise), "loss": (base, base - 3.0 + noise),
                  "same": (base, base + noise), "noisy": (base, base + 5 * noise[::-1] * 3)})
    assert fam["gain"].word == "a gain" and fam["loss"].word == "a loss"
    assert fam["same"].word == "no effect" and fam["noisy"].word == "inconclusive"
    raw = [paired(base, b).p for b in (base + 2.0 + noise, base - 3.0 + noise, base + noise,
                                       base + 5 * noise[::-1] * 3)]
    np.testing.assert_allclose([v.p_holm for v in fam.values()], holm(raw))
    assert fam["gain"].mde == pytest.approx(mde(np.std(noise, ddof=1), 10, 0.05 / 4))


def test_claims_by_the_same_intervals():
    base = np.full(10, 75.0)
    noise = np.array([0.2, -0.2, 0.1, -0.1, 0.0, 0.2, -0.2, 0.1, -0.1, 0.0])
    v = family({"m": (base, base + 2.0 + noise)})["m"]
    assert against_claim(v, 2.0) == "reproduced"
    assert against_claim(v, 4.5) == "smaller than claimed"
    z = family({"m": (base, base + noise)})["m"]
    assert against_claim(z, 4.5) == "claim excluded"
    wide = family({"m": (base, base + 0.5 + 15 * noise)})["m"]
    assert wide.word == "inconclusive" and against_claim(wide, 1.0) == "inconclusive"


def test_bad_input_says_what_to_pass():
    with pytest.raises(ValueError, match="same seeds"):
        paired([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="two or more"):
        paired([1.0], [2.0])


def _reference_one_sided(d, greater):
    """Loop over every sign pattern: the share whose mean is >= (or <=) the observed mean."""
    n, observed, hits = len(d), sum(d) / len(d), 0
    for pattern in range(2 ** n):
        m = sum((-x if pattern >> i & 1 else x) for i, x in enumerate(d)) / n
        hits += (m >= observed - 1e-12) if greater else (m <= observed + 1e-12)
    return hits / 2 ** n


def test_equivalence_p_against_a_loop_reference_on_asymmetric_data():
    """Differences near -0.7: the lower bound (-margin) decides the TOST p."""
    d = [-0.9, -0.5, -0.8, -0.6, -0.75, -0.4, -1.1, -0.7]
    v = paired(np.zeros(8), np.array(d))
    low = _reference_one_sided([x + 1.0 for x in d], greater=True)
    high = _reference_one_sided([x - 1.0 for x in d], greater=False)
    assert low > high                                    # the lower side is the binding one
    assert v.p_equivalence == pytest.approx(max(low, high))


def test_bootstrap_rank_correlation_interval():
    from fglib.core.verdict import bootstrap_rank_correlation
    rng = np.random.default_rng(3)
    truth = {"A": -2.0, "B": -1.0, "C": 0.0, "D": 1.0, "E": 2.0}
    tight1 = {m: t + rng.normal(0, 0.05, 5) for m, t in truth.items()}
    tight2 = {m: t + rng.normal(0, 0.05, 3) for m, t in truth.items()}
    rho, low, high = bootstrap_rank_correlation(tight1, tight2, reps=300)
    assert (rho, low, high) == pytest.approx((1.0, 1.0, 1.0))  # well separated: redraws agree
    noisy1 = {m: t + rng.normal(0, 4.0, 5) for m, t in truth.items()}
    noisy2 = {m: t + rng.normal(0, 4.0, 3) for m, t in truth.items()}
    rho, low, high = bootstrap_rank_correlation(noisy1, noisy2, reps=300)
    assert low <= rho <= high
    assert high - low > 1.0                                   # noise this size settles nothing
    again = bootstrap_rank_correlation(noisy1, noisy2, reps=300)
    assert again == (rho, low, high)                          # seeded: the same interval
    with pytest.raises(ValueError, match="same three or more"):
        bootstrap_rank_correlation({"A": [1.0]}, {"B": [1.0]})
