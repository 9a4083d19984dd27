"""CIN: channel interaction networks (Gao, Han, Wang, Huang, Scott, AAAI 2020).

With X in R^{c x l} the backbone's map of one image (l = h w locations):

    SCI   W = softmax_row(-X X^T)                  (c, c): complementary channels
          Y = W X                                  (c, l)
          Z = phi(Y) + X                           phi: a 3 x 3 convolution
          logits = W_fc GAP(Z) + b                 (training and test)
    CCI   for a pair of images A, B (training only)
          eta = psi([Y_A, Y_B]),  gamma = psi([Y_B, Y_A])       psi: a FC to 1
          W_AB = |W_A - eta W_B|,  W_BA = |W_B - gamma W_A|
          Z'_A = phi(W_AB X_A) + X_A,  Z'_B = phi(W_BA X_B) + X_B
    loss  L = CE(Z) + alpha L_cont,  L_cont = mean over the pairs of
          ||h_A - h_B||^2                  if A and B are of one class
          max(0, beta - ||h_A - h_B||)^2   otherwise;   h = h(Z'), a FC to r dims

Choices where the paper is silent or the public port (Hawkeye) differs:
- E = X X^T / tau with tau = 1 (the paper); temperature="l" divides by l like the port,
  which at initialisation makes W's rows almost uniform.
- phi is a 3x3 convolution followed by batch norm whose scale starts at zero, so that
  Z = X at initialisation and a pre-trained backbone's features pass unchanged (the
  non-local block's initialisation); without the norm, a fresh convolution on the large
  fine-tuning features diverges at the recipe's learning rate. The CCI pass normalises
  with the statistics of the batch's SCI pass and leaves the running ones alone, so
  eta = 0 gives Z'_A = Z_A exactly and the test-time statistics are SCI's.
- h's output is L2-normalised, so that distances lie in [0, 2] and the port's margin
  beta = 0.5 has a fixed meaning; unnormalised, the loss diverges in the first steps.
- psi and h see pooled features: psi([GAP(Y_A), GAP(Y_B)]) (2c inputs) and h(GAP(Z'));
  a FC on the flattened maps (2cl inputs, the port's psi) would fix the image size.
- Pairs (`pair_indices`): disjoint pairs, as the paper's "N pairs (2N images)": in a
  class-balanced batch of m >= 4 images per class about half of them positive (exactly
  half when m is a multiple of 4, as the book's 4; two in three at m = 6).
  The paper's sampling could not be retrieved; the port pairs i with i + B/2, which in
  class-blocked batches is never a positive pair (`port_pair_indices`).
- W, Y and the loss are computed in float32 or wider, also under autocast.
- attention: "sci" (softmax(-E)), "pos" (Pos-SCI, softmax(+E)) and the controls
  "identity" (W = I: Z = phi(X) + X) and "uniform" (W = 1/c). block: "sci", or the
  comparison rows "se" and "nonlocal" (fglib.models.blocks) on the same map.
- contrastive: "cci" (CIN), "sci" (the paper's SCI + Cont row: the loss on h(GAP(Z)) of
  the pair, no CCI) or "none".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.blocks import NonLocal, SqueezeExcite
from fglib.models.heads import BatchNeeds, Classifier, LinearHead, full, gap

ATTENTIONS = ("sci", "pos", "identity", "uniform")
BLOCKS = ("sci", "se", "nonlocal")
CONTRASTIVE = ("cci", "sci", "none")


def sci_weights(
    x: torch.Tensor, attention: str = "sci", tau: float = 1.0
) -> torch.Tensor:
    """(B, c, l) -> W (B, c, c): each row a distribution over the c channels."""
    x = full(x)
    b, c, _ = x.shape
    if attention == "identity":
        return torch.eye(c, dtype=x.dtype, device=x.device).expand(b, c, c)
    if attention == "uniform":
        return x.new_full((b, c, c), 1.0 / c)
    sign = -1.0 if attention == "sci" else 1.0  # Pos-SCI: +E
    with torch.autocast(x.device.type, enabled=False):
        e = x @ x.transpose(1, 2) / tau  # E = X X^T / tau: (B, c, c)
        return torch.softmax(sign * e, dim=2)  # W_ij = exp(-E_ij) / sum_k exp(-E_ik)


class SCI(nn.Module):
    """Self-channel interaction: (B, c, h, w) -> Z of the same shape."""

    def __init__(self, channels: int, attention: str = "sci", temperature=1.0):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {ATTENTIONS}, got {attention!r}"
            )
        if temperature != "l" and not float(temperature) > 0:
            raise ValueError(f'temperature must be > 0 or "l", got {temperature!r}')
        self.attention, self.temperature = attention, temperature
        self.phi = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)  # phi = 0 at the start: Z = X

    def weights(self, fmap: torch.Tensor) -> torch.Tensor:
        """W of each image: (B, c, c)."""
        l = fmap.shape[2] * fmap.shape[3]
        tau = l if self.temperature == "l" else float(self.temperature)
        return sci_weights(fmap.flatten(2), self.attention, tau)

    def interact(self, fmap: torch.Tensor, w: torch.Tensor, stats=None) -> tuple:
        """Y = W X and Z = phi(Y) + X for weights w (B, c, c): (Z, Y, stats), with
        phi = BN(conv(Y)). stats (mean, var) of the conv's output: None to use the batch
        norm as usual (batch statistics in training, running ones at test time), or
        given, as the CCI pass does with those of the SCI pass."""
        with torch.autocast(fmap.device.type, enabled=False):
            y = w @ full(fmap).flatten(2)  # Y = W X: (B, c, l)
        y = y.view(fmap.shape).to(fmap.dtype)
        u = self.phi(y)
        if stats is None:
            if self.training:  # the batch's statistics, as self.bn uses them
                v = full(u)
                stats = (v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False))
            else:
                stats = (self.bn.running_mean, self.bn.running_var)
            return self.bn(u) + fmap, y, stats  # Z = phi(Y) + X
        mean, var = (t[None, :, None, None] for t in stats)
        g, b = self.bn.weight[None, :, None, None], self.bn.bias[None, :, None, None]
        u = (full(u) - mean) / (var + self.bn.eps).sqrt() * g + b
        return u.to(fmap.dtype) + fmap, y, stats  # Z' = phi(Y') + X

    def relations(self, fmap: torch.Tensor) -> tuple:
        """(Z, W, Y, stats): the output map, the weights (B, c, c), Y (B, c, h, w) and
        the statistics phi's batch norm used."""
        w = self.weights(fmap)
        z, y, stats = self.interact(fmap, w)
        return z, w, y, stats

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.relations(fmap)[0]


def cci_weights(
    w_a: torch.Tensor, w_b: torch.Tensor, eta: torch.Tensor
) -> torch.Tensor:
    """W_AB = |W_A - eta W_B|: (P, c, c), with eta (P,) one scalar per pair."""
    return (w_a - eta[:, None, None] * w_b).abs()


def contrastive_loss(
    h_a: torch.Tensor, h_b: torch.Tensor, same: torch.Tensor, beta: float
) -> torch.Tensor:
    """Mean over P pairs of ||h_A - h_B||^2 (same class) or max(0, beta - ||.||)^2."""
    d2 = (full(h_a) - full(h_b)).pow(2).sum(1)  # ||h_A - h_B||^2: (P,)
    d = d2.clamp_min(1e-12).sqrt()  # a finite gradient at d = 0
    return torch.where(same, d2, F.relu(beta - d).pow(2)).mean()


def check_batch(labels: torch.Tensor) -> None:
    """Pairs of both kinds need at least two classes with at least 4 images each."""
    classes, counts = labels.unique(return_counts=True)
    if len(classes) < 2 or bool((counts < 4).any()):
        raise ValueError(
            "CIN's contrastive loss pairs images of one class and of two classes, but "
            f"this batch holds classes {classes.tolist()} with {counts.tolist()} "
            "images: "
            'use the class-balanced sampler (train.sampler="balanced") with '
            "classes_per_batch >= 2 and images_per_class >= 4, or model.options "
            "contrastive='none'"
        )


def pair_indices(labels: torch.Tensor) -> tuple:
    """(B,) -> (a, b, same), each (P,): disjoint pairs, the paper's N pairs of 2N
    images.

    Classes in order of first appearance, images in batch order; a class's images 2s and
    2s + 1 form slot s: a positive pair (both of the class) for even s, a negative pair
    for odd s (image 2s with image 2s + 1 of the next class). With m images per class
    that is about B/2 pairs, half of them positive when m is a multiple of 4 (two in
    three at m = 6); an odd last image stays unpaired."""
    check_batch(labels)
    ys = labels.tolist()
    classes = list(dict.fromkeys(ys))
    members = [[i for i, y in enumerate(ys) if y == c] for c in classes]
    a, b = [], []
    for k, own in enumerate(members):
        nxt = members[(k + 1) % len(members)]
        for s in range(len(own) // 2):
            partner = own if s % 2 == 0 else nxt  # even slot: same class
            if 2 * s + 1 < len(partner):
                a.append(own[2 * s])
                b.append(partner[2 * s + 1])
    a, b = torch.tensor(a, device=labels.device), torch.tensor(b, device=labels.device)
    return a, b, labels[a] == labels[b]


def port_pair_indices(labels: torch.Tensor) -> tuple:
    """The public port's pairs, for contrast: image i with image i + B/2, i < B/2."""
    half = len(labels) // 2
    a = torch.arange(half, device=labels.device)
    return a, a + half, labels[a] == labels[a + half]


class ChannelInteractionNet(Classifier):
    """Backbone, an interaction block on its map, GAP, FC; with contrastive != "none"
    a contrastive loss on pairs of the batch (CCI: on Z' of each pair)."""

    needs = BatchNeeds(
        classes=2,
        images_per_class=4,
        why="CIN pairs images of one class and of two classes inside its batch",
    )

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        block: str = "sci",
        attention: str = "sci",
        temperature=1.0,
        contrastive: str = "cci",
        alpha: float = 2.0,
        beta: float = 0.5,
        r: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if contrastive not in CONTRASTIVE:
            raise ValueError(
                f"contrastive must be one of {CONTRASTIVE}, got {contrastive!r}"
            )
        if contrastive == "cci" and block != "sci":
            raise ValueError(
                f"CCI combines the SCI weights of two images, so block={block!r} "
                "needs contrastive='none' (or 'sci' with block='sci')"
            )
        if contrastive == "sci" and block != "sci":
            raise ValueError(f"contrastive='sci' needs block='sci', got {block!r}")
        c = backbone.out_channels
        self.backbone = backbone
        self.block = {
            "sci": lambda: SCI(c, attention, temperature),
            "se": lambda: SqueezeExcite(c),
            "nonlocal": lambda: NonLocal(c),
        }[block]()
        self.head = LinearHead(c, num_classes, dropout)
        self.contrastive, self.alpha, self.beta = contrastive, alpha, beta
        if contrastive != "none":
            self.h = nn.Linear(c, r or min(512, c))  # h: GAP(Z') -> R^r
        if contrastive == "cci":
            self.psi = nn.Linear(2 * c, 1)  # psi: [GAP(Y_A), GAP(Y_B)] -> eta

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Z, the map after the block: (B, c, h, w)."""
        return self.block(self.backbone(x))

    def pair_forward(self, fmap: torch.Tensor, y: torch.Tensor) -> dict:
        """Z, W, Y of the batch and, for the pairs (a, b, same), the maps Z'_A, Z'_B
        (CCI) or Z_A, Z_B (contrastive="sci"), with eta, gamma under CCI."""
        z, w, y_map, stats = self.block.relations(fmap)
        a, b, same = pair_indices(y)
        out = {"z": z, "w": w, "y": y_map, "a": a, "b": b, "same": same}
        if self.contrastive == "sci":
            out["z_a"], out["z_b"] = z[a], z[b]
            return out
        ya, yb = gap(y_map[a]), gap(y_map[b])
        eta = self.psi(torch.cat([ya, yb], 1)).squeeze(1)  # eta = psi([Y_A, Y_B])
        gamma = self.psi(torch.cat([yb, ya], 1)).squeeze(1)  # gamma = psi([Y_B, Y_A])
        w_ab = cci_weights(w[a], w[b], full(eta))  # W_AB = |W_A - eta W_B|
        w_ba = cci_weights(w[b], w[a], full(gamma))  # W_BA = |W_B - gamma W_A|
        # Z'_A = phi(W_AB X_A) + X_A,  Z'_B = phi(W_BA X_B) + X_B
        out["z_a"] = self.block.interact(fmap[a], w_ab, stats)[0]
        out["z_b"] = self.block.interact(fmap[b], w_ba, stats)[0]
        out.update(eta=eta, gamma=gamma, w_ab=w_ab, w_ba=w_ba)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        fmap = self.backbone(x)
        if y is None or self.contrastive == "none":
            logits = self.forward_head(self.block(fmap))  # z = W_fc GAP(Z) + b
            return logits, ({} if y is None else {"ce": self.ce(logits, y)})
        out = self.pair_forward(fmap, y)
        logits = self.forward_head(out["z"])
        h_a = F.normalize(full(self.h(gap(out["z_a"]))), dim=1)  # h(Z'_A), unit length
        h_b = F.normalize(full(self.h(gap(out["z_b"]))), dim=1)
        cont = contrastive_loss(h_a, h_b, out["same"], self.beta)
        return logits, {"ce": self.ce(logits, y), "cont": self.alpha * cont}
