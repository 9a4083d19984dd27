"""The API-Net chapter's measurements: the gates of confusable pairs, and where CAMs peak."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fglib.models.attention import peak_on_part
from fglib.book.evidence import (class_maps, evenly, feature_maps, hardest_family_pairs,
                            normalised_images, predictions)
from fglib.experiments.measured import FLOAT64, measurement
from fglib.models.heads import gap
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data

@measurement(tol=1e-6, why=FLOAT64)
def pair_gates(runs, shown: int = 3) -> dict:
    """The gates of API-Net runs["model"] on confusable pairs, in float64: in the
    family it classifies worst, each test image is paired with its nearest test image of
    another class of the family (pooled features x = GAP(F)). Returns the family, the
    number of pairs, the gates' statistics and, for `shown` pairs, the test-split
    indices of both images and the maps A = sum_k g_k F_k of image 1 with its own gate
    and its partner's gate, then of image 2 likewise ((shown, 4, h, w))."""
    train_set, test_set = load_data(runs["model"])
    x = normalised_images(train_set, test_set)               # float64
    model = load_model(runs["model"])[0]
    fmap = feature_maps(model, x)                             # F: (N, D, h, w)
    pooled = gap(fmap)                                        # x = GAP(F): (N, D)
    labels = test_set.labels
    correct = predictions(model, x) == labels
    hardest, idx, partner = hardest_family_pairs(correct, labels,
                                                 test_set.families[labels], pooled)
    with torch.no_grad():
        _, (g1, g2), x_m = model.api(pooled[idx], pooled[partner])
    show = evenly(len(idx), shown)

    def gate_map(i, gate):                                    # A = sum_k g_k F_k
        return torch.einsum("k,khw->hw", gate, fmap[i])

    maps = torch.stack([torch.stack([
        gate_map(idx[n], g1[n]), gate_map(idx[n], g2[n]),
        gate_map(partner[n], g2[n]), gate_map(partner[n], g1[n])]) for n in show])
    cos = F.cosine_similarity(g1, g2, dim=1)
    return {"hardest family": hardest, "pairs": len(idx),
            "cosine(g1, g2), hardest family": cos.mean().item(),
            "std of x_m * x_1 (gate input)": (x_m * pooled[idx]).std().item(),
            "std of g_1 over channels": g1.std(1).mean().item(),
            "mean pooled feature x": pooled.mean().item(),
            "image 1": idx[show], "image 2": partner[show], "maps": maps}


@measurement(tol=1e-6, why=FLOAT64)
def cam_on_parts(runs, radius: float = 8.0) -> dict:
    """How often the class activation map of the true class of runs["model"] peaks
    within `radius` pixels of a visible discriminative part of the image's class (%), in
    float64, over all test images and per family of classes."""
    cfg = runs["model"]
    train_set, test_set = load_data(cfg)
    model = load_model(cfg)[0]
    cam = class_maps(model, normalised_images(train_set, test_set), test_set.labels)
    hit = peak_on_part(cam, test_set.parts, test_set.discriminative_parts(),
                       cfg.data.image_size, radius).double()
    fam = test_set.families[test_set.labels]
    return {"all": 100 * hit.mean().item(),
            "by family": {str(f): 100 * hit[fam == f].mean().item()
                          for f in fam.unique().tolist()}}
