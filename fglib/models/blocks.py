"""Attention blocks that map a feature map to a feature map of the same shape, used as
comparison rows of the CIN chapter (and open to any other head).

    SE (Hu et al. 2018)        s = sigmoid(W_2 relu(W_1 GAP(X)))   (B, c), reduction r
                               Z = s * X                           channel re-weighting
    Non-local (Wang et al.     f_jk = softmax_k(theta(x_j)^T phi(x_k))   (B, l, l)
    2018, embedded Gaussian)   y_j = sum_k f_jk g(x_k)
                               Z = BN(W_z y) + X                   a residual over space

theta, phi, g and W_z are 1 x 1 convolutions (theta, phi, g to c/2 channels, as in the
paper); W_z is followed by batch norm whose scale starts at zero, as in Wang et al., so
Z = X at initialisation and a pre-trained backbone's features pass unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from fglib.models.heads import full, gap


class SqueezeExcite(nn.Module):
    """SE: (B, c, h, w) -> (B, c, h, w), Z = sigmoid(W_2 relu(W_1 GAP(X))) * X."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.w1 = nn.Linear(channels, hidden)
        self.w2 = nn.Linear(hidden, channels)

    def excitation(self, fmap: torch.Tensor) -> torch.Tensor:
        """s = sigmoid(W_2 relu(W_1 GAP(X))): (B, c)."""
        return torch.sigmoid(self.w2(torch.relu(self.w1(gap(fmap)))))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.excitation(fmap)[:, :, None, None] * fmap  # Z = s * X


class NonLocal(nn.Module):
    """Non-local block over the l = h w locations: (B, c, h, w) -> (B, c, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)  # W_z y = 0 at the start: Z = X

    def affinity(self, fmap: torch.Tensor) -> torch.Tensor:
        """f = softmax_k(theta(x_j)^T phi(x_k)): (B, l, l), in float32 or wider."""
        t = full(self.theta(fmap).flatten(2))  # (B, c/2, l)
        p = full(self.phi(fmap).flatten(2))  # (B, c/2, l)
        with torch.autocast(fmap.device.type, enabled=False):
            return torch.softmax(t.transpose(1, 2) @ p, dim=2)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        b, _, h, w = fmap.shape
        f = self.affinity(fmap)  # (B, l, l)
        g = full(self.g(fmap).flatten(2))  # (B, c/2, l)
        with torch.autocast(fmap.device.type, enabled=False):
            y = g @ f.transpose(1, 2)  # y_j = sum_k f_jk g(x_k): (B, c/2, l)
        y = y.view(b, -1, h, w).to(fmap.dtype)
        return self.bn(self.w_z(y)) + fmap  # Z = BN(W_z y) + X
