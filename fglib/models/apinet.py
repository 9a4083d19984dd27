"""API-Net: attentive pairwise interaction (Zhuang, Wang, Qiao, AAAI 2020).

Training compares images in pairs. With x_1, x_2 in R^D the pooled features of a pair:

    mutual vector  x_m = f_m([x_1, x_2])       f_m: Linear(2D, h), Dropout, Linear(h, D)
    gate vectors   g_i = sigmoid(x_m * x_i)    i in {1, 2}, * element-wise
    interaction    x_i^self = x_i + x_i * g_i,  x_i^other = x_i + x_i * g_j  (j != i)
    scores         p_i^j = softmax(W x_i^j + b)  one classifier for all four features
    loss           L = L_ce + lambda L_rk
                   L_ce = CE over the four x_i^j with labels y_i
                   L_rk = max(0, p_i^other(c_i) - p_i^self(c_i) + eps)  for i in {1, 2}

Pairs: per batch, each image i is paired with its nearest same-class image (intra pair)
and its nearest other-class image (inter pair) by the squared Euclidean distance of the
detached pooled features, so a batch of B images gives 2B pairs. The batch must be
class-balanced (train.sampler="balanced"). At test time there are no pairs:
logits = W GAP(F) + b on one image.

Choices, following the official code (github.com/PeiqinZhuang/API-Net, models.py and
train.py):
- f_m has no non-linearity between its two linear layers; its dropout is 0.5.
- h = min(512, 2D) by default: the official 512 at ResNet scale (D = 2048), and no wider
  than the 2D-dimensional input at book scale (D = 128 gives h = 256).
- Both loss terms are means: L_ce averages over all 4P attentive features of the P
  pairs, and L_rk over the 2P (image, pair) entries [x_1; x_2] (the official
  nn.MarginRankingLoss with reduction "mean"). The paper writes per-pair sums (4 CE
  terms, 2 rank terms); that is 4 (mean CE + (lambda/2) mean rank), so the paper's
  formula with lambda = 1 equals these means with lambda = 0.5 and a 4x learning rate.
- Ties in the nearest-partner search go to the lowest batch index (torch.argmin, like
  numpy's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.heads import BatchNeeds, Classifier, LinearHead, full, gap

PAIRS = ("nearest", "random", "intra", "inter")


def check_batch(labels: torch.Tensor) -> None:
    """Every image needs a same-class and an other-class partner in its batch."""
    classes, counts = labels.unique(return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            "API-Net pairs every image with an image of another class, but this "
            f"batch holds only class {classes.tolist()}: no inter-class partner "
            'exists; use the class-balanced sampler (train.sampler="balanced") with '
            "classes_per_batch >= 2"
        )
    single = classes[counts == 1]
    if len(single):
        raise ValueError(
            f"class(es) {single.tolist()} have a single image in this batch, so "
            "that image has no intra-class partner; API-Net needs the class-balanced "
            'sampler (train.sampler="balanced") with images_per_class >= 2'
        )


def pair_indices(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D), (B,) -> (intra, inter), each (B,): the nearest same-class / other-class
    image of every image.

    Distances are squared Euclidean on the detached features; an image is never its own
    partner; on a tie the lowest batch index wins (torch.argmin returns the first
    minimum)."""
    check_batch(labels)
    f = full(features.detach())
    # d_ij = ||f_i - f_j||^2
    d2 = torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    # argmin_{j != i, y_j = y_i} d_ij
    intra = d2.masked_fill(~same | eye, float("inf")).argmin(1)
    inter = d2.masked_fill(same, float("inf")).argmin(1)  # argmin_{y_j != y_i} d_ij
    return intra, inter


def random_pair_indices(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) -> (intra, inter): a uniformly random same-class (not itself) and other-
    class partner per image.

    Drawn from the default CPU generator, which the training engine seeds and
    checkpoints."""
    check_batch(labels)
    # i.i.d. scores: argmin is uniform
    r = torch.rand(len(labels), len(labels)).to(labels.device)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return r.masked_fill(~same | eye, 2.0).argmin(1), r.masked_fill(same, 2.0).argmin(1)


class APIModule(nn.Module):
    """The API module: (x_1, x_2), each (P, D) ->
    (x_1^self, x_1^other, x_2^self, x_2^other), (g_1, g_2), x_m.
    """

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.5):
        super().__init__()
        hidden = min(512, 2 * dim) if hidden is None else hidden
        self.map1 = nn.Linear(2 * dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.map2 = nn.Linear(hidden, dim)

    def mutual(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The mutual vector of each pair: (P, D)."""
        # x_m = f_m([x_1, x_2])
        return self.map2(self.drop(self.map1(torch.cat([x1, x2], 1))))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        x_m = self.mutual(x1, x2)  # x_m = f_m([x_1, x_2])
        g1 = torch.sigmoid(x_m * x1)  # g_1 = sigmoid(x_m * x_1)
        g2 = torch.sigmoid(x_m * x2)  # g_2 = sigmoid(x_m * x_2)
        x1_self = x1 + x1 * g1  # x_1^self  = x_1 + x_1 * g_1
        x1_other = x1 + x1 * g2  # x_1^other = x_1 + x_1 * g_2
        x2_self = x2 + x2 * g2  # x_2^self  = x_2 + x_2 * g_2
        x2_other = x2 + x2 * g1  # x_2^other = x_2 + x_2 * g_1
        return (x1_self, x1_other, x2_self, x2_other), (g1, g2), x_m


def rank_loss(
    p_self: torch.Tensor,
    p_other: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.05,
) -> torch.Tensor:
    """Score ranking of probabilities (N, K):
    mean_i max(0, p_other[i, c_i] - p_self[i, c_i] + eps).
    """
    s_self = p_self.gather(1, labels[:, None]).squeeze(1)  # p^self(c)
    s_other = p_other.gather(1, labels[:, None]).squeeze(1)  # p^other(c)
    # max(0, p^other(c) - p^self(c) + eps)
    return F.relu(s_other - s_self + margin).mean()


class APINet(Classifier):
    """Backbone + GAP + API module + one shared classifier; at test time a plain GAP
    classifier.

    pairs: "nearest" (paper: intra and inter nearest, 2B pairs), "random" (a random
    same-class and a random other-class partner, 2B pairs), "intra" or "inter" (only
    that nearest pair, B pairs). dropout is the classifier's (0.5 in the paper, training
    only); mlp_dropout the one inside f_m.
    """

    needs = BatchNeeds(
        classes=2,
        images_per_class=2,
        why="API-Net pairs every image with a same-class and an other-class image "
        "of its batch",
    )

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        lam: float = 1.0,
        margin: float = 0.05,
        pairs: str = "nearest",
        use_rank: bool = True,
        hidden: int | None = None,
        mlp_dropout: float = 0.5,
        dropout: float = 0.5,
    ):
        super().__init__()
        if pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}, got {pairs!r}")
        self.backbone = backbone
        self.api = APIModule(backbone.out_channels, hidden, mlp_dropout)
        self.head = LinearHead(backbone.out_channels, num_classes, dropout)
        self.lam, self.margin, self.pairs, self.use_rank = lam, margin, pairs, use_rank

    def partners(
        self, f: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (i1, i2), each (P,): pair p is (image i1[p], image i2[p]); intra
        pairs first, then inter."""
        intra, inter = (
            pair_indices(f, y) if self.pairs != "random" else random_pair_indices(y)
        )
        i = torch.arange(len(y), device=y.device)
        if self.pairs == "intra":
            return i, intra
        if self.pairs == "inter":
            return i, inter
        return torch.cat([i, i]), torch.cat([intra, inter])

    def pair_forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """Everything about the pairs of a batch, for the loss and for visualising the
        gates.

        Returns features f (B, D); i1, i2 (P,); labels y1, y2 (P,); the mutual vectors
        x_m and the gates g1, g2 (P, D); the attentive features and their logits, each a
        dict over "x1_self", "x1_other", "x2_self", "x2_other" of (P, D) / (P, K)."""
        f = gap(self.features(x))  # x = GAP(F): (B, D)
        i1, i2 = self.partners(f, y)
        attentive, (g1, g2), x_m = self.api(f[i1], f[i2])  # x_1 = f[i1], x_2 = f[i2]
        names = ("x1_self", "x1_other", "x2_self", "x2_other")
        attentive = dict(zip(names, attentive))
        logits = {k: self.head(v) for k, v in attentive.items()}  # W x_i^j + b
        return {
            "features": f,
            "i1": i1,
            "i2": i2,
            "y1": y[i1],
            "y2": y[i2],
            "x_m": x_m,
            "g1": g1,
            "g2": g2,
            "attentive": attentive,
            "logits": logits,
        }

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:  # test time: no pairs
            return self.forward_head(self.features(x)), {}
        out = self.pair_forward(x, y)
        z, y1, y2 = out["logits"], out["y1"], out["y2"]
        losses = {
            "ce": self.ce(
                torch.cat([z["x1_self"], z["x1_other"], z["x2_self"], z["x2_other"]]),
                # L_ce, mean over 4P
                torch.cat([y1, y1, y2, y2]),
            )
        }
        if self.use_rank:
            # p_i^self
            p_self = F.softmax(full(torch.cat([z["x1_self"], z["x2_self"]])), 1)
            # p_i^other
            p_other = F.softmax(full(torch.cat([z["x1_other"], z["x2_other"]])), 1)
            # lambda L_rk
            losses["rank"] = self.lam * rank_loss(
                p_self, p_other, torch.cat([y1, y2]), self.margin
            )
        # logits of the B images themselves
        return self.head.fc(out["features"]), losses
