"""fglib.core.stats and fglib.book.toy against slow references written from the equations."""
import pytest
import torch

from fglib.core.stats import nearest_neighbour_accuracy, scatter_ratio, scatter_traces
from fglib.book.toy import part_features, predicted_ratio


def reference_traces(x, y):
    """tr S_W and tr S_B with explicit loops over classes and samples."""
    x = x.double()
    mu = x.mean(0)
    tr_w = tr_b = 0.0
    for c in sorted(set(y.tolist())):
        members = [x[n] for n in range(len(y)) if y[n] == c]
        mu_c = sum(members) / len(members)
        tr_w += sum(float(((m - mu_c) ** 2).sum()) for m in members)
        tr_b += len(members) * float(((mu_c - mu) ** 2).sum())
    return tr_w, tr_b


def reference_1nn(xtr, ytr, xte, yte):
    correct = 0
    for a, ya in zip(xte, yte):
        dists = [float(((a - b) ** 2).sum()) for b in xtr]
        correct += int(ytr[dists.index(min(dists))] == ya)
    return correct / len(yte)


@pytest.mark.parametrize("n,dim,k", [(7, 3, 2), (23, 5, 4), (31, 1, 3)])
def test_scatter_traces_match_loops(n, dim, k):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, dim, generator=g)
    y = torch.arange(n) % k * 5 + 2                   # non-contiguous labels on purpose
    ours = scatter_traces(x, y)
    ref = reference_traces(x, y)
    assert ours == pytest.approx(ref, rel=1e-10)
    assert scatter_ratio(x, y) == pytest.approx(ref[1] / ref[0], rel=1e-10)


def test_total_scatter_decomposes():
    # S_T = S_W + S_B: a property the loop reference does not use
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 5, (40,), generator=g)
    tr_w, tr_b = scatter_traces(x, y)
    tr_t = float(((x.double() - x.double().mean(0)) ** 2).sum())
    assert tr_w + tr_b == pytest.approx(tr_t, rel=1e-10)


def test_nearest_neighbour_matches_loops():
    g = torch.Generator().manual_seed(1)
    xtr, ytr = torch.randn(19, 4, generator=g), torch.randint(0, 3, (19,), generator=g)
    xte, yte = torch.randn(11, 4, generator=g), torch.randint(0, 3, (11,), generator=g)
    assert nearest_neighbour_accuracy(xtr, ytr, xte, yte) == pytest.approx(reference_1nn(xtr, ytr, xte, yte))


def test_nearest_neighbour_of_training_set_is_itself():
    x, y = torch.eye(5), torch.tensor([0, 1, 2, 3, 4])
    assert nearest_neighbour_accuracy(x, y, x, y) == 1.0


def test_bad_shapes_say_what_is_wrong():
    with pytest.raises(ValueError, match="labels must have shape"):
        scatter_ratio(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="matrix"):
        scatter_ratio(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="dims"):
        nearest_neighbour_accuracy(torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="zero spread"):
        scatter_ratio(torch.ones(4, 2), torch.tensor([0, 0, 1, 1]))


def test_toy_classes_differ_only_on_discriminative_parts():
    f = part_features(num_classes=4, per_class=3, num_parts=5, dim=2, differing_parts=[1, 3],
                      between_std=1.0, within_std=0.0, seed=0)
    means = f.x.reshape(4, 3, 5, 2)[:, 0]                 # noise-free: every sample is its class mean
    assert torch.equal(f.x.reshape(4, 3, 10)[:, 0], f.x.reshape(4, 3, 10)[:, 2])
    for p in range(5):
        differs = not torch.allclose(means[0, p], means[1, p])
        assert differs == (p in (1, 3))
    assert torch.equal(f.part([3]), f.x[:, 6:8])


def test_toy_is_deterministic_and_checks_parts():
    a = part_features(3, 4, 2, 2, [0], 1.0, 1.0, seed=5)
    b = part_features(3, 4, 2, 2, [0], 1.0, 1.0, seed=5)
    assert torch.equal(a.x, b.x)
    with pytest.raises(ValueError, match="differing_parts"):
        part_features(3, 4, 2, 2, [2], 1.0, 1.0, seed=5)


def toy_as_a_linear_map(K, n, P, d, differing, sigma_b, sigma_w):
    """The toy model written from its equation as a matrix L: x (N P d,) = L z for z, the
    standard normal draws in the order part_features makes them (shared means (P d),
    own means (K P d), noise (N P d)). x^(p)_i = sigma_b m_{y_i, p} + sigma_w n^(p)_i, with
    m shared on the parts that do not differ."""
    N = K * n
    shared, own = P * d, K * P * d
    L = torch.zeros(N * P * d, shared + own + N * P * d, dtype=torch.float64)
    for i in range(N):
        c = i // n
        for p in range(P):
            for j in range(d):
                row = (i * P + p) * d + j
                mean = shared + (c * P + p) * d + j if p in differing else p * d + j
                L[row, mean] = sigma_b
                L[row, shared + own + row] = sigma_w
    return L


def expected_traces(L, K, n, P, d):
    """(E tr S_W, E tr S_B) exactly: each trace is x^T A x for a projection A, and
    E[x^T A x] = tr(L^T A L) for x = L z, z standard normal."""
    N, D = K * n, P * d
    same_class = torch.zeros(N, N, dtype=torch.float64)
    for i in range(N):
        for k in range(N):
            same_class[i, k] = 1.0 / n if i // n == k // n else 0.0       # class means
    everyone = torch.full((N, N), 1.0 / N, dtype=torch.float64)            # global mean
    eye_d = torch.eye(D, dtype=torch.float64)
    a_w = torch.kron(torch.eye(N, dtype=torch.float64) - same_class, eye_d)
    a_b = torch.kron(same_class - everyone, eye_d)
    return [float((L * (a @ L)).sum()) for a in (a_w, a_b)]


def test_the_toy_model_is_its_equation():
    K, n, P, d, differing = 3, 4, 2, 2, [1]
    f = part_features(K, n, P, d, differing, 1.5, 0.7, seed=9)
    g = torch.Generator().manual_seed(9)
    z = torch.cat([torch.randn(1, P, d, generator=g, dtype=torch.float64).flatten(),
                   torch.randn(K, P, d, generator=g, dtype=torch.float64).flatten(),
                   torch.randn(K * n, P, d, generator=g, dtype=torch.float64).flatten()])
    L = toy_as_a_linear_map(K, n, P, d, differing, 1.5, 0.7)
    assert torch.allclose(f.x.flatten(), L @ z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("K,n,P,d,differing,sigma_b,sigma_w", [
    (3, 4, 2, 2, [1], 1.5, 1.0), (2, 3, 3, 1, [0, 2], 1.0, 0.5), (4, 2, 2, 3, [0, 1], 0.8, 1.2)])
def test_toy_ratio_is_the_ratio_of_the_exact_expectations(K, n, P, d, differing, sigma_b,
                                                          sigma_w):
    """The introduction's J is E tr S_B / E tr S_W with the first term's factor N / (N - K)
    dropped: checked at rel 1e-9 against the expectations computed exactly from the model's
    equation (no simulation), in small settings where every factor of the formula matters
    (a formula without (K-1)/(N-K) or without (1 - 1/K) is 10 % to 50 % off)."""
    N = K * n
    e_w, e_b = expected_traces(toy_as_a_linear_map(K, n, P, d, differing, sigma_b, sigma_w),
                               K, n, P, d)
    assert e_w == pytest.approx((N - K) * P * d * sigma_w**2, rel=1e-12)
    signal = (1 - 1 / K) * len(differing) / P * sigma_b**2 / sigma_w**2
    predicted = predicted_ratio(K, N, P, len(differing), sigma_b, sigma_w)
    assert predicted == pytest.approx(signal + (K - 1) / (N - K), rel=1e-12)
    assert predicted + signal * (N / (N - K) - 1) == pytest.approx(e_b / e_w, rel=1e-9)


def test_the_old_two_standard_error_rule_is_gone():
    """Issue 29: one verdict function (fglib.core.verdict); stats keeps no rule of its own."""
    from fglib.core import stats

    assert not any(hasattr(stats, f) for f in ("effect", "mean_difference", "compare_sentence"))


def test_rank_correlation_against_the_textbook_formula_and_ties():
    from fglib.core.stats import rank_correlation
    a, b = [3.0, 1.0, 4.0, 1.5, 5.0], [2.0, 1.0, 5.0, 3.0, 4.0]
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); ranks a = 3,1,4,2,5 and b = 2,1,5,3,4
    d2 = sum((x - y) ** 2 for x, y in zip([3, 1, 4, 2, 5], [2, 1, 5, 3, 4]))
    assert rank_correlation(a, b) == pytest.approx(1 - 6 * d2 / (5 * 24))
    assert rank_correlation(a, [-v for v in a]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        0.9486832980505138)            # ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4
    with pytest.raises(ValueError, match="equally long"):
        rank_correlation([1, 2], [1])


def test_rank_correlation_pvalue_counts_the_orders_by_hand():
    from fglib.core.stats import rank_correlation_pvalue
    # n = 5: rho = 1 for one order of 120; rho = 0.9 for the 4 adjacent swaps
    assert rank_correlation_pvalue([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1 / 120)
    assert rank_correlation_pvalue([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == pytest.approx(5 / 120)
    assert rank_correlation_pvalue([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at most 8"):
        rank_correlation_pvalue(range(9), range(9))


def test_signed_differences_never_print_a_negative_zero():
    from fglib.core.stats import signed
    assert [signed(v) for v in (-0.04, 0.04, -0.06, 1.25, 0.0)] == [
        "+0.0", "+0.0", "-0.1", "+1.2", "+0.0"]
