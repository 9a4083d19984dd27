"""The MC-Loss chapter's measurements: the channels of a class's group, on parts."""
from __future__ import annotations

import torch

from fglib.models.attention import distinct_parts, parts_hit, peak_on_part
from fglib.book.chapters.common import shown_test_images
from fglib.book.evidence import evaluating, in_batches, normalised_images
from fglib.experiments.measured import FLOAT64, measurement
from fglib.models.mcloss import MCLoss, channel_groups
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data


def group_and_class_maps(model, x, labels, num_classes: int):
    """One float64 pass of the backbone over x: the channels of each image's true class,
    (B, xi_max, h, w), -inf where a group is smaller than xi_max, and the class map of
    the true class, (B, h, w), as model.cam computes it; and the group sizes. Any
    model's channels are split into the groups of channel_groups (the baseline's
    too)."""
    with evaluating(model):
        groups = channel_groups(model.features(x[:1]).shape[1], num_classes)
        grouping = MCLoss(groups)

        def both(xb, yb):
            f = model.features(xb)
            return torch.cat([grouping.class_channels(f, yb),
                              model.head.cam(f, yb)[:, None]], 1)

        out = in_batches(both, x, labels)
    return out[:, :-1], out[:, -1], groups


@measurement(tol=1e-6, why=FLOAT64)
def group_maps_shown(runs, images: list[int]) -> dict[str, torch.Tensor]:
    """For the test images `images`, the channels of the true class's group in each
    run's model: label -> (len(images), xi_max, h, w), NaN where the group is
    smaller than xi_max. What the figure draws over the images."""
    out = {}
    for label, cfg in runs.items():
        x, labels, classes = shown_test_images(cfg, images)     # float64
        maps, _, _ = group_and_class_maps(load_model(cfg)[0], x, labels, classes)
        out[label] = torch.where(maps.isneginf(), float("nan"), maps)
    return out


@measurement(tol=1e-6, why=FLOAT64 + "; the means over images are float64")
def part_evidence(runs, radius: float = 8.0) -> dict[str, dict[str, float]]:
    """Over all test images, for each run's model (label -> metrics): how many different
    parts the peaks of the true class's first min(xi_i) channels (those every group has)
    land on (a peak lands on the nearest visible part within `radius` pixels, or on
    none), the share (%) of those peaks on no part, and the share (%) of images whose
    class activation map peaks on a discriminative part of their class."""
    out = {}
    for label, cfg in runs.items():
        train_set, test_set = load_data(cfg)
        x = normalised_images(train_set, test_set)               # float64
        model, _ = load_model(cfg)
        maps, cam, groups = group_and_class_maps(model, x, test_set.labels,
                                                 train_set.num_classes)
        size = cfg.data.image_size
        hits = parts_hit(maps[:, : min(groups)], test_set.parts, size, radius)
        on_part = peak_on_part(cam, test_set.parts, test_set.discriminative_parts(),
                               size, radius)
        out[label] = {
            "distinct parts per group": distinct_parts(hits).double().mean().item(),
            "channel peaks off the bird (%)": 100 * (hits == -1).double().mean().item(),
            "peak on discriminative part (%)": 100 * on_part.double().mean().item()}
    return out
