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


@pytest.mark.parametrize("differing", [[0], [0, 1, 2, 3]], ids=["fine", "coarse"])
def test_predicted_ratio_matches_the_ratio_of_simulated_traces(differing):
    # The derivation predicts the ratio of the traces' expectations (tests/test_stats.py checks
    # it exactly against the model's equation); here the toy model's samples agree with it. A
    # small N makes every factor matter: without (K-1)/(N-K) the prediction is 8 % (coarse) to
    # 26 % (fine) off, without (1 - 1/K) 25 %. The tolerance is four Monte-Carlo standard errors
    # of the ratio of the averaged traces (delta method), and the test requires it to be at most
    # half the distance to either wrong formula, so that it can tell them apart.
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
    signal = (1 - 1 / K) * len(differing) / P * sb**2 / sw**2
    exact = predicted_ratio(K, N, P, len(differing), sb, sw) + signal * (N / (N - K) - 1)
    wrong = [exact - (K - 1) / (N - K),                    # without the sampling term
             exact + signal * N / (N - K) * (1 / (1 - 1 / K) - 1)]   # without (1 - 1/K)
    assert abs(simulated - exact) <= tol
    assert all(abs(exact - x) >= 2 * tol for x in wrong), (tol, exact, wrong)
