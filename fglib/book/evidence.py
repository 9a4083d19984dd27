"""What the chapters measure on trained models, in one place so that no chapter
re-implements it.

- `normalised_images`: a split's images as the network sees them, (x / 255 - mean) / std
  with the training split's per-channel statistics, in float64 for the evidence
  sections.
- `in_batches`: any per-image function of a model over a whole split, a batch at a time.
- `feature_maps`, `predictions`, `class_maps`: F, the predicted class and the class
  activation map of given classes, for every image of a split.
- `upsample`: a (h, w) map brought to the image's size for display.
- `smoothed_terms`: the per-step loss terms of some runs with a rolling mean, to plot.
- `relation_similarity`: the mean cosine similarity of part features over MAMC's four sets.
- `first_per_class`, `first_test_images`: the subset of the test split most evidence is measured
  on (the first images of every class), as the network sees it, with its parts.
- `hardest_family_pairs`, `evenly`: confusable pairs in the family a model classifies worst, and
  which of them a figure shows.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from fglib.data.memory import normalise
from fglib.engine.train import load_data
from fglib.models.heads import gap
from fglib.models.mamc import relation_masks
from fglib.models.patches import square_boxes

BATCH = 256


def normalised_images(
    train_set, split, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(N, 3, S, S): split.images normalised with train_set's channel mean and std, as the
    training engine normalises them (fglib.data.memory.normalise), then cast to dtype."""
    return normalise(split.images, *train_set.mean_std()).to(dtype)


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first `per_class` images of every class present, class by
    class."""
    return torch.cat([torch.nonzero(labels == k).flatten()[:per_class]
                      for k in labels.unique().tolist()])


@dataclass
class FirstImages:
    """The first images of every class of a test split, for evidence."""
    index: torch.Tensor      # (n,) indices into the test split
    x: torch.Tensor          # (n, 3, S, S) float64, normalised as the network sees them
    labels: torch.Tensor     # (n,)
    parts: torch.Tensor      # (n, P, 3) float64: x, y, visible
    disc: torch.Tensor       # (n, P) bool: discriminative parts of each image's class
    families: torch.Tensor   # (n,) the family of each image's class
    size: int                # S


def first_test_images(cfg, per_class: int) -> FirstImages:
    """The first `per_class` test images of every class of cfg's dataset."""
    train_set, test_set = load_data(cfg)
    keep = first_per_class(test_set.labels, per_class)
    return FirstImages(keep, normalised_images(train_set, test_set)[keep],
                       test_set.labels[keep], test_set.parts[keep].double(),
                       test_set.discriminative_parts()[keep],
                       test_set.families[test_set.labels[keep]], cfg.data.image_size)


def hardest_family_pairs(correct: torch.Tensor, labels: torch.Tensor,
                         families: torch.Tensor, pooled: torch.Tensor):
    """(family, a, b): the family with the lowest share of `correct` (N,) over its
    images, a the indices of its images, and b for each the nearest image (squared
    distance of the pooled features (N, D)) of another class of that family."""
    shares = {int(f): correct[families == f].double().mean().item()
              for f in families.unique()}
    family = min(shares, key=shares.get)                    # the first of equal shares
    a = torch.nonzero(families == family).flatten()
    d = torch.cdist(pooled[a], pooled[a]) ** 2
    d[labels[a][:, None] == labels[a][None, :]] = float("inf")
    return family, a, a[d.argmin(1)]


def evenly(n: int, k: int) -> list[int]:
    """k of the indices 0..n-1, evenly spaced from 0 (fewer when n < k)."""
    return list(range(0, n, max(1, n // k)))[:k]


def in_batches(
    fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = BATCH
) -> torch.Tensor:
    """torch.cat of fn(*chunks) over chunks of `batch` rows, without gradients."""
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(
            f"in_batches needs tensors of one length, got {[len(t) for t in tensors]}"
        )
    with torch.no_grad():
        return torch.cat(
            [fn(*(t[i : i + batch] for t in tensors)) for i in range(0, n, batch)]
        )


@contextmanager
def evaluating(model):
    """The model in evaluation mode (batch norm's running statistics, no dropout), then
    back in the mode it was in."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def feature_maps(model, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """The backbone's feature maps F of every image, in evaluation mode:
    (N, C, h, w)."""
    with evaluating(model):
        return in_batches(model.features, x, batch=batch)


def predictions(model, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """The predicted class of every image (the test-time network): (N,)."""
    with evaluating(model):
        return in_batches(lambda xb: model(xb)[0].argmax(1), x, batch=batch)


def class_maps(
    model, x: torch.Tensor, classes: torch.Tensor, batch: int = BATCH
) -> torch.Tensor:
    """The class activation map M_c of class classes[n] for every image n, in evaluation
    mode: (N, h, w)."""
    with evaluating(model):
        return in_batches(model.cam, x, classes, batch=batch)


def upsample(a: torch.Tensor, size: int) -> torch.Tensor:
    """A (h, w) map, bilinearly resized to (size, size) for drawing over the image."""
    return F.interpolate(a[None, None].double(), size=(size, size), mode="bilinear")[
        0, 0
    ]


def smoothed_terms(
    history: pd.DataFrame, terms: list[str], window: int = 20
) -> pd.DataFrame:
    """The rows of `terms` of runner.histories(...), with a `smoothed` rolling mean per
    run (variant and seed) and term."""
    h = history[history.term.isin(terms)].copy()
    missing = set(terms) - set(h.term)
    if missing:
        raise ValueError(
            f"no loss term(s) {sorted(missing)} in these runs; "
            f"they log {sorted(set(history.term))}"
        )
    keys = [k for k in ("variant", "seed", "term") if k in h.columns]
    h["smoothed"] = h.groupby(keys)["value"].transform(
        lambda v: v.rolling(window, min_periods=1).mean()
    )
    return h


def multiply_adds(model, x: torch.Tensor) -> dict[str, int]:
    """Multiply-adds of each Conv2d and Linear module in one test-time forward pass of x,
    by module name: out.numel() * (in_channels / groups) * k_h * k_w for a convolution,
    out.numel() * in_features for a linear layer."""
    from torch import nn

    macs: dict[str, int] = {}

    def count(name):
        def hook(m, inputs, out):
            if isinstance(m, nn.Conv2d):
                per = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            else:
                per = m.in_features
            macs[name] = macs.get(name, 0) + out.numel() * per
        return hook

    handles = [m.register_forward_hook(count(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return macs


def relation_similarity(f: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean cosine similarity of the part features f (B, P, d) of one batch over each of
    MAMC's four sets (fglib.models.mamc.relation_masks): {"sasc", "sadc", "dasc",
    "dadc"} -> the mean of cos(f_a, f_j) over every anchor a and every j in its set."""
    b, parts, _ = f.shape
    g = F.normalize(f.reshape(b * parts, -1), dim=1)
    cos = g @ g.t()
    return {name: cos[mask].mean().item()
            for name, mask in relation_masks(labels, parts).items()}


def part_windows(parts: torch.Tensor, which: torch.Tensor, side: float,
                 size: int) -> torch.Tensor:
    """The oracle's patch: a square of `side` pixels around one ground-truth part per
    image, the first visible part among `which` (B, P), else the first visible part,
    else the centre: parts (B, P, 3) -> boxes (B, 1, 4) (fglib.models.patches.square_boxes)."""
    visible = parts[..., 2] > 0
    n = parts.shape[1]
    rank = 2 * (visible & which).long() + visible.long()     # which > visible > hidden
    first = (rank * (n + 1) + torch.arange(n, 0, -1)).argmax(1)   # then earlier parts
    xy = parts[torch.arange(len(parts)), first, :2]
    xy = torch.where(visible.any(1)[:, None], xy, torch.full_like(xy, size / 2))
    return square_boxes(xy[:, None], side, size)


def boxes_cover(boxes: torch.Tensor, parts: torch.Tensor,
                which: torch.Tensor) -> torch.Tensor:
    """(B, n) bool: box j of image b contains a visible part among which[b]; boxes
    (B, n, 4) as (x0, y0, x1, y1), parts (B, P, 3), which (B, P) bool."""
    x, y = parts[:, None, :, 0], parts[:, None, :, 1]           # (B, 1, P)
    b = boxes[..., None]                                         # (B, n, 4, 1)
    inside = (x >= b[:, :, 0]) & (x < b[:, :, 2]) & (y >= b[:, :, 1]) & (y < b[:, :, 3])
    return (inside & ((parts[..., 2] > 0) & which)[:, None]).any(2)


def proposals(model, x: torch.Tensor) -> torch.Tensor:
    """RRA: the model's own ranked patch boxes of every image, (N, n, 4), best first."""
    with evaluating(model):
        return in_batches(lambda xb: model.candidates(xb, model.features(xb)
                                                      if model.cam_net is None else None), x)


def proposal_logits(model, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """RRA ("repeat" sequences): the prediction z_g + lambda z_l with each box of boxes
    (N, n, 4) as the repeated patch: (N, n, K)."""
    def one_batch(xb, bb):
        fmap = model.features(xb)
        z_g = model.head(gap(fmap))
        return torch.stack([z_g + model.lam * model.local_stream(xb, fmap, bb[:, j:j + 1])[0]
                            for j in range(bb.shape[1])], 1)

    with evaluating(model):
        return in_batches(one_batch, x, boxes)


def local_readout(model, x: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """RRA's local stream on given boxes (N, n, 4) (the first as the repeated patch, or the
    first T as the steps of a "distinct" model): the attention over time "a" (N, T) and
    the local classifier read out at each step, "steps" (N, T, K)."""
    def one_batch(xb, bb):
        bb = bb[:, :1] if model.sequence == "repeat" else bb
        v = model.sequences(xb, None, bb)[:, 0]                # (B, T, c)
        o, _ = model.lstm(v)                                    # (B, T, H)
        return torch.cat([model.attend(o)[1][..., None], model.local_head(o)], 2)

    with evaluating(model):
        out = in_batches(one_batch, x, boxes)
    return {"a": out[..., 0], "steps": out[..., 1:]}


def protocols(logits: torch.Tensor, labels: torch.Tensor, draws: int = 10,
              seed: int = 0) -> dict[str, object]:
    """Top-1 (%) of per-proposal logits (B, n, K) under three test rules: "top" (the
    best-ranked proposal), "mean" (logits averaged over the proposals) and "random"
    (one proposal per image drawn at random, the official protocol: a list, one
    accuracy per draw, from a generator seeded with `seed`)."""
    def top1(z):
        return 100 * (z.argmax(1) == labels).double().mean().item()

    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(logits))
    return {"top": top1(logits[:, 0]), "mean": top1(logits.mean(1)),
            "random": [top1(logits[rows, torch.randint(0, logits.shape[1],
                                                        (len(logits),), generator=g)])
                       for _ in range(draws)]}


def parameter_counts(model, x: torch.Tensor) -> dict[str, int]:
    """{"training": the parameters the optimiser updates, "test": the parameters of
    the modules one test-time forward pass of x calls, plus any frozen network the
    model holds outside its module tree (RRA's proposal network, `model.cam_net`)}:
    what the method costs to train and what it keeps at test time."""
    called: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: called.add(id(m)))
             for m in model.modules()]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    used = {id(p): p for m in model.modules() if id(m) in called
            for p in m.parameters(recurse=False)}
    frozen = getattr(model, "cam_net", None)
    extra = sum(p.numel() for p in frozen.parameters()) if frozen is not None else 0
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"training": trained, "test": sum(p.numel() for p in used.values()) + extra}
