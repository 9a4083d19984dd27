"""fglib.book.toy.predicted_ratio against the formula and against simulated traces."""
from dataclasses import astuple

import pytest
import torch

from fglib.core.stats import scatter_traces
from fglib.book.toy import part_features, predicted_ratio


def test_predicted_ratio_is_the_formula_of_the_introduction():
    # J ~ (1 - 1/K) |D|/P sigma_b^2/sigma_w^2 + (K - 1)/(N - K), worked by hand
    # (K, N, P, |D|, sigma_b, sigma_w) -> J
    by_hand = {(10, 200, 7, 1, 1.0, 1.0): 0.9 / 7 + 9 / 190,
               (10, 200, 7, 7, 1.0, 1.0): 0.9 + 9 / 190,
               (4, 40, 2, 1, 2.0, 1.0): 0.75 * 0.5 * 4 + 3 / 36,
               (4, 40, 2, 1, 1.0, 2.0): 0.75 * 0.5 / 4 + 3 / 36}
    for args, expected in by_hand.items():
        assert predicted_ratio(*args) == pytest.approx(expected)


def expected_traces(K, per_class, P, d, n_differing, sb, sw):
    """(E tr S_W, E tr S_B) of part_features' data, worked from the model's equation. Per
    feature dimension: the within-class scatter of N samples in K classes with noise variance
    sw^2 has expectation (N - K) sw^2; the between-class scatter is per_class times the
    scatter of the K class averages sb m_c + sw mean(noise): (K - 1) sb^2 on a differing
    dimension (own means), 0 on a shared one, plus (K - 1) sw^2 / per_class from the noise."""
    N = K * per_class
    e_w = (N - K) * P * d * sw**2
    e_b = per_class * (K - 1) * (n_differing * d * sb**2 + P * d * sw**2 / per_class)
    return e_w, e_b


@pytest.mark.parametrize("K,per_class,P,n_differing,sb,sw", [
    (4, 5, 4, 1, 1.5, 1.0), (4, 5, 4, 4, 1.5, 1.0), (10, 20, 7, 1, 1.0, 1.0),
    (3, 2, 2, 1, 0.7, 1.3)])
def test_predicted_ratio_is_the_ratio_of_the_expectations_up_to_n_over_n_minus_k(
        K, per_class, P, n_differing, sb, sw):
    """predicted_ratio is E tr S_B / E tr S_W with its first (class-mean) term multiplied by
    (N - K) / N, as the module documents: exact, at rel 1e-9 (without (K-1)/(N-K) it is
    10 % to 87 % off in these settings, without (1 - 1/K) 6 % to 30 %)."""
    N = K * per_class
    e_w, e_b = expected_traces(K, per_class, P, 5, n_differing, sb, sw)
    sampling = (K - 1) * P * 5 * sw**2 / e_w                  # the noise's share of E tr S_B
    documented = (e_b / e_w - sampling) * (N - K) / N + sampling
    assert predicted_ratio(K, N, P, n_differing, sb, sw) == pytest.approx(documented, rel=1e-9)


@pytest.mark.parametrize("differing", [[0], [0, 1, 2, 3]], ids=["fine", "coarse"])
def test_the_expectations_match_simulated_traces(differing):
    # The ratio of the expected traces (worked by hand in expected_traces; tests/test_stats.py
    # also computes it exactly from the model's equation as a matrix) against the toy model's
    # samples. A small N makes every factor matter: without (K-1)/(N-K) the ratio is 8 %
    # (coarse) to 26 % (fine) off, without (1 - 1/K) 25 % to 31 %. The tolerance is four Monte-Carlo
    # standard errors of the ratio of the averaged traces (delta method), and the test requires
    # it to be at most half the distance to either wrong formula, so that it can tell them apart.
    K, per_class, P, d, seeds, sb, sw = 4, 5, 4, 5, 800, 1.5, 1.0
    N = K * per_class
    traces = torch.tensor([scatter_traces(*astuple(part_features(K, per_class, P, d, differing,
                                                                 sb, sw, seed=s))[:2])
                           for s in range(seeds)], dtype=torch.float64)       # (seeds, 2)
    w, b = traces[:, 0], traces[:, 1]
    simulated = float(b.mean() / w.mean())
    cov = torch.cov(traces.T) / seeds
    rel_var = (cov[1, 1] / b.mean() ** 2 + cov[0, 0] / w.mean() ** 2
               - 2 * cov[0, 1] / (b.mean() * w.mean()))
    tol = 4 * simulated * float(rel_var.sqrt())
    e_w, e_b = expected_traces(K, per_class, P, d, len(differing), sb, sw)
    exact, sampling = e_b / e_w, (K - 1) / (N - K)
    wrong = [exact - sampling,                                       # without the sampling term
             sampling + (exact - sampling) / (1 - 1 / K)]              # without (1 - 1/K)
    assert abs(simulated - exact) <= tol
    assert all(abs(exact - x) >= 2 * tol for x in wrong), (tol, exact, wrong)
