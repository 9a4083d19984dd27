"""Class-separability statistics used throughout the book.

For features x_n with labels y_n, the within-class scatter S_W and between-class
scatter S_B are
    S_W = sum_c sum_{n: y_n = c} (x_n - mu_c)(x_n - mu_c)^T,
    S_B = sum_c N_c (mu_c - mu)(mu_c - mu)^T,
and their trace ratio tr(S_B) / tr(S_W) says how far apart classes are compared with how
spread out each class is. Fine-grained data is exactly the case where this ratio is
small.

Verdicts on methods (a gain, a loss, no effect) are not made here: the one verdict function of
the book is fglib.core.verdict.
"""
from __future__ import annotations

import statistics
from typing import Iterable

import torch


def signed(d: float, digits: int = 1) -> str:
    """d with its sign at `digits` decimals, never "-0.0" (a difference that rounds to zero)."""
    return f"{round(float(d), digits) + 0.0:+.{digits}f}"


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2:
        raise ValueError("features must be a matrix (N, D), "
                         f"got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match the "
                         f"features, got {tuple(y.shape)}")


def scatter_traces(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(tr S_W, tr S_B) of features x (N, D) with integer labels y (N,)."""
    _check(x, y)
    x = x.double()
    classes, y_idx = torch.unique(y, return_inverse=True)
    counts = torch.bincount(y_idx, minlength=len(classes)).double()      # N_c
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, y_idx, x)
    mu_c = sums / counts[:, None]                                         # class means
    mu = x.mean(0)
    tr_w = ((x - mu_c[y_idx]) ** 2).sum()                                 # tr S_W
    tr_b = (counts[:, None] * (mu_c - mu) ** 2).sum()                     # tr S_B
    return tr_w.item(), tr_b.item()


def scatter_ratio(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(S_B) / tr(S_W): large for easy (coarse) problems, small for fine-grained."""
    tr_w, tr_b = scatter_traces(x, y)
    if tr_w == 0:
        raise ValueError("every class has zero spread (tr S_W = 0): "
                         "the ratio is undefined")
    return tr_b / tr_w


def nearest_neighbour_accuracy(x_train: torch.Tensor, y_train: torch.Tensor,
                               x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Top-1 accuracy of the 1-nearest-neighbour rule under squared Euclidean distance.

    Ties are broken towards the lower training index (torch.argmin's rule).
    """
    _check(x_train, y_train)
    _check(x_test, y_test)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train features have {x_train.shape[1]} dims "
                         f"but test features {x_test.shape[1]}")
    x_train, x_test = x_train.double(), x_test.double()
    # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2
    d2 = (x_test**2).sum(1, keepdim=True) - 2 * x_test @ x_train.T + (x_train**2).sum(1)
    pred = y_train[d2.argmin(1)]
    return (pred == y_test).double().mean().item()


def _ranks(v: list[float]) -> list[float]:
    """Ranks 1..n of v, ties given their mean rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_correlation(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman's rank correlation of paired values: the Pearson correlation of their ranks
    (ties get their mean rank). 1: the same order, -1: the reverse."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("rank_correlation needs two equally long sequences of at least 2 "
                         f"values, got {len(a)} and {len(b)}")
    return statistics.correlation(_ranks(a), _ranks(b))


def rank_correlation_pvalue(a: Iterable[float], b: Iterable[float]) -> float:
    """One-sided exact p-value of Spearman's rho: the share of the n! orders of b's ranks
    whose correlation with a's ranks is at least the observed one (no order: every order
    equally likely). For n <= 8."""
    import itertools

    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) > 8:
        raise ValueError(f"the exact permutation p-value enumerates n! orders; n = {len(a)} "
                         "is too many (at most 8)")
    observed = rank_correlation(a, b)
    ra, rb = _ranks(a), _ranks(b)
    hits = total = 0
    for order in itertools.permutations(rb):
        total += 1
        hits += statistics.correlation(ra, list(order)) >= observed - 1e-12
    return hits / total
