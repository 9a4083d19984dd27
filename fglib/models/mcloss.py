"""MC-Loss: the mutual-channel loss (Chang et al., IEEE TIP 2020).

The last feature map F has N channels split into c groups, one per class; group i holds
xi_i channels (xi_i = xi for all i when N = c * xi; otherwise the first groups get
floor(N/c) channels and the last N mod c groups one more, as the paper's ResNet-50
recipe 2048 = 152 x 10 + 48 x 11).

    discriminality  g(F_i) = (1/WH) sum_k max_j [M_i * F_{i,j,k}]
                    L_dis = CE(softmax(g(F)), y)
    diversity       h(F_i) = sum_k max_j softmax_k(F_{i,j,k})
                    L_div = (1/c) sum_i h(F_i)
    total           L = L_CE + mu * (L_dis - lambda * L_div)

M_i zeroes floor(xi_i / 2) randomly chosen channels of group i (channel-wise
attention/dropout); j runs over the channels of a group (cross-channel max pooling), k
over the W*H locations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.heads import Classifier, LinearHead, full


def channel_groups(
    num_channels: int, num_classes: int, xi: int | None = None
) -> list[int]:
    """Group sizes xi_i, one per class. With xi given, num_channels must equal
    num_classes * xi."""
    if xi is not None:
        if num_channels != num_classes * xi:
            raise ValueError(
                f"MC-Loss needs c x xi = {num_classes} x {xi} = {num_classes * xi} "
                f"channels, but the features have {num_channels}; set the backbone's "
                f"last width to {num_classes * xi} or pass xi=None to split the "
                f"{num_channels} channels into uneven groups"
            )
        return [xi] * num_classes
    base, extra = divmod(num_channels, num_classes)
    if base < 1:
        raise ValueError(
            f"{num_channels} channels cannot give each of {num_classes} classes "
            "a channel"
        )
    return [base] * (num_classes - extra) + [base + 1] * extra


class MCLoss(nn.Module):
    """Computes (L_dis, L_div) of a feature map (B, N, H, W) for labels (B,)."""

    def __init__(self, groups: list[int], mask: str = "batch"):
        super().__init__()
        if mask not in ("batch", "sample", "none"):
            raise ValueError(
                "mask must be 'batch' (shared, as the official code), 'sample' or "
                f"'none', got {mask!r}"
            )
        self.groups, self.mask = list(groups), mask
        xi_max = max(groups)
        # index (c, xi_max) into the channels; padding slots point at channel N, a
        # constant we append
        index = torch.full((len(groups), xi_max), sum(groups), dtype=torch.long)
        slot = torch.zeros(len(groups), xi_max, dtype=torch.bool)
        start = 0
        for i, g in enumerate(groups):
            index[i, :g] = torch.arange(start, start + g)
            slot[i, :g] = True
            start += g
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("slot", slot, persistent=False)

    def grouped(self, fmap: torch.Tensor, pad: float) -> torch.Tensor:
        """(B, N, H, W) -> (B, c, xi_max, H*W) in float32, padding slots filled with
        `pad`."""
        fmap = full(fmap)
        b, n, h, w = fmap.shape
        if n != sum(self.groups):
            raise ValueError(
                f"MC-Loss was built for {sum(self.groups)} channels, the feature map "
                f"has {n}"
            )
        flat = torch.cat(
            [fmap.reshape(b, n, h * w), fmap.new_full((b, 1, h * w), pad)], 1
        )
        return flat[:, self.index]

    def class_channels(self, fmap: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W), (B,) -> (B, xi_max, H, W): the channels F_i of each image's
        class i = classes[b].

        Groups smaller than xi_max are padded with -inf (a padded channel never wins a
        max)."""
        b, _, h, w = fmap.shape
        x = self.grouped(fmap, pad=float("-inf"))  # (B, c, xi_max, HW)
        return x[torch.arange(b, device=x.device), classes].reshape(b, -1, h, w)

    def channel_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B or 1, c, xi_max) in {0, 1}: floor(xi_i/2) random zeros per group (M_i)."""
        rows = batch if self.mask == "sample" else 1
        scores = torch.rand(rows, *self.slot.shape, device=device).masked_fill(
            ~self.slot, 2.0
        )
        rank = scores.argsort(-1).argsort(-1)  # random order inside each group
        drop = torch.tensor([g // 2 for g in self.groups], device=device)
        return ((rank >= drop[None, :, None]) & self.slot).float()

    def discriminality(self, fmap: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.grouped(fmap, pad=float("-inf"))  # (B, c, xi, HW)
        if self.mask != "none" and self.training:
            m = self.channel_mask(len(x), x.device)[..., None]
            # M_i * F_i (pads stay -inf)
            x = torch.where(
                m.bool() | ~self.slot[None, :, :, None], x, torch.zeros_like(x)
            )
        g = x.max(2).values.mean(-1)  # CCMP then GAP: (B, c)
        return F.cross_entropy(g, y)

    def diversity(self, fmap: torch.Tensor) -> torch.Tensor:
        b, n, h, w = fmap.shape
        # spatial softmax per channel
        soft = F.softmax(full(fmap).reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)
        x = self.grouped(soft, pad=0.0)  # (B, c, xi, HW)
        return x.max(2).values.sum(-1).mean()  # sum_k max_j, mean over i and batch

    def forward(
        self, fmap: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminality(fmap, y), self.diversity(fmap)


class MCLossClassifier(Classifier):
    """Backbone + GAP + FC trained with L_CE + mu (L_dis - lambda L_div) on the
    backbone's last map.

    At test time it is the plain GAP classifier: the loss adds no parameters.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        xi: int | None = None,
        mu: float = 1.5,
        lam: float = 20 / (1.5 * 3),  # beta / (alpha xi): official 20, 1.5, xi = 3
        mask: str = "batch",
        use_dis: bool = True,
        use_div: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = LinearHead(backbone.out_channels, num_classes, dropout)
        self.mc = MCLoss(channel_groups(backbone.out_channels, num_classes, xi), mask)
        self.mu, self.lam, self.use_dis, self.use_div = mu, lam, use_dis, use_div

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        fmap = self.features(x)  # F: (B, N, H, W)
        logits = self.forward_head(fmap)  # W GAP(F) + b
        if y is None:
            return logits, {}
        losses = {"ce": self.ce(logits, y)}
        if self.use_dis:
            losses["dis"] = self.mu * self.mc.discriminality(fmap, y)  # mu L_dis
        if self.use_div:
            # -mu lambda L_div
            losses["div"] = -self.mu * self.lam * self.mc.diversity(fmap)
        return logits, losses
