"""The RRA chapter's measurements: patches, read-outs per step, test protocols, LSTM norms."""
from __future__ import annotations

import math

import pandas as pd
import torch

from fglib.book.evidence import (boxes_cover, first_test_images, local_readout,
                                 normalised_images, part_windows, proposal_logits, proposals,
                                 protocols)
from fglib.experiments.measured import FLOAT64, measurement
from fglib.models.patches import square_boxes
from fglib.experiments.runner import fresh_model, load_model
from fglib.engine.train import load_data

def _evaluation_set(cfg, per_class: int):
    """The evaluation images (fglib.book.evidence.first_test_images) in float64 as the
    network sees them, their labels, parts and discriminative parts, and the side S."""
    ev = first_test_images(cfg, per_class)
    return ev.x, ev.labels, ev.parts, ev.disc, ev.size


def _share(hit: torch.Tensor) -> float:
    return hit.double().mean().item()


def _top1(right: torch.Tensor) -> float:
    return 100 * _share(right)


def _paired(right_a: torch.Tensor, right_b: torch.Tensor) -> dict[str, float]:
    """b's hits minus a's in points, paired over the images: mean and standard error."""
    d = 100 * (right_b.double() - right_a.double())
    return {"diff": d.mean().item(), "se": d.std().item() / math.sqrt(len(d))}


@measurement(tol=1e-6, why=FLOAT64)
def patch_cover(runs, per_class: int = 12, seed: int = 0,
                gallery: tuple = tuple(range(0, 24, 3))) -> dict:
    """The share of the evaluation images whose patch holds a visible discriminative
    part (any visible part), for the proposals of runs["T = 4"] (its frozen baseline's
    peaks), the centre square, a random square (a generator seeded with `seed`) and the
    oracle's window; and the proposals of the first image of each class in `gallery`."""
    x, y, parts, disc, size = _evaluation_set(runs["T = 4"], per_class)
    model, _ = load_model(runs["T = 4"])
    side = model.patch * size
    boxes = proposals(model, x)                            # (N, 4, 4): the frozen peaks
    g = torch.Generator().manual_seed(seed)
    at_random = torch.rand(len(x), 1, 2, generator=g, dtype=torch.float64) * size
    sources = {
        "peaks: best proposal": boxes[:, :1],
        "peaks: any of the 4": boxes,
        "centre square": square_boxes(torch.full((len(x), 1, 2), size / 2), side, size),
        "random square (control)": square_boxes(at_random, side, size),
        "oracle window": part_windows(parts, disc, side, size),
    }
    every = torch.ones_like(disc)
    cover = pd.DataFrame([
        {"source": name,
         "a discriminative part": _share(boxes_cover(b, parts, disc).any(1)),
         "any visible part": _share(boxes_cover(b, parts, every).any(1))}
        for name, b in sources.items()])
    show = [int(torch.nonzero(y == k).flatten()[0]) for k in gallery]
    return {"cover": cover, "gallery": {"index": show, "boxes": boxes[show]}}


@measurement(tol=1e-6, why=FLOAT64)
def step_readout(runs, per_class: int = 12) -> dict:
    """The local stream of runs["model"] on its own proposals, read out at every step t
    (W_l o_t + b_l) on the evaluation images: top-1 (%) at each step and of the
    attention-weighted z_l = sum_t a_t (W_l o_t + b_l), the last step's read-out minus
    the first's (paired), the mean attention a_t at each step, and every image's
    attention (for the figure)."""
    x, y, _, _, _ = _evaluation_set(runs["model"], per_class)
    model, _ = load_model(runs["model"])
    d = local_readout(model, x, proposals(model, x))       # a (N, T), steps (N, T, K)
    right = d["steps"].argmax(2) == y[:, None]             # (N, T)
    z_l = (d["a"][..., None] * d["steps"]).sum(1)
    return {"steps": [_top1(right[:, t]) for t in range(right.shape[1])],
            "z_l": _top1(z_l.argmax(1) == y),
            "last - first": _paired(right[:, 0], right[:, -1]),
            "mean a_t": d["a"].mean(0).tolist(),
            "a": d["a"],
            "images": len(y)}


@measurement(tol=1e-6, why=FLOAT64 + "; the random draws come from a seeded CPU "
             "generator, the same on every CPU")
def test_protocols(runs, per_class: int = 12, draws: int = 10, seed: int = 0) -> dict:
    """Top-1 (%) of runs["T = 4"] on the evaluation images under the rules of
    fglib.book.evidence.protocols (the best proposal, the mean over the four, `draws`
    random draws seeded with `seed`) and with the oracle's window, and the oracle's hits
    minus the best proposal's (paired)."""
    x, y, parts, disc, size = _evaluation_set(runs["T = 4"], per_class)
    model, _ = load_model(runs["T = 4"])
    window = part_windows(parts, disc, model.patch * size, size)
    z = proposal_logits(model, x, torch.cat([proposals(model, x), window], 1))
    z4, oracle = z[:, :4], z[:, 4]                         # 4 proposals, the oracle
    rules = protocols(z4, y, draws=draws, seed=seed)
    right_top, right_oracle = z4[:, 0].argmax(1) == y, oracle.argmax(1) == y
    return {**rules, "oracle": _top1(right_oracle), "images": len(y),
            "oracle - top": _paired(right_top, right_oracle)}


@measurement(tol=1e-6, why="a float64 forward pass of a freshly built model (its new "
             "weights drawn from torch's seeded CPU generator, the same on every CPU): "
             "CPUs differ by rounding only, ~1e-12 in a norm")
def initial_output_norms(runs, images: int = 64, seed: int = 0) -> list[float]:
    """Mean ||o_t|| at every step t over the first `images` training images, each on
    its best proposal, of the local stream of runs["model"]'s config as the engine
    builds it: the pretrained backbone and a fresh LSTM (torch seeded with `seed`)."""
    cfg = runs["model"]
    train_set, _ = load_data(cfg)
    torch.manual_seed(seed)
    fresh = fresh_model(cfg, train_set.num_classes).double().eval()  # untrained LSTM
    x = normalised_images(train_set, train_set)[:images]
    with torch.no_grad():
        v = fresh.sequences(x, fresh.features(x))[:, 0]    # (n, T, c): best proposal
        o, _ = fresh.lstm(v)                                # (n, T, H)
    return o.norm(dim=2).mean(0).tolist()
