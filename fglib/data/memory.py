"""The book-scale fast path: a whole split held in memory as uint8 tensors, augmented in batches.

At 64 pixels a few thousand images take a few tens of MB, so decoding PNGs once and cropping and
flipping whole batches with tensor ops keeps the model, not the data pipeline, on the clock.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class ImageTensors:
    images: torch.Tensor            # (N, 3, S, S) uint8
    labels: torch.Tensor            # (N,) int64, 0-based
    parts: torch.Tensor | None      # (N, P, 3) float32: x, y (in pixels of the S x S image), visible
    families: torch.Tensor | None   # (num_classes,) int64 family of each class, when the dataset has them
    num_classes: int
    part_names: list[str]
    disc_parts: torch.Tensor | None = None   # (num_classes, P) bool: parts that tell a class from its nearest class
    hard: torch.Tensor | None = None         # (num_classes,) bool: the class belongs to a hard family

    def in_hard_family(self) -> torch.Tensor:
        """(N,) bool: whether each image's class is in a hard family (benchmark only)."""
        if self.hard is None:
            raise ValueError("this dataset records no hard families (only the generated benchmark does)")
        return self.hard[self.labels]

    def discriminative_parts(self) -> torch.Tensor:
        """(N, P) bool: for every image, the parts that distinguish its class (benchmark only)."""
        if self.disc_parts is None:
            raise ValueError("this dataset records no discriminative parts (only the generated benchmark does)")
        return self.disc_parts[self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std in [0, 1] units (for input normalisation)."""
        x = self.images.float().div_(255)
        return x.mean((0, 2, 3)), x.std((0, 2, 3))


def _read_families(root: Path, num_classes: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(family id of each class, whether it is a hard family) from the benchmark's families.txt."""
    path = root / "synth" / "families.txt"
    if not path.exists():
        return None, None
    fam, hard = {}, {}
    for line in path.read_text().splitlines():
        if line.strip():
            cid, fid, *_, kind = line.split()     # class id, family id, family name, hard/easy
            fam[int(cid)], hard[int(cid)] = int(fid), kind == "hard"
    ids = sorted(fam)                       # class ids sorted = 0-based labels, as CUBDataset maps them
    if len(ids) != num_classes:
        raise ValueError(f"{path} lists {len(ids)} classes but the dataset has {num_classes}")
    return torch.tensor([fam[i] for i in ids]), torch.tensor([hard[i] for i in ids])


def _read_disc_parts(root: Path, num_classes: int, num_parts: int) -> torch.Tensor | None:
    path = root / "synth" / "discriminative_parts.txt"
    if not path.exists() or num_parts == 0:
        return None
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            cid, _nearest, parts = line.split()[:3]
            rows[int(cid)] = [int(p) - 1 for p in parts.split(",")]      # part ids are 1-based in the file
    ids = sorted(rows)
    if len(ids) != num_classes:
        raise ValueError(f"{path} lists {len(ids)} classes but the dataset has {num_classes}")
    mask = torch.zeros(num_classes, num_parts, dtype=torch.bool)
    for label, cid in enumerate(ids):
        mask[label, rows[cid]] = True
    return mask


def load_tensors(dataset, image_size: int, cache_dir: Path | None = None) -> ImageTensors:
    """Decode every image of a CUBDataset split once, resized to image_size, cached as a .pt file."""
    root = Path(dataset.root)
    key = hashlib.sha1(f"{root.resolve()}|{dataset.split}|{image_size}|v3".encode()).hexdigest()[:12]
    cache = (cache_dir or root) / f".tensors-{dataset.split}-{image_size}-{key}.pt"
    if cache.exists():
        return ImageTensors(**torch.load(cache, weights_only=False))
    n = len(dataset)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    parts = None if dataset.parts is None else torch.from_numpy(np.asarray(dataset.parts, dtype=np.float32)).clone()
    for i in range(n):
        im = dataset.load_image(i)
        sx, sy = image_size / im.width, image_size / im.height
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        if parts is not None:
            parts[i, :, 0] *= sx
            parts[i, :, 1] *= sy
    families, hard = _read_families(root, dataset.num_classes)
    out = dict(images=images, labels=torch.tensor(dataset.labels, dtype=torch.int64), parts=parts,
               families=families, hard=hard, num_classes=dataset.num_classes,
               part_names=list(getattr(dataset, "part_names", [])),
               disc_parts=_read_disc_parts(root, dataset.num_classes, 0 if parts is None else parts.shape[1]))
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")                # processes (DDP ranks) may race here
    torch.save(out, tmp)
    tmp.replace(cache)                       # atomic: a killed run never leaves half a cache file
    return ImageTensors(**out)


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops (pad by `padding`, crop back) and horizontal flips of a batch (B, C, H, W)."""
    b, c, h, w = x.shape
    if padding > 0:
        xp = F.pad(x, (padding,) * 4, mode="replicate" if x.is_floating_point() else "constant")
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]              # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]              # (B, 1, 1, W)
        x = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float, zero mean and unit variance per channel."""
    return (x.float().div_(255) - mean[:, None, None]) / std[:, None, None]
