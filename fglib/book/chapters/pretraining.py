"""The pretraining chapter's measurements: what transfers, by a linear probe."""
from __future__ import annotations

import torch

from fglib.models.backbones import SmallResNet
from fglib.book.evidence import normalised_images
from fglib.experiments.measured import measurement
from fglib.experiments.pretraining import linear_probe, pooled_features
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data


@measurement(tol=0.25, why="float64 end to end, but L-BFGS stops at its tolerance "
             "(a gradient of ~1e-6), a point that rounding moves: with torch's AVX2 "
             "kernels instead of AVX-512 ones one test image of 1,440 flipped (0.07 "
             "points); 0.25 points allows three")
def linear_probe_top1(runs, kappa: float = 1e-4, steps: int = 2000) -> float:
    """Linear-probe top-1 (%) on the benchmark of runs["data"] of one backbone's pooled
    features, in float64: the backbone of run runs["backbone"] or, without one, a
    random initialisation (torch seeded with 0)."""
    train_set, test_set = load_data(runs["data"])
    if "backbone" in runs:
        net = load_model(runs["backbone"])[0].backbone
    else:
        torch.manual_seed(0)
        net = SmallResNet().double().eval()
    x_train = normalised_images(train_set, train_set)            # float64
    x_test = normalised_images(train_set, test_set)
    return 100 * linear_probe(pooled_features(net, x_train), train_set.labels,
                              pooled_features(net, x_test), test_set.labels,
                              kappa=kappa, steps=steps)
