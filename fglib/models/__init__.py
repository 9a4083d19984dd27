"""Models: every model maps (images, labels or None) to (logits, dict of named loss terms).

The registry maps a method name (as used by configs and the CLI) to a builder
`builder(backbone, num_classes, cfg) -> nn.Module`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from fglib.models.baseline import BilinearClassifier, GAPClassifier
from fglib.models.apinet import APINet
from fglib.models.mcloss import MCLossClassifier


def _options(cfg, allowed: set[str], method: str) -> dict:
    unknown = set(cfg.options) - allowed
    if unknown:
        raise ValueError(f"model.options {sorted(unknown)} are not settings of {method!r}; it takes {sorted(allowed)}")
    return dict(cfg.options)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": lambda backbone, num_classes, cfg: GAPClassifier(backbone, num_classes, dropout=cfg.dropout),
    "bilinear": lambda backbone, num_classes, cfg: BilinearClassifier(backbone, num_classes, dim=cfg.bilinear_dim,
                                                                       dropout=cfg.dropout),
    "mcloss": lambda backbone, num_classes, cfg: MCLossClassifier(
        backbone, num_classes, dropout=cfg.dropout,
        **_options(cfg, {"xi", "mu", "lam", "mask", "use_dis", "use_div"}, "mcloss")),
    "apinet": lambda backbone, num_classes, cfg: APINet(
        backbone, num_classes, dropout=cfg.dropout,
        **_options(cfg, {"lam", "margin", "pairs", "use_rank", "hidden", "mlp_dropout"}, "apinet")),
}


def build_model(method: str, backbone: nn.Module, num_classes: int, cfg) -> nn.Module:
    if method not in MODELS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(sorted(MODELS))}")
    return MODELS[method](backbone, num_classes, cfg)
