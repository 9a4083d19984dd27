"""Models: every model maps (images, labels or None) to (logits, dict of named loss
terms).

The registry maps a method name (as used by configs and the CLI) to a builder
`builder(backbone, num_classes, cfg, files) -> nn.Module`. `files` (RunFiles) are the saved
weights a run starts from, resolved by the experiment layer and handed down: a model reads no
results store and no run cache. (A torchvision backbone with pretrained=True still gets its
ImageNet weights through torchvision's own weights API and its hub cache.)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from fglib.models.baseline import BilinearClassifier, GAPClassifier
from fglib.models.apinet import APINet
from fglib.models.mcloss import MCLossClassifier
from fglib.models.cin import ChannelInteractionNet
from fglib.models.mamc import OSMEClassifier
from fglib.models.rra import RRANet


@dataclass(frozen=True)
class RunFiles:
    """The saved weights a run starts from, beyond its config (fglib.experiments.runner.run_files
    finds them for the book's runs; pass your own when you call the engine directly):
    backbone  a small_resnet's weights for model.pretrained=true (the book's pretraining run);
    proposals RRA's frozen proposal network: the weights of run model.options["cam_run"]."""

    backbone: Path | None = None
    proposals: Path | None = None


# Arguments a model gets from ModelConfig's own fields (or the engine), never from
# model.options.
_NOT_OPTIONS = {"self", "backbone", "num_classes", "dropout", "dim", "cam_weights"}


def option_names(method: str) -> list[str]:
    """The settings `method` takes in model.options: its constructor's arguments."""
    params = inspect.signature(MODEL_CLASSES[method].__init__).parameters
    return sorted(p for p in params if p not in _NOT_OPTIONS)


def options_of(cfg, method: str) -> dict:
    """cfg.options (a ModelConfig's), checked against `method`'s settings."""
    if not isinstance(cfg.options, dict):
        raise ValueError(
            f"model.options must be a dict of settings, got {cfg.options!r}"
        )
    allowed = option_names(method)
    unknown = set(cfg.options) - set(allowed)
    if unknown:
        raise ValueError(
            f"model.options {sorted(unknown)} are not settings of {method!r}; "
            f"it takes {allowed or 'none'}"
        )
    return dict(cfg.options)


def build_baseline(backbone, num_classes, cfg, files):
    return GAPClassifier(
        backbone, num_classes, dropout=cfg.dropout, **options_of(cfg, "baseline")
    )


def build_bilinear(backbone, num_classes, cfg, files):
    return BilinearClassifier(
        backbone,
        num_classes,
        dim=cfg.bilinear_dim,
        dropout=cfg.dropout,
        **options_of(cfg, "bilinear"),
    )


def build_mcloss(backbone, num_classes, cfg, files):
    return MCLossClassifier(
        backbone, num_classes, dropout=cfg.dropout, **options_of(cfg, "mcloss")
    )


def build_apinet(backbone, num_classes, cfg, files):
    return APINet(backbone, num_classes, dropout=cfg.dropout, **options_of(cfg, "apinet"))


def build_cin(backbone, num_classes, cfg, files):
    return ChannelInteractionNet(
        backbone, num_classes, dropout=cfg.dropout, **options_of(cfg, "cin")
    )


def build_mamc(backbone, num_classes, cfg, files):
    return OSMEClassifier(
        backbone, num_classes, dropout=cfg.dropout, **options_of(cfg, "mamc")
    )


def build_rra(backbone, num_classes, cfg, files):
    return RRANet(backbone, num_classes, dropout=cfg.dropout, cam_weights=files.proposals,
                  **options_of(cfg, "rra"))


# Each builder's source is part of its method's code fingerprint (fglib.experiments.provenance), so
# a changed way of passing settings to a model makes that method's recorded runs stale,
# and only those.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": build_baseline,
    "bilinear": build_bilinear,
    "mcloss": build_mcloss,
    "apinet": build_apinet,
    "cin": build_cin,
    "mamc": build_mamc,
    "rra": build_rra,
}


# The class behind each method. Its module is part of the code fingerprint of the
# method's runs (fglib.experiments.provenance); tests/test_models.py checks that every method builds
# an instance of it.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "baseline": GAPClassifier,
    "bilinear": BilinearClassifier,
    "mcloss": MCLossClassifier,
    "apinet": APINet,
    "cin": ChannelInteractionNet,
    "mamc": OSMEClassifier,
    "rra": RRANet,
}


def model_module(method: str) -> str:
    """The module that defines `method`'s model, e.g. 'fglib.models.mcloss'."""
    if method not in MODEL_CLASSES:
        raise ValueError(
            f"unknown method {method!r}; known methods: "
            f"{', '.join(sorted(MODEL_CLASSES))}"
        )
    return MODEL_CLASSES[method].__module__


def build_model(method: str, backbone: nn.Module, num_classes: int, cfg,
                files: RunFiles = RunFiles(), label_smoothing: float = 0.0) -> nn.Module:
    """`method`'s model on `backbone`, with cfg's (a ModelConfig's) settings and `files`;
    its classification cross-entropy terms smooth their targets by `label_smoothing`
    (the engine hands in train.label_smoothing)."""
    if method not in MODELS:
        raise ValueError(
            f"unknown method {method!r}; known methods: {', '.join(sorted(MODELS))}"
        )
    model = MODELS[method](backbone, num_classes, cfg, files)
    model.label_smoothing = float(label_smoothing)
    return model
