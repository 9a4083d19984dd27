"""The book's "ImageNet": a generated pretraining set whose classes are not the benchmark's.

ImageNet plays two roles for the papers: it is large and varied, so the features it teaches are
generic (edges, colours, textures, shapes, object parts), and it is a different task, so a gain that
comes from pretraining is not a gain from having seen the test classes. This set plays both roles
at book scale:

- most classes are generic **objects**: a shape (13 kinds) filled with a texture (6 patterns) in two
  colours from a 14-colour palette that is not the birds' palette, some with a small badge of a third
  colour at a fixed place (a local detail, as fine-grained classes have). None of this vocabulary
  appears in the benchmark;
- a few classes are **birds** from the benchmark's generator with another seed (ImageNet holds 59
  bird classes among 1000), keeping only those whose attributes differ from every class of the
  book's benchmarks (`BOOK_BENCHMARKS`), so no test class is ever seen in pretraining.

Every image draws the same nuisances as the benchmark (pose, scale, rotation, flips, lighting,
clutter, occluders, pixel noise). The set is written in CUB format and generated deterministically.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fglib.core import paths
from fglib.data import synth

FORMAT_VERSION = 1

PALETTE = {   # object colours (RGB); the birds' palettes are in fglib.data.synth
    "crimson": (200, 20, 60), "orange": (250, 140, 20), "gold": (230, 190, 40),
    "lime": (140, 210, 50), "green": (30, 140, 70), "teal": (20, 150, 150),
    "sky": (90, 170, 240), "navy": (30, 40, 120), "violet": (140, 70, 200),
    "pink": (240, 130, 180), "ivory": (245, 240, 220), "charcoal": (50, 50, 55),
    "maroon": (110, 30, 40), "silver": (180, 185, 195),
}
SHAPES = ("ellipse", "box", "triangle", "diamond", "pentagon", "hexagon", "star", "cross",
          "arrow", "heart", "ring", "crescent", "blob")
PATTERNS = ("solid", "stripes", "dots", "checks", "halves", "rings")
Bird = synth.BirdClass
# The benchmarks the book trains on (data.synth of its configs): the book's own, the one the
# fine-tuning recipe is chosen on, and the replication benchmark (fglib.experiments.regimes). No bird class
# of the pretraining set has the attributes of one of their classes.
BOOK_BENCHMARKS = (synth.SynthConfig(), synth.SynthConfig(seed=7),
                   synth.SynthConfig(seed=1, num_classes=32, families=8))


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretraining set; equal configs give identical bytes."""

    seed: int = 1000
    object_classes: int = 84
    bird_classes: int = 12
    images_per_class: int = 80
    train_fraction: float = 0.75
    image_size: int = 40
    supersample: int = 2
    occlusion_prob: float = 0.3
    pixel_noise: float = 3.0

    def __post_init__(self) -> None:
        if self.object_classes < 0 or self.bird_classes < 0 or self.object_classes + self.bird_classes < 2:
            raise ValueError("PretrainConfig needs at least 2 classes (object_classes + bird_classes)")
        if self.images_per_class < 2 or not 0 < self.train_fraction < 1:
            raise ValueError("PretrainConfig needs images_per_class >= 2 and 0 < train_fraction < 1")

    def key(self) -> str:
        blob = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ObjectClass:
    """A generic object class: shape, texture and colours, and an optional badge."""

    shape: str
    aspect: float                       # height / width of the shape
    pattern: str
    period: float                       # texture period, in object radii
    colors: tuple[str, str]
    badge: tuple[float, str] | None     # (angle of its place on the rim in degrees, colour)

    @property
    def name(self) -> str:
        badge = f"_badge-{self.badge[1]}" if self.badge else ""
        return f"{self.colors[0]}-{self.colors[1]}_{self.pattern}_{self.shape}{badge}"


@lru_cache(maxsize=8)
def object_classes(cfg: PretrainConfig) -> tuple[ObjectClass, ...]:
    """Distinct object classes (shape, pattern, colours and badge never all equal)."""
    rng = synth._rng("pretrain-objects", FORMAT_VERSION, cfg.seed)
    names, out = list(PALETTE), []
    while len(out) < cfg.object_classes:
        a, b = rng.choice(len(names), 2, replace=False)
        badge = None if rng.random() < 0.5 else (float(rng.choice([0, 90, 180, 270])),
                                                  names[int(rng.integers(len(names)))])
        c = ObjectClass(str(rng.choice(SHAPES)), float(rng.choice([0.6, 1.0, 1.5])),
                        str(rng.choice(PATTERNS)), float(rng.choice([0.35, 0.6])),
                        (names[a], names[b]), badge)
        if all((c.shape, c.pattern, c.colors, c.badge) != (o.shape, o.pattern, o.colors, o.badge)
               for o in out):
            out.append(c)
    return tuple(out)


@lru_cache(maxsize=8)
def bird_classes(cfg: PretrainConfig) -> tuple[tuple[synth.SynthConfig, Bird], ...]:
    """Birds of another generator seed, none with a benchmark class's attributes."""
    seen = {bc.attrs for b in BOOK_BENCHMARKS for bc in synth.make_classes(b)}
    bird_cfg = synth.SynthConfig(
        seed=cfg.seed, num_classes=max(4 * cfg.bird_classes, 2 * synth.MAX_FAMILIES),
        families=synth.MAX_FAMILIES, image_size=cfg.image_size,
        supersample=cfg.supersample, occlusion_prob=cfg.occlusion_prob,
        pixel_noise=cfg.pixel_noise)
    fresh = [bc for bc in synth.make_classes(bird_cfg) if bc.attrs not in seen]
    if len(fresh) < cfg.bird_classes:
        raise ValueError(f"only {len(fresh)} bird classes differ from the benchmark's; "
                         "lower bird_classes")
    return tuple((bird_cfg, bc) for bc in fresh[:cfg.bird_classes])


def _outline(c: ObjectClass) -> list[np.ndarray]:
    """Polygons of the shape in unit coordinates (radius about 1); a second one is a hole."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)

    def regular(n, r=1.0, phase=-np.pi / 2):
        a = phase + 2 * np.pi * np.arange(n) / n
        return r * np.stack([np.cos(a), np.sin(a)], 1)

    if c.shape == "ellipse":
        polys = [circle]
    elif c.shape == "box":
        polys = [np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float) * 0.85]
    elif c.shape in ("triangle", "diamond", "pentagon", "hexagon"):
        polys = [regular({"triangle": 3, "diamond": 4, "pentagon": 5, "hexagon": 6}[c.shape])]
    elif c.shape == "star":
        outer, inner = regular(5), regular(5, 0.45, -np.pi / 2 + np.pi / 5)
        polys = [np.stack([outer, inner], 1).reshape(-1, 2)]
    elif c.shape == "cross":
        w = 0.35
        polys = [np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                           (-w, w), (-1, w), (-1, -w), (-w, -w)], float)]
    elif c.shape == "arrow":
        polys = [np.array([(-1, -0.3), (0.2, -0.3), (0.2, -0.8), (1, 0), (0.2, 0.8), (0.2, 0.3),
                           (-1, 0.3)], float)]
    elif c.shape == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        polys = [np.stack([x, y], 1) / 16]
    elif c.shape == "ring":
        polys = [circle, circle * 0.55]
    elif c.shape == "crescent":
        polys = [circle, circle * 0.85 + np.array([0.45, -0.1])]
    else:                                   # blob: a fixed random radial profile per class
        g = synth._rng("blob", c.name)
        r = 1 + 0.3 * sum(g.uniform(-1, 1) * np.cos(k * t + g.uniform(0, 6)) for k in (2, 3, 5))
        polys = [circle * r[:, None] / r.max()]
    return [p * np.array([1.0, c.aspect]) / max(1.0, c.aspect) for p in polys]


def _texture(c: ObjectClass, xy: np.ndarray) -> np.ndarray:
    """Which of the two colours (0 or 1) each point of object coordinates xy (..., 2) takes."""
    x, y = xy[..., 0] / c.period, xy[..., 1] / c.period
    if c.pattern == "solid":
        return np.zeros(x.shape, bool)
    if c.pattern == "stripes":
        return np.floor(x + y) % 2 == 1
    if c.pattern == "dots":
        return (x - np.round(x)) ** 2 + (y - np.round(y)) ** 2 < 0.1
    if c.pattern == "checks":
        return (np.floor(x) + np.floor(y)) % 2 == 1
    if c.pattern == "halves":
        return xy[..., 1] > 0
    return np.floor(np.hypot(x, y)) % 2 == 1                      # rings


def render_object(cfg: PretrainConfig, c: ObjectClass, class_id: int, index: int,
                  ) -> tuple[np.ndarray, tuple[float, float]]:
    """One image (H, W, 3) uint8 of object class c (pose, clutter, lighting, occluders, noise) and
    the object's centre (x, y) in pixels."""
    rng = synth._rng("pretrain-image", cfg.key(), class_id, index)
    canvas = cfg.image_size * cfg.supersample
    scale = canvas * rng.uniform(0.22, 0.4)
    angle, flip = rng.uniform(-np.pi, np.pi), rng.random() < 0.5
    centre = canvas / 2 + rng.uniform(-0.15, 0.15, 2) * canvas
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rot = rot * np.array([[-1.0, 1.0]]) if flip else rot

    def to_image(p):
        return p @ rot.T * scale + centre

    img = synth._background(rng, canvas)
    mask = Image.new("L", (canvas, canvas), 0)
    mdraw = ImageDraw.Draw(mask)
    polys = _outline(c)
    mdraw.polygon([tuple(q) for q in to_image(polys[0])], fill=255)
    for hole in polys[1:]:
        mdraw.polygon([tuple(q) for q in to_image(hole)], fill=0)
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) + 0.5
    local = (np.stack([xx, yy], -1) - centre) / scale @ rot          # rot is orthogonal: inverse = T
    gain = np.clip(1 + rng.uniform(-0.15, 0.15) + rng.uniform(-0.05, 0.05, 3), 0.8, 1.2)
    cols = np.array([PALETTE[k] for k in c.colors], np.float32) * gain
    fill = np.where(_texture(c, local)[..., None], cols[1], cols[0])
    m = np.asarray(mask)[..., None] > 0
    arr = np.where(m, fill, np.asarray(img, np.float32))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if c.badge is not None:
        a = np.deg2rad(c.badge[0])
        spot = to_image(np.array([0.55 * np.cos(a), 0.55 * np.sin(a)]) + 0.22 * _outline(
            ObjectClass("ellipse", 1.0, "solid", 1.0, c.colors, None))[0])
        draw.polygon([tuple(q) for q in spot], fill=tuple(int(v) for v in np.clip(
            np.array(PALETTE[c.badge[1]]) * gain, 0, 255)))
    if rng.random() < cfg.occlusion_prob:
        lo, hi = centre - scale, centre + scale
        for shape, col in synth._occluder(rng, np.concatenate([lo, hi]), canvas):
            synth._fill(draw, shape, col)
    if cfg.supersample > 1:
        img = img.reduce(cfg.supersample)
    arr = np.asarray(img, np.float32) + rng.normal(0, cfg.pixel_noise, (cfg.image_size, cfg.image_size, 3))
    xy = np.clip(centre / cfg.supersample, 0, cfg.image_size - 1)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8), (float(xy[0]), float(xy[1]))


def _write(cfg: PretrainConfig, root: Path) -> None:
    n = cfg.images_per_class
    n_train = min(max(round(cfg.train_fraction * n), 1), n - 1)
    images, labels, split, boxes, classes, locs = [], [], [], [], [], []
    sources = [("object", c) for c in object_classes(cfg)] + [("bird", b) for b in bird_classes(cfg)]
    image_id = 0
    for cid, (kind, what) in enumerate(sources, 1):
        name = what.name if kind == "object" else f"bird_{what[1].name}"
        folder = f"{cid:03d}.{name}"
        (root / "images" / folder).mkdir(parents=True)
        classes.append(f"{cid} {folder}")
        for i in range(n):
            image_id += 1
            if kind == "object":
                arr, (x, y) = render_object(cfg, what, cid, i)
            else:
                sample = synth._render(what[0], what[1], i)
                arr, (bx, by, bw, bh) = sample.image, sample.bbox
                x, y = bx + bw / 2, by + bh / 2
            locs.append(f"{image_id} 1 {x:.2f} {y:.2f} 1")
            rel = f"{folder}/{i + 1:04d}.png"
            Image.fromarray(arr).save(root / "images" / rel, format="PNG", compress_level=1)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {int(i < n_train)}")
            boxes.append(f"{image_id} 0 0 {cfg.image_size} {cfg.image_size}")
    for fname, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                         ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                         ("classes.txt", classes), ("parts/parts.txt", ["1 centre"]),
                         ("parts/part_locs.txt", locs)):
        (root / fname).parent.mkdir(parents=True, exist_ok=True)
        (root / fname).write_text("".join(line + "\n" for line in lines))
    (root / "pretrain.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                     "config": asdict(cfg)}, indent=1) + "\n")


def generate(cfg: PretrainConfig, root: str | os.PathLike[str]) -> Path:
    """Write the set into root (which must not exist), through a temporary folder and a rename."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        _write(cfg, tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (root / "pretrain.json").exists():          # another process made it at the same time
            return root
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def pretraining_set(image_size: int, overrides: dict[str, Any] | None = None) -> Path:
    """The cached pretraining set at `image_size` (PretrainConfig fields in overrides)."""
    known = {f.name for f in fields(PretrainConfig)} - {"image_size"}
    unknown = set(overrides or {}) - known
    if unknown:
        raise ValueError(f"data.synth {sorted(unknown)} are not settings of the pretraining set; "
                         f"it takes {sorted(known)} (data.image_size sets the image size)")
    cfg = PretrainConfig(**{"image_size": image_size, **(overrides or {})})
    root = paths.cache_dir() / f"pretrain-{cfg.key()}"
    return root if (root / "pretrain.json").exists() else generate(cfg, root)
