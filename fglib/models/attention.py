"""Does a model look at the part that tells the classes apart?

Given attention maps A (B, h, w) over an image of S x S pixels (class activation maps, channel
maps, gates...), the peak of A is the centre of its arg-max cell, ((j + 1/2) S/w, (i + 1/2) S/h).
The peak "hits" when it lies within `radius` pixels of a visible discriminative part of the image's
class, the ground truth that the generated benchmark records for every class.
"""
from __future__ import annotations

import torch


def peak_xy(maps: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, h, w) -> (B, 2) pixel coordinates (x, y) of each map's maximum."""
    b, h, w = maps.shape
    flat = maps.reshape(b, h * w).argmax(1)
    i, j = flat // w, flat % w
    return torch.stack([(j + 0.5) * image_size / w, (i + 0.5) * image_size / h], 1)


def distance_to_parts(xy: torch.Tensor, parts: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Distance from each point (B, 2) to the nearest visible part among `which` (B, P) -> (B,), inf if none."""
    d = (parts[..., :2] - xy[:, None, :]).norm(dim=2)                   # (B, P)
    usable = which & (parts[..., 2] > 0)
    return torch.where(usable, d, torch.full_like(d, float("inf"))).min(1).values


def peak_on_part(maps: torch.Tensor, parts: torch.Tensor, which: torch.Tensor, image_size: int,
                 radius: float) -> torch.Tensor:
    """(B,) bool: the map's peak is within radius pixels of one of the visible parts in `which`."""
    return distance_to_parts(peak_xy(maps, image_size), parts, which) <= radius


def chance_on_part(shape: tuple[int, int], parts: torch.Tensor, which: torch.Tensor, image_size: int,
                   radius: float) -> torch.Tensor:
    """(B,) the hit rate of a peak placed uniformly at random on the h x w grid (the chance level)."""
    h, w = shape
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([(jj.flatten() + 0.5) * image_size / w, (ii.flatten() + 0.5) * image_size / h], 1)
    hits = torch.stack([distance_to_parts(c.expand(len(parts), 2), parts, which) <= radius for c in centres], 1)
    return hits.float().mean(1)


def nearest_part(xy: torch.Tensor, parts: torch.Tensor, radius: float) -> torch.Tensor:
    """(B, 2) points -> (B,) index of the nearest visible part within `radius` pixels, or -1 (background)."""
    d = (parts[..., :2] - xy[:, None, :]).norm(dim=2)
    d = torch.where(parts[..., 2] > 0, d, torch.full_like(d, float("inf")))
    dist, idx = d.min(1)
    return torch.where(dist <= radius, idx, torch.full_like(idx, -1))


def parts_hit(maps: torch.Tensor, parts: torch.Tensor, image_size: int, radius: float) -> torch.Tensor:
    """Maps (B, M, h, w), e.g. the xi channels of one class -> (B, M) the part each map's peak lands on (-1: none)."""
    b, m, h, w = maps.shape
    xy = peak_xy(maps.reshape(b * m, h, w), image_size)
    return nearest_part(xy, parts.repeat_interleave(m, 0), radius).reshape(b, m)


def distinct_parts(hits: torch.Tensor) -> torch.Tensor:
    """(B, M) part indices (-1 = none) -> (B,) number of different parts among them."""
    return torch.tensor([len(set(row) - {-1}) for row in hits.tolist()])


def channel_parts(hits: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(B, C) part index of each channel's peak per image (parts_hit; -1 = none) -> (C,)
    the part each channel peaks on most often over the images, -1 where "none" is the
    most frequent (ties go to the lower part index, "none" first)."""
    # counts[k, p + 1]: images on which channel k peaks on part p
    counts = torch.stack([(hits == p).sum(0) for p in range(-1, num_parts)], 1)
    return counts.argmax(1) - 1


def relation_mass(w: torch.Tensor, part_of: torch.Tensor) -> dict[str, float]:
    """Mean weight W_ij over channel pairs i != j on the same part and on different
    parts (channels with part -1 left out), each relative to the uniform weight 1/C:
    above 1, the pairs of that kind get more than an even share of the rows' mass."""
    c = w.shape[0]
    on = part_of >= 0
    same = (part_of[:, None] == part_of[None, :]) & on[:, None] & on[None, :]
    same &= ~torch.eye(c, dtype=torch.bool)
    cross = (part_of[:, None] != part_of[None, :]) & on[:, None] & on[None, :]
    return {"same part": (w[same].mean() * c).item(),
            "different parts": (w[cross].mean() * c).item()}


def part_consistency(hits: torch.Tensor, labels: torch.Tensor) -> float:
    """(B,) part index of one map's peak per image (-1 = none) and the images' classes
    -> the share of images whose peak lands on their class's most frequent part (images
    with no part count as inconsistent; a class with no part hit counts 0)."""
    agree = 0
    for k in labels.unique():
        h = hits[labels == k]
        on = h[h >= 0]
        if len(on):
            agree += int((h == on.mode().values).sum())
    return agree / len(hits)
