"""The paper-scale path: images read from files through torchvision transforms and a DataLoader.

The book's benchmark fits in memory (fglib.data.memory); CUB at 448 pixels does not, so real datasets
are decoded batch by batch in DataLoader workers, with the papers' augmentation: resize the shorter
side to 512/448 of the crop, random crop and horizontal flip for training, centre crop for testing,
ImageNet normalisation (the statistics the pretrained backbones expect).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from fglib.data.cub import CUBDataset
from fglib.data.real import open_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def transforms(image_size: int, train: bool, flip: bool = True):
    """torchvision transforms of the papers: resize to 512/448 of the crop, then (random) crop."""
    from torchvision import transforms as T

    resize = int(round(image_size * 512 / 448))
    steps = [T.Resize(resize)]
    steps += [T.RandomCrop(image_size)] + ([T.RandomHorizontalFlip()] if flip else []) if train \
        else [T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


@dataclass
class FileSplit:
    """A dataset split read from files; the same fields the training loop uses from ImageTensors."""
    dataset: Dataset                      # items are dicts with "image" (a normalised tensor) and "label"
    labels: torch.Tensor
    num_classes: int
    workers: int = 0
    families: torch.Tensor | None = None
    parts: torch.Tensor | None = None
    part_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) for the given index batches, decoded in DataLoader workers."""
        loader = DataLoader(self.dataset, batch_sampler=[b.tolist() for b in index_batches],
                            num_workers=self.workers, collate_fn=_collate, persistent_workers=False)
        yield from loader


def _collate(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([it["image"] for it in items]), torch.tensor([int(it["label"]) for it in items])


def open_split(name: str, root, split: str, image_size: int, train: bool, flip: bool = True,
               workers: int = 0) -> FileSplit:
    """A split of a real dataset (or of the benchmark, name 'synth' with root its folder)."""
    if name == "synth":
        dataset = CUBDataset(root, split, transform=transforms(image_size, train, flip), with_parts=False)
    else:
        kwargs = {"with_parts": False} if name in ("cub", "nabirds") else {}
        dataset = open_dataset(name, root, split, transform=transforms(image_size, train, flip), **kwargs)
    labels = torch.tensor(list(dataset.labels), dtype=torch.int64)
    return FileSplit(dataset, labels, int(dataset.num_classes), workers)
