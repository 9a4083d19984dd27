"""The two reference heads of the baseline chapter.

GAPClassifier:      z = W . mean_{h,w} F[:, h, w] + b     (global average pooling + FC)
BilinearClassifier: B = (1/HW) sum_{h,w} F[:, h, w] F[:, h, w]^T   (B-CNN, Lin et al.)
                    z = W . l2norm(sign(B) sqrt|B|) + b
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.heads import Classifier, LinearHead


class GAPClassifier(Classifier):
    """Backbone + GAP + FC, trained with cross-entropy."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = LinearHead(backbone.out_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        logits = self.forward_head(self.features(x))  # z = W GAP(F) + b
        losses = {} if y is None else {"ce": self.ce(logits, y)}
        return logits, losses


def bilinear_pool(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C*C): average outer product, signed square root, L2
    normalisation.

    Computed in float32 even under mixed precision: the square root of tiny co-
    activations and the normalisation lose all precision in bfloat16."""
    b, c, h, w = fmap.shape
    if fmap.dtype in (torch.float16, torch.bfloat16):
        fmap = fmap.float()
    with torch.autocast(fmap.device.type, enabled=False):
        return _bilinear_pool_fp32(fmap.reshape(b, c, h * w), h * w)


def _bilinear_pool_fp32(x: torch.Tensor, hw: int) -> torch.Tensor:
    b, c, _ = x.shape
    bil = torch.bmm(x, x.transpose(1, 2)) / hw  # B = (1/hw) sum x x^T
    bil = bil.reshape(b, c * c)
    bil = torch.sign(bil) * torch.sqrt(bil.abs() + 1e-10)  # sign(B) sqrt|B|
    return F.normalize(bil, dim=1)  # B / ||B||_2


class BilinearClassifier(Classifier):
    """B-CNN: no class map, since its logits are not linear in the locations' features.

    One shared stream; a 1x1 conv first reduces C to `dim` so C^2 stays small. The
    signed square root and the L2 normalisation of B mix all locations, so a logit is no
    sum of per-location scores."""

    has_cam = False

    def __init__(
        self, backbone: nn.Module, num_classes: int, dim: int = 64, dropout: float = 0.0
    ):
        super().__init__()
        self.backbone = backbone
        self.reduce = nn.Sequential(
            nn.Conv2d(backbone.out_channels, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.head = LinearHead(dim * dim, num_classes, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.backbone(x))

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.head(bilinear_pool(fmap))  # z = W l2norm(sign(B) sqrt|B|) + b

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        logits = self.forward_head(self.features(x))
        losses = {} if y is None else {"ce": self.ce(logits, y)}
        return logits, losses
