"""Measurements on any runs, for every chapter (and the tests of fglib.experiments.measured)."""
from __future__ import annotations

import torch

from fglib.book.evidence import normalised_images, predictions
from fglib.experiments.measured import FLOAT64, measurement
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data


def shown_test_images(cfg, images: list[int]):
    """The test images `images` of cfg's dataset as the network sees them (float64), their
    labels and the number of classes: what a figure's measurement draws."""
    train_set, test_set = load_data(cfg)
    idx = torch.tensor(images)
    x = normalised_images(train_set, test_set)[idx]
    return x, test_set.labels[idx], train_set.num_classes


@measurement(tol=1e-6, why=FLOAT64)
def stored_weights_top1(runs) -> dict[str, float]:
    """Test top-1 (%) of each run re-computed in float64 from its stored float16
    weights: how much storing the weights in half precision moves the accuracy the run
    recorded."""
    out = {}
    for label, cfg in runs.items():
        train_set, test_set = load_data(cfg)
        model, _ = load_model(cfg)
        pred = predictions(model, normalised_images(train_set, test_set))
        out[label] = 100 * (pred == test_set.labels).double().mean().item()
    return out
