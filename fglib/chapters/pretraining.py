"""The pretraining chapter's measurements: what transfers, by a linear probe."""
from __future__ import annotations

import torch

from fglib.backbones import SmallResNet
from fglib.evidence import normalised_images
from fglib.measured import measurement
from fglib.pretraining import linear_probe, pooled_features
from fglib.runner import load_model
from fglib.train import load_data

BACKBONES = ("random initialisation", "pre-trained (book's pretraining set)",
             "trained on the benchmark (baseline, seed 0)")


@measurement(tol=1e-6, why="float64 end to end: the features and the L2-regularised (strictly "
             "convex) probe differ between CPUs by rounding only, ~1e-12; a test image would have to "
             "lie that close to a decision boundary to flip")
def linear_probes(runs, kappa: float = 1e-4, steps: int = 200) -> dict[str, float]:
    """Linear-probe top-1 (%) on the benchmark of three backbones' pooled features, in float64:
    a random initialisation (seed 0), the pretraining run's backbone (runs["pretraining"]) and the
    backbone of a baseline trained on the benchmark (runs["baseline"])."""
    train_set, test_set = load_data(runs["baseline"])
    x_train = normalised_images(train_set, train_set)            # float64
    x_test = normalised_images(train_set, test_set)
    torch.manual_seed(0)
    nets = dict(zip(BACKBONES, [SmallResNet().double().eval(),
                                load_model(runs["pretraining"])[0].backbone,
                                load_model(runs["baseline"])[0].backbone]))
    return {name: 100 * linear_probe(pooled_features(net, x_train), train_set.labels,
                                     pooled_features(net, x_test), test_set.labels,
                                     kappa=kappa, steps=steps)
            for name, net in nets.items()}
