"""The papers' training recipes for their CUB-200-2011 results, at the papers' scale.

One `Recipe` per paper: the dotted config fields of the run that gave the paper's CUB number,
each with its source (the paper, its official code, or "not retrieved: the book's choice
because ..."; the facts are those of shared/papers.md), the paper's number, and the known
deviations of the official code as named options. `recipe(name).config(root=...)` is a
RunConfig on the real dataset (files, 448-pixel crops of the image resized to 512, as
fglib.data.files does for every real dataset); `python -m fglib train --recipe NAME --root
DIR` runs it.

Book-wide defaults that every recipe keeps: ImageNet-pretrained torchvision weights
(model.pretrained), SGD with momentum 0.9, a cosine schedule stepped per iteration
(fglib.engine.train), no warm-up unless a recipe says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fglib.core.config import RunConfig, paper_profile


@dataclass(frozen=True)
class Recipe:
    """A paper's training recipe: settings (dotted config fields) with their sources."""

    name: str
    paper: str
    cub_top1: float                     # the paper's CUB-200-2011 top-1 with this backbone
    settings: dict[str, Any]
    sources: dict[str, str]             # setting -> where it comes from
    deviations: dict[str, dict[str, Any]] = field(default_factory=dict)   # official code's

    def config(self, dataset: str = "cub", root: str | None = None,
               deviation: str | None = None, **dotted: Any) -> RunConfig:
        """The recipe's run on `dataset` at `root`, with one of its official-code deviations
        if named, then `dotted` overrides."""
        extra = {}
        if deviation is not None:
            if deviation not in self.deviations:
                raise ValueError(f"recipe {self.name!r} has no deviation {deviation!r}; it has "
                                 f"{sorted(self.deviations) or 'none'}")
            extra = self.deviations[deviation]
        return paper_profile(dataset, root, **{**self.settings, **extra, **dotted})

    def source(self, setting: str) -> str:
        """Where `setting` comes from (its own source, else the sources every recipe shares)."""
        return self.sources.get(setting) or COMMON_SOURCES[setting]

    def where(self) -> str:
        """Where the paper's number is, for the end of a run."""
        if self.cub_top1 != self.cub_top1:          # NaN: no CUB table
            return f"{self.paper}: no CUB table (only 'up to +2 %' over its baseline)"
        return f"{self.paper}: CUB-200-2011 top-1 {self.cub_top1:.1f} %"


NOT_RETRIEVED = "not retrieved: the book's choice"
# Sources shared by every recipe (settings that only name the method or follow from others).
COMMON_SOURCES = {"model.method": "the paper's method",
                  "train.warmup_epochs": "official codes: no warm-up (where retrieved); else "
                                         "the book's choice",
                  "train.batch_size": "classes_per_batch x images_per_class, or the official "
                                      "script's batch",
                  "train.sampler": "balanced where the method pairs images of a class",
                  "train.images_per_class": "the paper's batch composition where retrieved"}

# MAMC's and CIN's shared fine-tuning of ResNet-50 on balanced batches of 32 images (their own
# optimiser settings were not retrieved; each recipe's sources say so).
BALANCED_R50 = {"model.backbone": "resnet50", "train.epochs": 100, "train.lr": 0.01,
                "train.weight_decay": 5e-4, "train.warmup_epochs": 0.0,
                "train.sampler": "balanced", "train.batch_size": 32}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe(
        name="apinet", paper="API-Net (Zhuang et al., AAAI 2020), ResNet-101", cub_top1=88.6,
        settings={"model.method": "apinet", "model.backbone": "resnet101",
                  "train.epochs": 100, "train.lr": 0.01, "train.weight_decay": 5e-4,
                  "train.warmup_epochs": 0.0, "train.freeze_backbone_epochs": 8,
                  "train.sampler": "balanced", "train.classes_per_batch": 30,
                  "train.images_per_class": 4, "train.batch_size": 120},
        sources={"model.backbone": "paper, CUB table: ResNet-101 88.6 (ResNet-50 87.7)",
                 "train.epochs": "official code: cosine over 100 epochs, stepped per iteration",
                 "train.lr": "official code: SGD lr 0.01, momentum 0.9",
                 "train.weight_decay": "official code: 5e-4",
                 "train.freeze_backbone_epochs": "official code: backbone frozen 8 epochs",
                 "train.classes_per_batch": "paper: batches of 30 classes x 4 images",
                 "data.image_size": "official code: 448 crops of the image resized to 512"}),
    Recipe(
        name="mamc", paper="OSME + MAMC (Sun et al., ECCV 2018), ResNet-50", cub_top1=86.2,
        settings={**BALANCED_R50, "model.method": "mamc",
                  "model.options": {"parts": 2, "lam": 0.5, "normalize": False},
                  "train.classes_per_batch": 16, "train.images_per_class": 2},
        sources={"model.backbone": "paper, ablation table: R50 + OSME + MAMC 86.2",
                 "train.weight_decay": NOT_RETRIEVED + " (5e-4, as the other recipes)",
                 "model.options": "paper: L = L_softmax + lambda (L_sasc + L_sadc + L_dasc), "
                                  "lambda = 0.5, P = 2, raw f",
                 "train.images_per_class": "paper: N classes x 2 images",
                 "train.classes_per_batch": NOT_RETRIEVED + " (N = 16, as the book)",
                 "train.lr": NOT_RETRIEVED + " (the book's fine-tuning lr at paper scale)",
                 "train.epochs": NOT_RETRIEVED},
        deviations={"normalised f (Hawkeye)": {"model.options": {"parts": 2, "lam": 0.5,
                                                                  "normalize": True},
                                               "train.label_smoothing": 0.1}}),
    Recipe(
        name="cin", paper="CIN (Gao et al., AAAI 2020), ResNet-50", cub_top1=87.5,
        settings={**BALANCED_R50, "model.method": "cin",
                  "model.options": {"alpha": 2.0, "beta": 0.5},
                  "train.classes_per_batch": 8, "train.images_per_class": 4},
        sources={"model.backbone": "paper, ablation table: R50 + CIN 87.5",
                 "train.weight_decay": NOT_RETRIEVED + " (5e-4, as the other recipes)",
                 "train.classes_per_batch": NOT_RETRIEVED + " (8 x 4 = 32 images)",
                 "model.options": "a public port's alpha 2.0, beta 0.5 (r 512)",
                 "train.sampler": NOT_RETRIEVED + " (pairs need two images of a class)",
                 "train.lr": NOT_RETRIEVED, "train.epochs": NOT_RETRIEVED},
        deviations={"Hawkeye label smoothing": {"train.label_smoothing": 0.1}}),
    Recipe(
        name="rra", paper="RRA (Shroff et al., CVPR-W 2020)", cub_top1=float("nan"),
        settings={"model.method": "rra", "model.backbone": "resnet50",
                  "model.options": {"source": "peaks", "steps": 4, "sequence": "repeat"},
                  "train.epochs": 100, "train.lr": 1e-3, "train.weight_decay": 5e-4,
                  "train.warmup_epochs": 0.0},
        sources={"model.options": "official code: T = 4 (README 10), one patch repeated; "
                                  "the book's proposals: the global stream's own map",
                 "train.lr": "official code: SGD lr 1e-3, momentum 0.9",
                 "train.weight_decay": "official code: 5e-4",
                 "train.epochs": NOT_RETRIEVED + " (the official 500 epochs select on the "
                                                 "test set)",
                 "model.backbone": "official code: VGG; the book's ResNet-50"}),
    Recipe(
        name="mcloss", paper="MC-Loss (Chang et al., TIP 2020), ResNet-50", cub_top1=87.3,
        settings={"model.method": "mcloss", "model.backbone": "resnet50",
                  "model.options": {"mu": 5e-4, "lam": 1.0},
                  "train.epochs": 300, "train.lr": 0.01, "train.head_lr_scale": 10.0,
                  "train.weight_decay": 5e-4, "train.warmup_epochs": 0.0},
        sources={"model.backbone": "paper: ResNet-50 pretrained 87.3 (MC_ResNet50.py)",
                 "train.head_lr_scale": "official: classifier lr 0.1 = 10 x the backbone's",
                 "model.options": "official MC_ResNet50.py: alpha 5e-4 on L_dis, 10 (1 - "
                                  "L_div / xi) inside alpha: mu = 5e-4, lambda = 10 / xi ~ 1",
                 "train.lr": "official: backbone lr 0.01, classifier 0.1 (head_lr_scale 10)",
                 "train.epochs": "official: one cosine over 300 epochs",
                 "train.weight_decay": "official: 5e-4"}),
]}


def recipe(name: str) -> Recipe:
    """The recipe called `name`; an error listing the recipes otherwise."""
    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; the recipes are {', '.join(RECIPES)}")
    return RECIPES[name]
