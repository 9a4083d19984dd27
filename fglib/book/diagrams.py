"""Architecture diagrams of the five methods: the data flow from image to logits and loss terms,
in the paper's symbols, with the tensor shapes of the model the book trains.

Every shape is read from a model built from the run's configuration (randomly initialised: the
shapes do not depend on the weights) and one forward pass of the backbone, so a diagram follows
the configuration: nothing here knows 128 channels, 12 x 12 maps or 24 classes.

`architecture(method, cfg, num_classes)` returns the figure. Boxes: grey the input, blue a
module with parameters, white a tensor or an operation without parameters, red a loss term;
dashed arrows run in training only.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from fglib.core.config import RunConfig
from fglib.engine.train import build

COLOURS = {"input": "#e6e6e6", "module": "#d6e6f5", "tensor": "#ffffff", "loss": "#f7d4d0"}


@dataclass(frozen=True)
class Box:
    key: str
    text: str            # matplotlib mathtext allowed; "\n" for a second line
    col: float
    row: float
    kind: str = "tensor"


@dataclass(frozen=True)
class Arrow:
    a: str
    b: str
    label: str = ""
    training_only: bool = False


def draw(boxes: list[Box], arrows: list[Arrow], title: str, width: float = 7.6,
         box_width: float = 0.8, box_height: float = 0.7) -> Figure:
    """Boxes on a grid (col to the right, row down) joined by arrows."""
    top, bottom = min(b.row for b in boxes), max(b.row for b in boxes)
    right = max(b.col for b in boxes)
    fig, ax = plt.subplots(figsize=(width, 0.9 * (bottom - top + 1) + 0.5))
    at = {b.key: b for b in boxes}
    for b in boxes:
        ax.add_patch(FancyBboxPatch((b.col - box_width / 2, -b.row - box_height / 2),
                                    box_width, box_height, boxstyle="round,pad=0.02",
                                    facecolor=COLOURS[b.kind], edgecolor="#444444",
                                    linewidth=0.8))
        ax.text(b.col, -b.row, b.text, ha="center", va="center", fontsize=6.5)
    half = (box_width / 2 + 0.03, box_height / 2 + 0.03)        # the box and its padding
    for a in arrows:
        p, q = at[a.a], at[a.b]
        d = (q.col - p.col, p.row - q.row)                          # in drawing coordinates
        # leave box p and enter box q at their edges: the segment's parameter where it
        # crosses the first edge of an axis-aligned box around its end
        t = min(h / abs(v) for h, v in zip(half, d) if v) if any(d) else 0.0
        start = (p.col + t * d[0], -p.row + t * d[1])
        end = (q.col - t * d[0], -q.row - t * d[1])
        ax.annotate("", xy=end, xytext=start,
                    arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 0.8,
                                "linestyle": "--" if a.training_only else "-",
                                "shrinkA": 0, "shrinkB": 0})
        if a.label:
            ax.text((p.col + q.col) / 2, -(p.row + q.row) / 2 + 0.08, a.label, ha="center",
                    va="bottom", fontsize=6, color="#333333")
    ax.set_xlim(-0.5, right + 0.5)
    ax.set_ylim(-bottom - 0.4, -top + 0.4)
    ax.set_aspect("auto")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def shapes(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, dict[str, int]]:
    """The model of cfg (random weights) and the book-scale sizes: S (image side), c, h, w
    (the backbone's map), K (classes), B (images per batch: N x images per class when the
    batch is class-balanced), N (classes per balanced batch)."""
    options = dict(cfg.model.options or {})
    options.pop("cam_run", None)                 # the proposal network's weights: not needed
    cfg = cfg.override(**{"model.pretrained": False, "model.options": options})
    torch.manual_seed(0)
    model = build(cfg, num_classes).eval()
    s = cfg.data.image_size
    with torch.no_grad():
        _, c, h, w = model.backbone(torch.zeros(1, 3, s, s)).shape
    t = cfg.train
    batch = (t.classes_per_batch * t.images_per_class if t.sampler == "balanced"
             else t.batch_size)
    return model, {"S": s, "c": c, "h": h, "w": w, "K": num_classes, "B": batch,
                   "N": t.classes_per_batch}


def _image(z: dict[str, int], row: float) -> Box:
    """The input box every diagram starts from: the image and its side."""
    return Box("x", f"image\n{z['S']}x{z['S']}", 0, row, "input")


def _apinet(m, z) -> tuple[list[Box], list[Arrow]]:
    c, hid = z["c"], m.api.map1.out_features
    boxes = [
        Box("x", f"images $I_1, I_2$\n{z['S']}x{z['S']}", 0, 0.5, "input"),
        Box("F", f"backbone\n{c}x{z['h']}x{z['w']}\nGAP: $x_1, x_2$", 1, 0.5, "module"),
        Box("fm", f"$f_m$:\n{2 * c}→{hid}→{c}\n$x_m$: {c}", 2, 0, "module"),
        Box("g", f"$g_i =$\n$\\sigma(x_m \\odot x_i)$\n{c} each", 3, 0),
        Box("xi", "$x_i^{self}, x_i^{other}$\n$= x_i +$\n$x_i \\odot g_{i|j}$", 4, 0.5),
        Box("W", f"classifier $W$\n{c}→{z['K']}", 5, 0.5, "module"),
        Box("ce", "$L_{ce}$\n4 features", 6, 0, "loss"),
        Box("rk", "$\\lambda L_{rk}$\nself > other", 6, 1, "loss"),
        Box("test", f"test: $W x$\n{z['K']} logits", 5, 1.5),
    ]
    arrows = [Arrow("x", "F"), Arrow("F", "fm", "pairs", True), Arrow("fm", "g", "", True),
              Arrow("g", "xi", "", True), Arrow("F", "xi", "", True), Arrow("xi", "W", "", True),
              Arrow("W", "ce", "", True), Arrow("W", "rk", "", True), Arrow("F", "test")]
    return boxes, arrows


def _cin(m, z) -> tuple[list[Box], list[Arrow]]:
    c, l, r = z["c"], z["h"] * z["w"], m.h.out_features
    boxes = [
        _image(z, 0),
        Box("X", f"backbone\n$X$: {c}x{l}", 1, 0, "module"),
        Box("W", f"$W$ = softmax\n$(-XX^T)$\n{c}x{c}", 2, 0),
        Box("Z", f"$Z =$\n$\\phi(WX) + X$\n{c}x{z['h']}x{z['w']}", 3, 0, "module"),
        Box("fc", f"GAP, FC\n{c}→{z['K']}", 4, 0, "module"),
        Box("ce", "$L_{ce}$", 5, 0, "loss"),
        Box("pair", "pair $A, B$:\n$\\eta, \\gamma =$\n$\\psi(\\cdot)$", 2, 1, "module"),
        Box("Wab", "$W_{AB} =$\n$|W_A - \\eta W_B|$\n$Z'_A = \\phi(W_{AB}X_A)$\n$+ X_A$", 3, 1),
        Box("h", f"$h$(GAP$(Z')$)\n{c}→{r}", 4, 1, "module"),
        Box("cont", "$\\alpha L_{cont}$", 5, 1, "loss"),
    ]
    arrows = [Arrow("x", "X"), Arrow("X", "W"), Arrow("W", "Z"), Arrow("Z", "fc"),
              Arrow("fc", "ce", "", True), Arrow("W", "pair", "", True),
              Arrow("pair", "Wab", "", True), Arrow("Wab", "h", "", True),
              Arrow("h", "cont", "", True)]
    return boxes, arrows


def _mamc(m, z) -> tuple[list[Box], list[Arrow]]:
    c, parts = z["c"], len(m.osme.excite)
    d = m.osme.w3[0].out_features
    cells = m.osme.w3[0].in_features // c
    boxes = [
        _image(z, 0.5),
        Box("U", f"backbone\n$U$: {c}x{z['h']}x{z['w']}", 1, 0.5, "module"),
        Box("m", f"{parts} excitations\n$m^p$: {c}", 2, 0, "module"),
        Box("S", f"$S^p = m^p \\odot U$\n{parts}x{c}x\n{z['h']}x{z['w']}", 3, 0),
        Box("f", f"$f^p =$\n$W_3^p$ Vec$(S^p)$\n{c * cells}→{d}", 4, 0, "module"),
        Box("fc", f"FC on\n$[f^1, .., f^P]$\n{parts * d}→{z['K']}", 5, 0, "module"),
        Box("ce", "$L_{ce}$", 6, 0, "loss"),
        Box("np", f"N-pair sets\n{z['N']} classes x 2", 5, 1, "tensor"),
        Box("mamc", "$\\lambda (L_{sasc}$\n$+ L_{sadc} + L_{dasc})$", 6, 1, "loss"),
    ]
    arrows = [Arrow("x", "U"), Arrow("U", "m", "GAP"), Arrow("m", "S"),
              Arrow("S", "f"), Arrow("f", "fc"), Arrow("fc", "ce", "", True),
              Arrow("f", "np", "", True), Arrow("np", "mamc", "", True)]
    return boxes, arrows


def _rra(m, z) -> tuple[list[Box], list[Arrow]]:
    c, side = z["c"], max(1, round(m.patch * z["S"]))
    hid, steps = m.lstm.hidden_size, m.steps
    boxes = [
        _image(z, 0.5),
        Box("Fg", f"global\nbackbone\n{c}x{z['h']}x{z['w']}", 1, 0, "module"),
        Box("zg", f"GAP, $W_g$\n$z_g$: {z['K']}", 2, 0, "module"),
        Box("cam", "frozen\nbaseline map:\npeaks", 1, 1, "module"),
        Box("p", f"patch {side}x{side}\nrepeated $T$={steps}", 2, 1),
        Box("Fl", f"local\nbackbone\n$v_t$: {c}", 3, 1, "module"),
        Box("lstm", f"LSTM,\n{m.lstm.num_layers} layers\n$o_t$: {hid}", 4, 1, "module"),
        Box("att", "$a_t$ = softmax$_t$\n$(w^T o_t)$,\n$h = \\sum_t a_t o_t$", 5, 1, "module"),
        Box("zl", f"$W_l$\n$z_l$: {z['K']}", 6, 1, "module"),
        Box("z", f"$z = z_g + \\lambda z_l$\n{z['K']} logits", 6, 0),
        Box("ceg", "$L_{ce}(z_g)$", 2, -1, "loss"),
        Box("cel", "$\\lambda L_{ce}(z_l)$", 7, 1, "loss"),
    ]
    arrows = [Arrow("x", "Fg"), Arrow("Fg", "zg"), Arrow("x", "cam"), Arrow("cam", "p"),
              Arrow("p", "Fl"), Arrow("Fl", "lstm"), Arrow("lstm", "att"),
              Arrow("att", "zl"), Arrow("zl", "z"), Arrow("zg", "z"),
              Arrow("zg", "ceg", "", True), Arrow("zl", "cel", "", True)]
    return boxes, arrows


def _mcloss(m, z) -> tuple[list[Box], list[Arrow]]:
    c, groups = z["c"], m.mc.groups
    sizes = sorted(set(groups))
    xi = " or ".join(str(s) for s in sizes)
    boxes = [
        _image(z, 0.5),
        Box("F", f"backbone\n$F$: {c}x{z['h']}x{z['w']}", 1, 0.5, "module"),
        Box("grp", f"{z['K']} groups $F_i$\n$\\xi_i$ = {xi}\nchannels", 2, 0.5),
        Box("fc", f"GAP, FC\n{c}→{z['K']}", 3, 2, "module"),
        Box("ce", "$L_{CE}$", 4, 2, "loss"),
        Box("mask", "mask $M_i$, max\nover channels,\nmean over $k$", 3, 0),
        Box("dis", "$\\mu L_{dis}$\nCE of $g(F)$", 4, 0, "loss"),
        Box("soft", "softmax over $k$,\nmax over\nchannels, sum", 3, 1),
        Box("div", "$-\\mu\\lambda L_{div}$\nmean of $h(F_i)$", 4, 1, "loss"),
    ]
    arrows = [Arrow("x", "F"), Arrow("F", "grp", "", True), Arrow("F", "fc"),
              Arrow("fc", "ce", "", True), Arrow("grp", "mask", "", True),
              Arrow("mask", "dis", "", True), Arrow("grp", "soft", "", True),
              Arrow("soft", "div", "", True)]
    return boxes, arrows


METHODS = {"apinet": ("API-Net", _apinet), "cin": ("CIN (SCI + CCI)", _cin),
           "mamc": ("OSME + MAMC", _mamc), "rra": ("RRA", _rra), "mcloss": ("MC-Loss", _mcloss)}


def architecture(method: str, cfg: RunConfig, num_classes: int) -> Figure:
    """The diagram of `method` at the scale of cfg (its model built with random weights)."""
    if method not in METHODS:
        raise ValueError(f"no diagram for {method!r}; there are {sorted(METHODS)}")
    if cfg.model.method != method:
        raise ValueError(f"cfg trains {cfg.model.method!r}, not {method!r}: pass the "
                         "method's own configuration")
    name, spec = METHODS[method]
    model, z = shapes(cfg, num_classes)
    boxes, arrows = spec(model, z)
    return draw(boxes, arrows, f"{name} at book scale: batch {z['B']}, {z['K']} classes "
                f"(dashed: training only)")
