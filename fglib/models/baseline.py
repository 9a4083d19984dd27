"""The two reference heads of the baseline chapter.

GAPClassifier:      z = W . mean_{h,w} F[:, h, w] + b                      (global average pooling + FC)
BilinearClassifier: B = (1/HW) sum_{h,w} F[:, h, w] F[:, h, w]^T          (B-CNN, Lin et al. 2015)
                    z = W . l2norm(sign(B) sqrt|B|) + b
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GAPClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)                                      # F: (B, C, h, w)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        fmap = self.features(x)
        logits = self.fc(self.dropout(fmap.mean((2, 3))))           # GAP then FC
        losses = {} if y is None else {"ce": F.cross_entropy(logits, y)}
        return logits, losses

    def cam(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Class activation map M_c = sum_k W[c, k] F_k (Zhou et al. 2016): (B, h, w)."""
        fmap = self.features(x)
        return torch.einsum("bk,bkhw->bhw", self.fc.weight[cls], fmap)


def bilinear_pool(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C*C): average outer product, signed square root, L2 normalisation.

    Computed in float32 even under mixed precision: the square root of tiny co-activations and the
    normalisation lose all precision in bfloat16.
    """
    b, c, h, w = fmap.shape
    if fmap.dtype in (torch.float16, torch.bfloat16):
        fmap = fmap.float()
    with torch.autocast(fmap.device.type, enabled=False):
        return _bilinear_pool_fp32(fmap.reshape(b, c, h * w), h * w)


def _bilinear_pool_fp32(x: torch.Tensor, hw: int) -> torch.Tensor:
    b, c, _ = x.shape
    bil = torch.bmm(x, x.transpose(1, 2)) / hw                      # B = (1/hw) sum x x^T
    bil = bil.reshape(b, c * c)
    bil = torch.sign(bil) * torch.sqrt(bil.abs() + 1e-10)           # sign(B) sqrt|B|
    return F.normalize(bil, dim=1)                                  # B / ||B||_2


class BilinearClassifier(nn.Module):
    """B-CNN with one shared stream; a 1x1 conv first reduces C to `dim` so C^2 stays small."""

    def __init__(self, backbone: nn.Module, num_classes: int, dim: int = 64, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.reduce = nn.Sequential(nn.Conv2d(backbone.out_channels, dim, 1, bias=False), nn.BatchNorm2d(dim),
                                    nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim * dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.backbone(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        logits = self.fc(self.dropout(bilinear_pool(self.features(x))))
        losses = {} if y is None else {"ce": F.cross_entropy(logits, y)}
        return logits, losses
