"""fglib.book.toy.predicted_ratio against the formula and against simulated traces."""
import pytest

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
    # The derivation predicts the ratio of the traces' expectations: average both traces
    # over many draws of the toy model (fglib.core.stats.scatter_traces is checked against
    # loops in test_stats.py). With N >> K the dropped factor N / (N - K) is close to 1.
    K, per_class, P, d, seeds = 6, 60, 4, 5, 120
    sums = [0.0, 0.0]
    for seed in range(seeds):
        f = part_features(K, per_class, P, d, differing, 1.5, 1.0, seed=seed)
        for i, t in enumerate(scatter_traces(f.x, f.y)):
            sums[i] += t
    simulated = sums[1] / sums[0]
    predicted = predicted_ratio(K, K * per_class, P, len(differing), 1.5, 1.0)
    assert simulated == pytest.approx(predicted, rel=0.05)
