"""The MAMC chapter's measurements: where the attentions peak, how features relate."""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from fglib.models.attention import parts_hit
from fglib.book.evidence import BATCH, first_test_images, relation_similarity
from fglib.experiments.measured import FLOAT64, measurement
from fglib.experiments.runner import load_model
from fglib.engine.train import epoch_batches


def test_images(runs, per_class: int):
    """The first `per_class` test images of every class as the networks see them
    (float64), their labels, their ground-truth parts (float64) and the image size, for
    runs that share one dataset."""
    cfg = next(iter(runs.values()))
    if any(c.data != cfg.data for c in runs.values()):
        raise ValueError("these runs do not share one dataset; measure them separately")
    ev = first_test_images(cfg, per_class)
    return ev.x, ev.labels, ev.parts, ev.size


def test_batches(labels: torch.Tensor, runs, batches: int) -> list[torch.Tensor]:
    """The first batch of each of `batches` epochs, drawn from the test images as the
    runs drew their training batches (N classes x 2 images); all runs must draw
    alike."""
    drawn = [[epoch_batches(labels, cfg, epoch=e)[0] for e in range(batches)]
             for cfg in runs.values()]
    if any(not torch.equal(a, b) for d in drawn for a, b in zip(d, drawn[0])):
        raise ValueError("these runs draw their batches differently")
    return drawn[0]


def gates_and_maps(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gates m^p (N, P, c) and the maps A^p = sum_k m^p_k U_k (N, P, h, w) of every
    image, from one backbone pass (model.attention_maps computes the same maps)."""
    gates, maps = [], []
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            fmap = model.features(x[i:i + BATCH])
            m = model.osme.excitations(fmap)
            gates.append(m)
            maps.append(torch.einsum("bpc,bchw->bphw", m, fmap))
    return torch.cat(gates), torch.cat(maps)


def part_features(model, x: torch.Tensor) -> torch.Tensor:
    """f (N, P, d) of every image."""
    with torch.no_grad():
        return torch.cat([model.part_features(x[i:i + BATCH])
                          for i in range(0, len(x), BATCH)])


@measurement(tol=1e-6, why=FLOAT64 + "; a peak moves to another cell, or to another "
             "part, only if two cells' values or two distances are that close")
def attention_peaks(runs, per_class: int = 20, radius: float = 0.2) -> dict:
    """One model (runs: {"run": config}), on the first `per_class` test images of every
    class: "hits", the part the peak of each A^p lands on, the nearest visible part
    within radius x the image size, or -1 (images, P); "map correlation", the mean over
    images of the correlation of A^1 and A^2 over the locations; "gate cosine", the mean
    over images of the cosine of the gates m^1 and m^2."""
    x, _, parts, size = test_images(runs, per_class)
    gates, maps = gates_and_maps(load_model(runs["run"])[0], x)
    a1, a2 = maps[:, 0].flatten(1), maps[:, 1].flatten(1)
    corr = [torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(a1, a2)]
    cos = F.cosine_similarity(gates[:, 0], gates[:, 1], 1)
    return {"hits": parts_hit(maps, parts, size, radius * size).to(torch.int8),
            "map correlation": torch.stack(corr).mean().item(),
            "gate cosine": cos.mean().item()}


@measurement(tol=0, why="part indices, no arithmetic on weights: the cells come from "
             "a seeded CPU generator (the same numbers on every CPU), and a float64 "
             "distance to a part would have to lie within ~1e-15 of the radius to "
             "change a hit")
def random_peaks(runs, per_class: int = 20, radius: float = 0.2, peaks: int = 2,
                 seed: int = 0) -> torch.Tensor:
    """The control: `peaks` peaks at random cells of the h x w map of the model (runs:
    {"run": config}), on the same images; hits as attention_peaks counts them."""
    x, _, parts, size = test_images(runs, per_class)
    with torch.no_grad():
        h, w = load_model(runs["run"])[0].features(x[:1]).shape[2:]
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand((len(x), peaks, h, w), generator=g, dtype=torch.float64)
    return parts_hit(maps, parts, size, radius * size).to(torch.int8)


@measurement(tol=1e-6, why=FLOAT64 + "; the maps are scaled to a maximum of 1")
def attention_maps_shown(runs, classes: list[int]) -> dict[str, torch.Tensor]:
    """For each model, the maps A^p (images, P, h, w) of the first test image of each
    class in `classes`, each map divided by its maximum (A >= 0), for drawing."""
    x, labels, _, _ = test_images(runs, per_class=1)
    x = x[[int(torch.nonzero(labels == k)[0]) for k in classes]]
    out = {}
    for name, cfg in runs.items():
        _, maps = gates_and_maps(load_model(cfg)[0], x)
        out[name] = maps / maps.amax((2, 3), keepdim=True)
    return out


@measurement(tol=1e-6, why=FLOAT64 + "; a mean of cosines moves by as little")
def relation_similarities(runs, per_class: int = 20, batches: int = 20) -> dict:
    """One model's mean cosine similarity of its part features over each of MAMC's four
    sets (fglib.book.evidence.relation_similarity), averaged over the first batch of
    each of `batches` epochs, drawn from the test images as the run drew its training
    batches."""
    x, labels, _, _ = test_images(runs, per_class)
    f = part_features(load_model(runs["run"])[0], x)
    drawn = test_batches(labels, runs, batches)
    sims = pd.DataFrame([relation_similarity(f[b], labels[b]) for b in drawn])
    return sims.mean().to_dict()


@measurement(tol=1e-6, why=FLOAT64 + "; cosines lie in [-1, 1]")
def first_batch_cosines(runs, per_class: int = 20) -> dict[str, torch.Tensor]:
    """For each model, the cosine similarity of every two part features f_i^p of the
    first test batch (relation_similarities' first), rows and columns sorted by
    (p, class): (2NP, 2NP), for drawing."""
    x, labels, _, _ = test_images(runs, per_class)
    b = test_batches(labels, runs, 1)[0]
    out = {}
    for name, cfg in runs.items():
        f = part_features(load_model(cfg)[0], x[b])                 # (2N, P, d)
        n_p = f.shape[1]
        g = F.normalize(f.transpose(0, 1).reshape(-1, f.shape[2]), dim=1)
        key = labels[b].repeat(n_p) + 1000 * torch.arange(n_p).repeat_interleave(len(b))
        order = torch.argsort(key, stable=True)                     # by (p, class)
        out[name] = (g @ g.t())[order][:, order]
    return out


@measurement(tol=1e-6, why=FLOAT64 + "; a norm of about 10 moves by ~1e-11")
def feature_norm(runs, per_class: int = 20) -> float:
    """The mean of ||f^p|| over the first `per_class` test images of every class and
    over the attentions p, of one model (runs: {"run": config})."""
    x, _, _, _ = test_images(runs, per_class)
    return part_features(load_model(runs["run"])[0], x).norm(dim=2).mean().item()
