"""The compare chapter's measurements: parameter counts, pointing at parts."""
from __future__ import annotations

import pandas as pd
import torch

from fglib.models.attention import chance_on_part, peak_on_part
from fglib.book.evidence import (boxes_cover, class_maps, first_test_images, in_batches,
                                 normalised_images, parameter_counts, proposals)
from fglib.experiments.measured import FLOAT64, measurement
from fglib.models.patches import square_boxes
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data


@measurement(tol=0, why="integer counts of parameters: the forward pass only tells "
             "which modules a test-time pass calls, which no rounding changes")
def parameter_table(runs, images: int = 8) -> pd.DataFrame:
    """Parameters trained and used at test time (fglib.book.evidence.parameter_counts,
    on the first `images` test images) of each run: one row per label of `runs`."""
    rows = []
    for label, cfg in runs.items():
        train_set, test_set = load_data(cfg)
        x = normalised_images(train_set, test_set)[:images]          # float64
        rows.append({"model": label, **parameter_counts(load_model(cfg)[0], x)})
    return pd.DataFrame(rows)


@measurement(tol=1e-6, why=FLOAT64 + "; the chance levels use no arithmetic that "
             "depends on the CPU")
def points_at_parts(runs, per_class: int = 12, radius: float = 8.0,
                    seed: int = 0) -> dict[str, object]:
    """Where one model (runs["model"]) points, on the first `per_class` test images of
    each class, in float64: the share (%) of images on which its pointer is on a
    discriminative part ("rate"), what the pointer is ("what"), and the same share for
    a pointer of that kind placed at random ("chance"). Pointers: the peak of the true
    class's activation map (within `radius` pixels of a visible discriminative part);
    the peak of any of OSME's attention maps; RRA's best proposal window (a part inside
    it; chance: a window of the same side at a uniformly random centre, generator
    seeded with `seed`)."""
    cfg = runs["model"]
    ev = first_test_images(cfg, per_class)                           # float64
    x, labels, parts, disc, size = ev.x, ev.labels, ev.parts, ev.disc, ev.size
    model = load_model(cfg)[0]

    def one_peak(shape):                                             # per image
        return chance_on_part(tuple(shape), parts, disc, size, radius).double()

    if getattr(model, "has_cam", False):
        maps = class_maps(model, x, labels)                          # (N, h, w)
        hit = peak_on_part(maps, parts, disc, size, radius)
        what, chance = "peak of the true class's map", one_peak(maps.shape[1:])
    elif hasattr(model, "attention_maps"):
        maps = in_batches(model.attention_maps, x)                   # (N, P, h, w)
        hit = torch.stack([peak_on_part(maps[:, p], parts, disc, size, radius)
                           for p in range(maps.shape[1])]).any(0)
        what = "peak of either attention map"
        chance = 1 - (1 - one_peak(maps.shape[2:])) ** maps.shape[1]
    elif hasattr(model, "candidates"):
        hit = boxes_cover(proposals(model, x)[:, :1], parts, disc)[:, 0]
        what = "its frozen baseline's best window"
        g = torch.Generator().manual_seed(seed)
        centres = torch.rand(len(x), 1, 2, generator=g, dtype=torch.float64) * size
        chance = boxes_cover(square_boxes(centres, model.patch * size, size), parts,
                             disc)[:, 0].double()
    else:
        raise TypeError(f"{type(model).__name__} has no map, attention map or window "
                        "to point with")
    return {"rate": 100 * hit.double().mean().item(), "what": what,
            "chance": 100 * chance.mean().item()}
