"""A toy model of fine-grained features, used by the introduction.

An object has P parts and each part contributes a d-dimensional vector to the image's
feature:
    x = [x^(1), ..., x^(P)],   x^(p) = m_{y,p} + n^(p),   n^(p) ~ N(0, sigma_w^2 I).
The noise n stands for everything that varies inside a class (pose, light, background).
The class means m_{y,p} differ between classes only on the parts listed in
`differing_parts`; on the other parts all classes share one mean. Coarse categories
differ on every part, fine-grained ones on one.

With K classes, N samples and |D| differing parts, the trace ratio J = tr S_B / tr S_W
(fglib.core.stats.scatter_ratio) is about
    J ~ (1 - 1/K) |D|/P sigma_b^2/sigma_w^2 + (K - 1)/(N - K),
the ratio of the two traces' expectations up to a factor N / (N - K) on the first term
(`predicted_ratio`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PartFeatures:
    x: torch.Tensor              # (N, P * d) features
    y: torch.Tensor              # (N,) labels in [0, num_classes)
    part_dims: torch.Tensor      # (P, d) the feature columns that belong to each part

    def part(self, parts: list[int]) -> torch.Tensor:
        """Only the columns of the given parts, what an ideal part attention keeps."""
        return self.x[:, self.part_dims[parts].flatten()]


def part_features(num_classes: int, per_class: int, num_parts: int, dim: int,
                  differing_parts: list[int], between_std: float, within_std: float,
                  seed: int) -> PartFeatures:
    """Sample `per_class` feature vectors for each of `num_classes` classes.

    Deterministic in `seed`.
    """
    if not differing_parts or not all(0 <= p < num_parts for p in differing_parts):
        raise ValueError(f"differing_parts must list part indices in [0, {num_parts}), "
                         f"got {differing_parts}")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    shared = torch.randn(1, num_parts, dim, generator=g, dtype=f64) * between_std
    means = shared.repeat(num_classes, 1, 1)                              # m_{y,p}
    own = torch.randn(num_classes, num_parts, dim, generator=g, dtype=f64) * between_std
    means[:, differing_parts] = own[:, differing_parts]
    y = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(len(y), num_parts, dim, generator=g, dtype=f64) * within_std
    x = (means[y] + noise).reshape(len(y), num_parts * dim)          # m_{y,p} + n^(p)
    part_dims = torch.arange(num_parts * dim).reshape(num_parts, dim)
    return PartFeatures(x=x, y=y, part_dims=part_dims)


def predicted_ratio(num_classes: int, num_samples: int, num_parts: int,
                    num_differing: int, between_std: float, within_std: float) -> float:
    """J = tr S_B / tr S_W that the derivation predicts for `part_features` data.

    `num_samples` samples spread evenly over `num_classes` classes whose means differ on
    `num_differing` of `num_parts` parts. The ratio of the traces' expectations, with
    the factor N / (N - K) of the first term taken as 1.
    """
    k, n = num_classes, num_samples
    signal = (1 - 1 / k) * num_differing / num_parts * between_std**2 / within_std**2
    sampling = (k - 1) / (n - k)          # the estimated class means' own noise
    return signal + sampling
