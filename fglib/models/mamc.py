"""OSME + MAMC, multi-attention multi-class constraint (Sun et al., ECCV 2018).

With U the backbone's map (B, c, h, w) and P attentions:

    OSME  z = GAP(U)                              one squeeze        (B, c)
          m^p = sigmoid(W_2^p relu(W_1^p z))      P excitations      (B, c)
          S^p = m^p * U                           re-weighted maps   (B, c, h, w)
          f^p = W_3^p Vec(S^p) + b^p              part features      (B, d)
          logits = W_fc [f^1, ..., f^P] + b       on the concatenation
    MAMC  a batch of N classes x 2 images; for the anchor f_i^p the other 2NP - 1
          features split into four sets by attention (same / different) and class
          (same / different): sasc (1), sadc (2(N-1)), dasc (2(P-1)) and
          dadc (2(N-1)(P-1)); with the N-pair loss
              l(P, N) = sum_{f+ in P} log(1 + sum_{f- in N} exp(f^T f- - f^T f+))
          L_sasc = (1/N) sum_anchors l(sasc, sadc u dasc u dadc)
          L_sadc = (1/N) sum_anchors l(sadc, dadc)
          L_dasc = (1/N) sum_anchors l(dasc, dadc)
    loss  L = CE + lambda (L_sasc + L_sadc + L_dasc),  lambda = 0.5, P = 2

Choices:
- Vec(S^p) is the flattened map, the form that attends to space. A fully connected layer
  on it fixes the map size, so the map is first pooled to a fixed grid x grid
  (adaptive average pooling): exactly Vec(S^p) when the map is grid x grid (the book's
  5 x 5), averages over cells on larger maps, and repeats cells on smaller ones.
  pooling="gap" gives f^p = W_3^p GAP(S^p) = W_3^p (m^p * GAP(U)): no spatial attention.
- d = c / 2 by default (the paper's 1024 for c = 2048).
- Options reproducing public versions: self_positive (the anchor counted as its own
  positive in sasc), normalize (L2-normalised f) and divisor="2NP" instead of N.
  terms="sasc" is the paper's "sasc only" ablation row; no public version computes it
  (one early commit returns 0, another (2 sadc + dasc) / n).
- The N-pair terms are computed as softplus(logsumexp(negatives) - positive), which is
  log(1 + sum exp(.)) up to torch's softplus threshold (about 1e-12 from the public
  loss) and stable for any magnitude; in float32 or wider.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.blocks import SqueezeExcite
from fglib.models.heads import BatchNeeds, Classifier, full, gap

POOLINGS = ("vec", "gap")
TERMS = ("all", "sasc")
DIVISORS = ("N", "2NP")


class OSME(nn.Module):
    """One squeeze, P excitations: (B, c, h, w) -> part features f (B, P, d)."""

    def __init__(self, channels: int, parts: int = 2, dim: int | None = None,
                 reduction: int = 16, pooling: str = "vec", grid: int = 5):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        dim = dim or max(1, channels // 2)
        self.pooling, self.grid = pooling, grid
        # one SE excitation per attention, all on the squeeze GAP(U)
        self.excite = nn.ModuleList(
            SqueezeExcite(channels, reduction) for _ in range(parts)
        )
        size = channels * grid * grid if pooling == "vec" else channels
        self.w3 = nn.ModuleList(nn.Linear(size, dim) for _ in range(parts))

    def excitations(self, fmap: torch.Tensor) -> torch.Tensor:
        """m^p = sigmoid(W_2^p relu(W_1^p GAP(U))) for every p: (B, P, c)."""
        return torch.stack([se.excitation(fmap) for se in self.excite], 1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        m = self.excitations(fmap)  # (B, P, c)
        feats = []
        for p, w3 in enumerate(self.w3):
            s = m[:, p, :, None, None] * fmap  # S^p = m^p * U
            if self.pooling == "vec":  # Vec(S^p) on a grid x grid map
                v = F.adaptive_avg_pool2d(s, self.grid).flatten(1)
            else:
                v = gap(s)
            feats.append(w3(v))  # f^p = W_3^p Vec(S^p) + b^p
        return torch.stack(feats, 1)  # (B, P, d)


def check_pairs(labels: torch.Tensor) -> None:
    """MAMC needs a batch of N >= 2 classes with exactly 2 images each."""
    classes, counts = labels.unique(return_counts=True)
    if len(classes) < 2 or bool((counts != 2).any()):
        raise ValueError(
            "MAMC needs batches of N classes x 2 images, but this batch holds classes "
            f"{classes.tolist()} with {counts.tolist()} images: use the class-balanced "
            'sampler (train.sampler="balanced") with images_per_class=2 and '
            "classes_per_batch >= 2"
        )


def relation_masks(labels: torch.Tensor, parts: int) -> dict[str, torch.Tensor]:
    """For the 2N * P features ordered (image, attention), the four sets of each anchor:
    {"sasc", "sadc", "dasc", "dadc"} -> (BP, BP) bool, the anchor itself in none."""
    b = len(labels)
    y = labels.repeat_interleave(parts)  # class of feature (i, p)
    att = torch.arange(parts, device=labels.device).repeat(b)  # attention p
    same_c = y[:, None] == y[None, :]
    same_a = att[:, None] == att[None, :]
    self_ = torch.eye(b * parts, dtype=torch.bool, device=labels.device)
    return {"sasc": same_a & same_c & ~self_, "sadc": same_a & ~same_c,
            "dasc": ~same_a & same_c, "dadc": ~same_a & ~same_c}


def npair_terms(
    sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """Per anchor a: sum_{j in pos[a]} log(1 + sum_{k in neg[a]} exp(sim_ak - sim_aj)),
    as softplus(logsumexp_k sim_ak - sim_aj): (A,)."""
    lse = sim.masked_fill(~neg, float("-inf")).logsumexp(1, keepdim=True)  # (A, 1)
    terms = F.softplus(lse - sim)  # log(1 + sum_k exp(sim_ak - sim_aj))
    return terms.masked_fill(~pos, 0.0).sum(1)


def mamc_loss(f: torch.Tensor, labels: torch.Tensor, self_positive: bool = False,
              normalize: bool = False, divisor: str = "N") -> dict[str, torch.Tensor]:
    """The three MAMC terms for part features f (B, P, d), a batch of N classes x 2."""
    check_pairs(labels)
    b, parts, _ = f.shape
    f = full(f).reshape(b * parts, -1)  # features ordered (image, attention)
    s = relation_masks(labels, parts)
    sasc = s["sasc"] | (torch.eye(len(f), dtype=torch.bool, device=f.device)
                        if self_positive else False)
    n = len(labels.unique()) if divisor == "N" else b * parts
    with torch.autocast(f.device.type, enabled=False):  # f^T f in float32 or wider
        if normalize:
            f = F.normalize(f, dim=1)
        sim = f @ f.t()  # f_a^T f_j: (BP, BP)
        return {
            "sasc": npair_terms(sim, sasc, s["sadc"] | s["dasc"] | s["dadc"]).sum() / n,
            "sadc": npair_terms(sim, s["sadc"], s["dadc"]).sum() / n,
            "dasc": npair_terms(sim, s["dasc"], s["dadc"]).sum() / n,
        }


class OSMEClassifier(Classifier):
    """Backbone, OSME, a linear classifier on the concatenated part features; with
    lam > 0 the MAMC terms on the part features (training only)."""

    needs = BatchNeeds(
        classes=2,
        images_per_class=2,
        why="MAMC compares the features of N classes x 2 images inside each batch",
    )
    has_cam = False  # the logits are not linear in GAP(U)

    def __init__(self, backbone: nn.Module, num_classes: int, parts: int = 2,
                 part_dim: int | None = None, pooling: str = "vec", grid: int = 5,
                 lam: float = 0.5, terms: str = "all", self_positive: bool = False,
                 normalize: bool = False, divisor: str = "N", dropout: float = 0.0):
        super().__init__()
        if terms not in TERMS:
            raise ValueError(f"terms must be one of {TERMS}, got {terms!r}")
        if divisor not in DIVISORS:
            raise ValueError(f"divisor must be one of {DIVISORS}, got {divisor!r}")
        c = backbone.out_channels
        self.backbone = backbone
        self.osme = OSME(c, parts, part_dim, pooling=pooling, grid=grid)
        dim = self.osme.w3[0].out_features
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(parts * dim, num_classes)
        self.lam, self.terms = lam, terms
        self.self_positive, self.normalize = self_positive, normalize
        self.divisor = divisor

    def part_features(self, x: torch.Tensor) -> torch.Tensor:
        """f: (B, P, d)."""
        return self.osme(self.features(x))

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """A^p = sum_k m^p_k U_k, where each excitation's channels respond:
        (B, P, h, w)."""
        fmap = self.features(x)
        return torch.einsum("bpc,bchw->bphw", self.osme.excitations(fmap), fmap)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits from the backbone's map: W_fc [f^1, ..., f^P] + b."""
        return self.fc(self.dropout(self.osme(fmap).flatten(1)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        f = self.part_features(x)  # (B, P, d)
        logits = self.fc(self.dropout(f.flatten(1)))  # W_fc [f^1, ..., f^P] + b
        if y is None:
            return logits, {}
        losses = {"ce": self.ce(logits, y)}
        if self.lam > 0:
            t = mamc_loss(f, y, self.self_positive, self.normalize, self.divisor)
            for name in ("sasc",) if self.terms == "sasc" else ("sasc", "sadc", "dasc"):
                losses[name] = self.lam * t[name]  # lambda L_name
        return logits, losses
