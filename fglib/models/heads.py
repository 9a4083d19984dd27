"""What every model of the book shares: backbone features, global average pooling and
a linear head.

A model is `features` (the backbone's map F, (B, C, h, w)) followed by a head, as in
timm's forward_features / forward_head split:

    pooled feature  x = GAP(F) = (1/hw) sum_k F[:, k]        (B, C)
    logits          z = W dropout(x) + b                     (B, K)
    class map       M_c = sum_j W[c, j] F_j,  so that  mean_k M_c[k] + b_c = z_c
                    (Zhou et al. 2016)

`BatchNeeds` is what a model asks of its training batches; the engine checks it for any
model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def full(x: torch.Tensor) -> torch.Tensor:
    """Losses, distances and probabilities are computed in at least float32, also under
    autocast."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gap(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C): x = (1/hw) sum_k F[:, :, k]."""
    return fmap.mean((2, 3))


@dataclass(frozen=True)
class BatchNeeds:
    """What a model needs from a training batch.

    classes / images_per_class: the least number of classes in a batch and of images per
    class in it; any value above 1 needs the class-balanced sampler
    (train.sampler="balanced")."""

    classes: int = 1
    images_per_class: int = 1
    why: str = ""

    @property
    def balanced(self) -> bool:
        return self.classes > 1 or self.images_per_class > 1


class LinearHead(nn.Module):
    """z = W dropout(x) + b on pooled features x: (B, D) -> (B, K)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))  # z = W x + b

    def cam(self, fmap: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Class activation maps M_c = sum_j W[c, j] F_j of the classes `cls`: (B, h,
        w)."""
        return torch.einsum("bj,bjhw->bhw", self.fc.weight[cls], fmap)


class Classifier(nn.Module):
    """Backbone, then GAP, then a linear head: the frame every model of the book fills
    in.

    Subclasses build `self.backbone` and `self.head` (a LinearHead over GAP(F) unless
    they say otherwise) and add their loss terms in `forward`. A model whose logits are
    not linear in GAP(F) sets `has_cam = False`."""

    needs = BatchNeeds()
    has_cam = True
    label_smoothing = 0.0   # epsilon of the classification terms (build_model: train.label_smoothing)

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_ce against (1 - eps) one-hot(y) + eps / K, eps = self.label_smoothing."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map F: (B, C, h, w)."""
        return self.backbone(x)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits from the feature map: W dropout(GAP(F)) + b."""
        return self.head(gap(fmap))

    def cam(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Class activation maps of the classes `cls` (one per image): (B, h, w)."""
        if not self.has_cam:
            raise TypeError(
                f"{type(self).__name__} has no class activation map: "
                f"{(self.__doc__ or 'its logits are not linear in GAP(F)').splitlines()[0]}"
            )
        return self.head.cam(self.features(x), cls)
