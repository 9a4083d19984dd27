"""The CIN chapter's measurements: SCI's channel relations and where CCI's difference points."""
from __future__ import annotations

import math

import torch

from fglib.models.attention import (chance_on_part, channel_parts, parts_hit, peak_on_part,
                             relation_mass)
from fglib.book.evidence import (evenly, first_test_images, hardest_family_pairs, in_batches,
                            predictions)
from fglib.experiments.measured import FLOAT64, measurement
from fglib.models.cin import cci_weights
from fglib.models.heads import gap
from fglib.experiments.runner import load_model


def backbone_relations(model, x, parts, size):
    """X (N, c, h, w), W (N, c, c) and the part each channel peaks on most often (c,):
    a peak counts within a fifth of the image of a part; a silent channel has no
    peak."""
    X = in_batches(model.backbone, x)
    W = in_batches(model.block.weights, X)
    hits = parts_hit(X, parts, size, size / 5)              # (N, c): part of each peak
    hits[X.flatten(2).amax(2) == 0] = -1                     # a silent channel: no peak
    return X, W, channel_parts(hits, parts.shape[1])


@measurement(tol=1e-6, why=FLOAT64)
def channel_relations(runs, per_class: int = 20, matrix: bool = False) -> dict:
    """SCI's weights W of runs["model"] on the first `per_class` test images per
    class, in float64: the mean weight on channel pairs of the same part and of
    different parts (relative to the uniform 1/c), the rows' entropy over log c, the
    weight a row puts on channels silent on the image, the number of channels with a
    part and, with `matrix`, the mean W and each channel's part (figure)."""
    ev = first_test_images(runs["model"], per_class)
    X, W, part_of = backbone_relations(load_model(runs["model"])[0], ev.x, ev.parts,
                                       ev.size)
    p = W.clamp_min(1e-300)
    entropy = -(p * p.log()).sum(2).mean() / math.log(W.shape[1])
    silent = X.flatten(2).amax(2) == 0                       # (N, c): silent channels
    out = {**relation_mass(W.mean(0), part_of),
           "row entropy / log c": entropy.item(),
           "weight on silent channels": (W * silent[:, None, :]).sum(2).mean().item(),
           "channels with a part": int((part_of >= 0).sum())}
    if matrix:
        out.update(mean_w=W.mean(0), part_of=part_of)
    return out


@measurement(tol=1e-6, why=FLOAT64)
def cci_difference(runs, per_class: int = 20, shown: int = 3) -> dict:
    """Where CCI's difference D_A = sum_k |Z'_A,k - Z_A,k| of runs["model"] (a CIN)
    peaks, in float64. In the family the model classifies worst (first `per_class`
    test images per class), each image A is paired with its nearest image B of another
    class of the family (pooled features). Returns the share of pairs (%) whose D_A,
    class map, activation sum_k Z_A and a random peak lie on a discriminative part,
    eta's mean and sd, and for `shown` pairs their test-split indices and maps D_A and
    CAM."""
    cfg = runs["model"]
    ev = first_test_images(cfg, per_class)
    keep, x, labels, parts, size = ev.index, ev.x, ev.labels, ev.parts, ev.size
    cin = load_model(cfg)[0]
    X, W, _ = backbone_relations(cin, x, parts, size)
    correct = predictions(cin, x) == labels
    with torch.no_grad():
        Z, Y, _ = cin.block.interact(X, W)                   # SCI pass, every image
        hardest, a, b = hardest_family_pairs(correct, labels, ev.families,
                                             gap(Z))         # b: nearest other class
        eta = cin.psi(torch.cat([gap(Y[a]), gap(Y[b])], 1)).squeeze(1)
        Zp = cin.block.interact(X[a], cci_weights(W[a], W[b], eta))[0]
        D = (Zp - Z[a]).abs().sum(1)                         # D_A: (pairs, h, w)
        cam = cin.cam(x[a], labels[a])
        act = Z[a].sum(1)                                    # where the features fire
    disc, at = ev.disc[a], parts[a]

    def rate(maps):
        hit = peak_on_part(maps, at, disc, size, size / 5)
        return 100 * hit.double().mean().item()

    chance = chance_on_part(D.shape[1:], at, disc, size, size / 5).double().mean()
    show = evenly(len(a), shown)
    return {"hardest family": hardest, "pairs": len(a),
            "eta mean": eta.mean().item(), "eta sd": eta.std().item(),
            "peak on a discriminative part (%)": {
                "CCI difference D_A": rate(D), "class activation map": rate(cam),
                "activation sum_k Z_A": rate(act),
                "random peak (chance)": 100 * chance.item()},
            "image A": keep[a[show]], "neighbour B": keep[b[show]],
            "D_A": D[show], "cam": cam[show]}
