"""Measurements more than one chapter can read."""
from __future__ import annotations

from fglib.evidence import normalised_images, predictions
from fglib.measured import measurement
from fglib.runner import load_model
from fglib.train import load_data


@measurement(tol=1e-6, why="float64 forward passes: CPUs differ by rounding only, ~1e-12 in a "
             "logit; an image would need two logits that close to change its prediction")
def stored_weights_top1(runs) -> dict[str, float]:
    """Test top-1 (%) of each run re-computed in float64 from its stored float16 weights: how much
    storing the weights in half precision moves the accuracy the run recorded."""
    out = {}
    for label, cfg in runs.items():
        train_set, test_set = load_data(cfg)
        model, _ = load_model(cfg)
        pred = predictions(model, normalised_images(train_set, test_set))
        out[label] = 100 * (pred == test_set.labels).double().mean().item()
    return out
