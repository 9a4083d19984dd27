"""Patches for RRA: square boxes on the image the network sees, ranked, clamped and cut.

A point or box is in continuous pixel coordinates of an S x S image: pixel (i, j) covers
[j, j + 1) x [i, i + 1), so its centre is (j + 1/2, i + 1/2), the convention of the
benchmark's part coordinates and of fglib.models.attention.peak_xy. A box is (x0, y0, x1, y1).

- `square_boxes`: squares of a given side around points, shifted (never shrunk) into the
  frame, so every patch has the same size and content from the image only.
- `ranked_peaks`: the k highest cells of a map with non-maximum suppression, as pixel
  points: the weakly supervised proposals.
- `cut`: the boxes' contents at a fixed side: boxes on the pixel grid are copied pixel
  for pixel (then resized bilinearly when the side differs, as the official code crops
  and resizes); boxes off the grid are sampled bilinearly (torchvision's roi_align).
- `augment_params` and `map_points`: where a point of the stored image lands after the
  training engine's random crop and flip (fglib.data.memory.augment), for patches that
  follow the augmentation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    """An image's (width, height) from S (square) or (W, H)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def square_boxes(centres: torch.Tensor, side: float,
                 size: int | tuple[int, int]) -> torch.Tensor:
    """(..., 2) points -> (..., 4) squares of `side` pixels around them, shifted to lie
    inside the frame of size S x S (or W x H)."""
    w, h = _wh(size)
    if side > min(w, h):
        raise ValueError(f"a patch of {side} pixels does not fit an image of {w} x {h}")
    half = side / 2
    x = centres[..., 0].clamp(half, w - half)     # shift the centre, keep the side
    y = centres[..., 1].clamp(half, h - half)
    return torch.stack([x - half, y - half, x + half, y + half], -1)


def ranked_peaks(maps: torch.Tensor, k: int, image_size: int | tuple[int, int],
                 min_distance: float) -> torch.Tensor:
    """(B, h, w) maps -> (B, k, 2) pixel points of the k highest cells, greedily, each
    at least `min_distance` pixels from those taken before (non-maximum suppression).
    When suppression leaves no cell, the remaining points repeat the first one."""
    b, h, w = maps.shape
    width, height = _wh(image_size)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([(jj.flatten() + 0.5) * width / w,
                           (ii.flatten() + 0.5) * height / h], 1).to(maps)  # (hw, 2)
    score = maps.detach().reshape(b, h * w).clone()
    taken = []
    for _ in range(k):
        exhausted = torch.isneginf(score).all(1)
        xy = centres[score.argmax(1)]             # (B, 2): the best cell left
        if taken:
            xy = torch.where(exhausted[:, None], taken[0], xy)
        taken.append(xy)
        near = (centres[None] - xy[:, None]).norm(dim=2) < min_distance  # (B, hw)
        score = score.masked_fill(near, float("-inf"))
    return torch.stack(taken, 1)


def cut(x: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """Images (B, C, S, S) and boxes (B, K, 4) -> patches (B, K, C, side, side).

    Boxes on the pixel grid (integer corners, all of one size s x s) are cropped exactly,
    p[b, k, :, i, j] = x[b, :, y0 + i, x0 + j], then resized bilinearly to `side` when
    s != side. Other boxes are sampled bilinearly at pixel centres (roi_align)."""
    b, k, _ = boxes.shape
    w = boxes[..., 2] - boxes[..., 0]
    on_grid = (bool(torch.equal(boxes, boxes.round())) and w.numel() > 0
               and bool((w == w.flatten()[0]).all())
               and bool((boxes[..., 3] - boxes[..., 1] == w).all()))
    if on_grid:
        s = int(w.flatten()[0])
        steps = torch.arange(s, device=x.device)
        rows = boxes[..., 1].long()[..., None, None] + steps[:, None]  # (B, K, s, 1)
        cols = boxes[..., 0].long()[..., None, None] + steps[None, :]  # (B, K, 1, s)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        p = x.permute(0, 2, 3, 1)[batch, rows, cols]                  # (B, K, s, s, C)
        p = p.permute(0, 1, 4, 2, 3)                                  # (B, K, C, s, s)
        if s == side:
            return p.contiguous()
        p = F.interpolate(p.reshape(b * k, x.shape[1], s, s), size=(side, side),
                          mode="bilinear", align_corners=False)
        return p.reshape(b, k, x.shape[1], side, side)
    index = torch.arange(b, device=x.device, dtype=x.dtype).repeat_interleave(k)
    rois = torch.cat([index[:, None], boxes.reshape(b * k, 4).to(x.dtype)], 1)
    out = roi_align(x, rois, output_size=side, spatial_scale=1.0, sampling_ratio=2,
                    aligned=True)
    return out.reshape(b, k, x.shape[1], side, side)


def augment_params(b: int, padding: int, flip: bool, generator: torch.Generator):
    """The crop offsets (dy, dx) and flips that fglib.data.memory.augment draws from
    `generator` for a batch of b images, drawn in the same order: (B,), (B,) and a
    (B,) bool."""
    dy = dx = torch.zeros(b, dtype=torch.long)
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flipped = (torch.rand(b, generator=generator) < 0.5 if flip
               else torch.zeros(b, dtype=torch.bool))
    return dy, dx, flipped


def map_points(xy: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
               flipped: torch.Tensor, padding: int, size: int) -> torch.Tensor:
    """Points (B, ..., 2) of the stored images -> where they are after crop and flip:
    x' = x + padding - dx, y' = y + padding - dy, then x' -> size - x' when flipped.
    A point cropped out of the frame lands outside [0, size)."""
    extra = (1,) * (xy.dim() - 2)
    x = xy[..., 0] + padding - dx.view(-1, *extra)
    y = xy[..., 1] + padding - dy.view(-1, *extra)
    x = torch.where(flipped.view(-1, *extra), size - x, x)
    return torch.stack([x, y], -1)
