"""RRA, "Focus Longer to See Better" (Shroff et al., CVPRW 2020): a global stream, and a
local stream that looks at patches for T steps through a stacked LSTM with attention
over time.

On an image x of S x S pixels, with two backbones that share no weights:

    global  z_g = W_g GAP(F_g(x)) + b_g                                   (B, K)
    local   v_t = GAP(F_l(p_t)),  p_t the patch of step t = 1..T          (B, T, c)
            o_1..o_T = LSTM(v_1..v_T)                 2 layers, hidden H  (B, T, H)
            a_t = softmax_t(w^T o_t),  h = sum_t a_t o_t          (B, T), (B, H)
            z_l = W_l h + b_l                                             (B, K)
    loss    L = CE(z_g, y) + lambda CE(z_l, y)        ce_global, ce_local
    predict z = z_g + lambda z_l

Patches (fglib.models.patches) are squares of patch * S pixels cut from the image the network
sees (after the training engine's crop and flip, so no mapping is needed), resized to
patch_pixels:
- source "centre": the centre square, the same for every image (no annotation);
- source "peaks": squares around the ranked peaks, with non-maximum suppression, of a
  class-agnostic activation map sum_k F_k (never a class's map, so nothing depends on
  the label at test time). The map comes from a frozen network: the backbone of the
  trained baseline run `cam_run` (a run key; its weights file `cam_weights` is handed in,
  found by fglib.experiments.runner.run_files: the analogue of the official code's
  proposals from another method),
  or, without one, the global stream's own map, detached.
- The ground-truth part windows of the issue (an oracle) need the engine to pass each
  image's parts through its augmentation; the engine does not yet, so there is no such
  source here (fglib.models.patches.map_points is the mapping it will use).
Sequences: "repeat" feeds one patch at every step (the official code): in training a
patch drawn at random among the `proposals` best, at evaluation the best one ("top") or
the logits averaged over all of them ("mean"); "distinct" feeds the T best patches in
rank order (the paper's recursive refinement). Evaluation draws nothing at random.
Controls: lstm=False replaces LSTM and attention by the mean of the v_t;
local_input="image" gives the second stream the whole image (two networks' summed
logits: an ensemble); streams="local" trains and predicts with the local stream only.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fglib.models.heads import BatchNeeds, LinearHead, full, gap
from fglib.models.patches import cut, ranked_peaks, square_boxes

SOURCES = ("centre", "peaks")
SEQUENCES = ("repeat", "distinct")
EVALUATIONS = ("top", "mean")
STREAMS = ("both", "local")
INPUTS = ("patch", "image")


class TemporalAttention(nn.Module):
    """a_t = softmax_t(w^T o_t), h = sum_t a_t o_t: (B, T, H) -> h (B, H), a (B, T)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w = nn.Linear(hidden, 1, bias=False)

    def forward(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = full(self.w(o).squeeze(-1)).softmax(1)  # a_t = softmax_t(w^T o_t)
        return (a[..., None].to(o.dtype) * o).sum(1), a  # h = sum_t a_t o_t


class RRANet(nn.Module):
    """Global stream plus a local stream of T patch steps (the module's docstring)."""

    needs = BatchNeeds()
    has_cam = False            # the prediction is not linear in one map
    label_smoothing = 0.0      # epsilon of both streams' L_ce (build_model: train.label_smoothing)
    head_from_map = False      # the local stream needs the image, not only F_g

    def __init__(self, backbone: nn.Module, num_classes: int, steps: int = 4,
                 lam: float = 1.0, source: str = "centre", sequence: str = "repeat",
                 patch: float = 0.5, patch_pixels: int | None = None,
                 proposals: int = 4, evaluation: str = "top", lstm: bool = True,
                 hidden: int | None = None, local_input: str = "patch",
                 streams: str = "both", cam_run: str | None = None,
                 cam_weights: str | Path | None = None, dropout: float = 0.0):
        super().__init__()
        for name, value, allowed in (("source", source, SOURCES),
                                     ("sequence", sequence, SEQUENCES),
                                     ("evaluation", evaluation, EVALUATIONS),
                                     ("local_input", local_input, INPUTS),
                                     ("streams", streams, STREAMS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if steps < 1 or not 0 < patch <= 1:
            raise ValueError(f"steps must be >= 1 and patch in (0, 1], got {steps}, "
                             f"{patch}")
        if sequence == "distinct" and source == "centre":
            raise ValueError('sequence="distinct" needs several patches: use '
                             'source="peaks"')
        c = backbone.out_channels
        self.backbone = backbone                        # F_g, the global stream
        self.local = copy.deepcopy(backbone)            # F_l: same start, own weights
        self.head = LinearHead(c, num_classes, dropout)  # W_g, b_g
        hidden = hidden or c
        self.lstm = nn.LSTM(c, hidden, num_layers=2, batch_first=True) if lstm else None
        self.attend = TemporalAttention(hidden) if lstm else None
        self.local_head = LinearHead(hidden if lstm else c, num_classes, dropout)  # W_l
        self.steps, self.lam, self.source, self.sequence = steps, lam, source, sequence
        self.patch, self.patch_pixels, self.proposals = patch, patch_pixels, proposals
        self.evaluation, self.local_input = evaluation, local_input
        self.streams = streams
        self._frozen: list[nn.Module] = []              # outside the module tree
        if cam_run is not None:                         # a frozen baseline's backbone
            if cam_weights is None:
                raise ValueError(
                    f"cam_run={cam_run!r} needs that run's weights file as cam_weights "
                    "(the engine passes RunFiles.proposals, which "
                    "fglib.experiments.runner.run_files finds)")
            net = copy.deepcopy(backbone)
            state = torch.load(cam_weights, map_location="cpu", weights_only=True)
            net.load_state_dict({k[len("backbone."):]: v.float()
                                 for k, v in state.items() if k.startswith("backbone.")})
            self._frozen.append(net.requires_grad_(False).eval())

    @property
    def cam_net(self) -> nn.Module | None:
        """The frozen proposal network: held outside the module tree, so it is neither
        trained nor saved with the model (its weights are those of run `cam_run`)."""
        return self._frozen[0] if self._frozen else None

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)                     # .to(), .double(), .cuda() ...
        for net in self._frozen:
            net._apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for net in self._frozen:
            net.eval()                                  # frozen: running statistics too
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The global stream's map F_g: (B, c, h, w)."""
        return self.backbone(x)

    def cam(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        raise TypeError("RRANet has no class activation map: its prediction sums two "
                        "streams, one of them on patches")

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        raise TypeError("RRANet's logits need the image (the local stream cuts patches "
                        "from it), not only the global map: call the model on images")

    def candidates(self, x: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """Ranked patch boxes (B, n, 4): n = 1 for the centre, else `proposals` (or T
        for the distinct sequence, if more)."""
        size = (x.shape[-1], x.shape[-2])               # (W, H)
        side = self.patch * min(size)
        if self.source == "centre":
            centre = torch.tensor([size[0] / 2, size[1] / 2], device=x.device)
            return square_boxes(centre.expand(len(x), 1, 2), side, size)
        with torch.no_grad():                           # class-agnostic: sum_k F_k
            net_map = fmap if self.cam_net is None else self.cam_net(x)
            a = full(net_map.detach()).sum(1)
        n = max(self.proposals, self.steps if self.sequence == "distinct" else 1)
        return square_boxes(ranked_peaks(a, n, size, side / 2), side, size)

    def patch_features(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """v = GAP(F_l(patch)) for every box: (B, n, 4) -> (B, n, c)."""
        side = self.patch_pixels or max(1, round(self.patch * min(x.shape[-2:])))
        p = cut(x, boxes, side)                         # (B, n, C, side, side)
        b, n = p.shape[:2]
        return gap(self.local(p.flatten(0, 1))).reshape(b, n, -1)

    def local_logits(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps v (B, T, c) -> z_l (B, K) and the attention a (B, T)."""
        if self.lstm is None:                           # control: mean over the steps
            return self.local_head(v.mean(1)), torch.full(v.shape[:2], 1 / v.shape[1],
                                                             device=v.device)
        o, _ = self.lstm(v)                             # (B, T, H)
        h, a = self.attend(o)
        return self.local_head(h), a

    def sequences(self, x: torch.Tensor, fmap: torch.Tensor,
                  boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The local stream's inputs v: (B, S, T, c), S sequences of T steps per image.
        Without `boxes` the mode's own patches (training or evaluation); with boxes
        (B, n, 4), best first, those instead: "repeat" makes each box a sequence of its
        own (S = n), "distinct" feeds the first T as the steps (S = 1)."""
        t = self.steps
        if self.local_input == "image":                 # control: the whole image
            return gap(self.local(x))[:, None, None].expand(-1, 1, t, -1)
        given = boxes is not None
        if not given:
            boxes = self.candidates(x, fmap)            # (B, n, 4), best first
        if self.sequence == "distinct":                 # the T best, in rank order
            return self.patch_features(x, boxes[:, :t])[:, None]
        if self.training and not given:                 # one random proposal, repeated
            pick = torch.randint(0, boxes.shape[1], (len(x),), device=x.device)
            boxes = boxes[torch.arange(len(x)), pick][:, None]
        elif self.evaluation == "top" and not given:    # given: every box a sequence
            boxes = boxes[:, :1]
        v = self.patch_features(x, boxes)               # (B, S, c)
        return v[:, :, None].expand(-1, -1, t, -1)      # the same patch at every step

    def random_proposals(self, x: torch.Tensor, generator: torch.Generator):
        """One proposal per image drawn at random with `generator`, (B, 1, 4): the
        official test protocol (a random patch per test image), as a contrast."""
        boxes = self.candidates(x, self.features(x))
        pick = torch.randint(0, boxes.shape[1], (len(x),), generator=generator)
        return boxes[torch.arange(len(x)), pick.to(x.device)][:, None]

    def local_stream(self, x: torch.Tensor, fmap: torch.Tensor,
                     boxes: torch.Tensor | None = None):
        """z_l (B, K) and a (B, T), averaged over the sequences of each image."""
        v = self.sequences(x, fmap, boxes)
        outs = [self.local_logits(v[:, i]) for i in range(v.shape[1])]
        return (torch.stack([z for z, _ in outs]).mean(0),
                torch.stack([a for _, a in outs]).mean(0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None):
        """Logits (and, given y, the named losses); `boxes` (B, n, 4) replace the
        model's own patches (see `sequences`)."""
        fmap = self.features(x)
        z_l, _ = self.local_stream(x, fmap, boxes)
        if self.streams == "local":
            logits = z_l
        else:
            z_g = self.head(gap(fmap))
            logits = z_g + self.lam * z_l                # z = z_g + lambda z_l
        if y is None:
            return logits, {}
        eps = self.label_smoothing              # train.label_smoothing
        losses = {"ce_local": self.lam * F.cross_entropy(full(z_l), y,
                                                         label_smoothing=eps)}
        if self.streams == "both":
            ce_global = F.cross_entropy(full(z_g), y, label_smoothing=eps)
            losses = {"ce_global": ce_global, **losses}
        return logits, losses

    def attention_over_time(self, x: torch.Tensor,
                            boxes: torch.Tensor | None = None) -> torch.Tensor:
        """a (B, T) of the evaluation patches (or of `boxes`)."""
        return self.local_stream(x, self.features(x), boxes)[1]

    def step_logits(self, x: torch.Tensor,
                    boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The local classifier read out at each step t from o_t alone: (B, T, K), the
        direct test of "focusing longer" (needs the LSTM)."""
        if self.lstm is None:
            raise TypeError("lstm=False has no per-step outputs")
        v = self.sequences(x, self.features(x), boxes)  # (B, S, T, c)
        o, _ = self.lstm(v.reshape(-1, *v.shape[2:]))   # (B S, T, H)
        return self.local_head(o).unflatten(0, v.shape[:2]).mean(1)
