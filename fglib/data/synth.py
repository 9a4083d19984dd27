"""A procedurally rendered fine-grained "birds" benchmark, written in CUB_200_2011 format.

Every bird is built from 7 parts (body, head, beak, crest, wing, tail, eye ring). Classes are
grouped into families: a family shares body colour, body shape, head colour and wing colour, and its
classes differ only in small local attributes (beak shape, crest colour/presence, wing-bar pattern,
tail shape, eye-ring colour). In a "hard" family every class differs from its nearest class in
exactly one part; in an "easy" family in two or more.

Each image adds nuisance variation that does not change the class: pose (head tilt, head turned
back, wing raised, tail angle), scale, position, rotation, horizontal flip, lighting, cluttered
backgrounds and, sometimes, a branch or leaves occluding part of the bird.

Colour jitter bound: lighting multiplies each channel of the bird's colours by a gain in
[1 - color_jitter, 1 + color_jitter], so a colour moves by at most 255 * color_jitter per channel.
Class-defining colours (crest and eye-ring palettes) are at least `CLASS_COLOR_GAP` apart in every
pair (L-infinity over RGB), and SynthConfig requires 2 * 255 * color_jitter < CLASS_COLOR_GAP, so a
jittered class colour is always closer to its own palette colour than to any other.

Everything is deterministic: each image draws from its own numpy Generator seeded by a SHA-256 of
the config and the image's (class, index), so regenerating gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
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

LOG = logging.getLogger("fglib.data")

FORMAT_VERSION = 1  # bump whenever rendering or file layout changes: it is part of the cache key

# ---------------------------------------------------------------------------------------------
# defaults (SynthConfig uses these)

DEFAULT_SEED = 0
DEFAULT_NUM_CLASSES = 24
DEFAULT_IMAGES_PER_CLASS = 120
DEFAULT_IMAGE_SIZE = 64
DEFAULT_TRAIN_FRACTION = 0.5
DEFAULT_FAMILIES = 6
DEFAULT_HARD_FRACTION = 0.5
DEFAULT_SUPERSAMPLE = 2
DEFAULT_OCCLUSION_PROB = 0.3
DEFAULT_TRUNCATION_PROB = 0.1
DEFAULT_COLOR_JITTER = 0.15
DEFAULT_PIXEL_NOISE = 3.0

PART_NAMES = ("body", "head", "beak", "crest", "wing", "tail", "eye ring")

# ---------------------------------------------------------------------------------------------
# attributes and palettes

BODY_COLORS = {
    "brown": (139, 99, 62), "olive": (118, 126, 58), "grey": (128, 128, 132),
    "slate": (78, 94, 116), "tan": (196, 164, 116), "rust": (172, 86, 46),
    "buff": (222, 204, 156), "sooty": (72, 64, 60),
}
HEAD_COLORS = {
    "black": (32, 30, 30), "white": (236, 236, 230), "chestnut": (150, 68, 40),
    "grey": (152, 152, 158), "olive": (108, 120, 52), "brown": (108, 78, 50),
    "blue_grey": (98, 120, 152), "buff": (212, 190, 140),
}
WING_COLORS = {
    "dark_brown": (84, 58, 38), "black": (40, 38, 40), "grey": (110, 112, 118),
    "olive": (92, 100, 46), "rufous": (160, 80, 40),
}
BODY_SHAPES = {"slim": 0.48, "plump": 0.6, "round": 0.72}  # body half-height / half-length
CREST_COLORS = {"none": None, "red": (214, 38, 38), "yellow": (244, 212, 40),
                "blue": (48, 90, 224), "black": (26, 24, 24)}
EYE_RING_COLORS = {"white": (246, 246, 246), "yellow": (244, 212, 40),
                   "red": (214, 38, 38), "blue": (48, 90, 224)}
BEAK_SHAPES = ("short", "long", "hooked", "thick")
WING_PATTERNS = ("plain", "one_bar", "two_bars", "spots")
TAIL_SHAPES = ("forked", "rounded", "square")


@dataclass(frozen=True)
class Attribute:
    """A CUB-style attribute group (one-hot over `values`) shown by one part."""

    name: str  # e.g. "has_beak_shape"; CUB attribute names are "<name>::<value>"
    part: str  # one of PART_NAMES
    values: tuple[str, ...]
    level: str  # "family": shared within a family; "class": varies between classes of a family


ATTRIBUTES = (
    Attribute("has_body_color", "body", tuple(BODY_COLORS), "family"),
    Attribute("has_body_shape", "body", tuple(BODY_SHAPES), "family"),
    Attribute("has_head_color", "head", tuple(HEAD_COLORS), "family"),
    Attribute("has_beak_shape", "beak", BEAK_SHAPES, "class"),
    Attribute("has_crest_color", "crest", tuple(CREST_COLORS), "class"),
    Attribute("has_wing_color", "wing", tuple(WING_COLORS), "family"),
    Attribute("has_wing_pattern", "wing", WING_PATTERNS, "class"),
    Attribute("has_tail_shape", "tail", TAIL_SHAPES, "class"),
    Attribute("has_eye_ring_color", "eye ring", tuple(EYE_RING_COLORS), "class"),
)
ATTR_INDEX = {a.name: i for i, a in enumerate(ATTRIBUTES)}
CLASS_LEVEL = tuple(i for i, a in enumerate(ATTRIBUTES) if a.level == "class")

FAMILY_NAMES = ("Finch", "Warbler", "Sparrow", "Tanager", "Wren", "Vireo", "Thrush", "Bunting")
MAX_FAMILIES = min(len(FAMILY_NAMES), len(BODY_COLORS), len(HEAD_COLORS))  # colours unique per family
CLASS_PREFIXES = ("Northern", "Southern", "Eastern", "Western", "Lesser", "Greater", "Common",
                  "Island", "Mountain", "Coastal", "Forest", "Marsh", "Desert", "Prairie",
                  "Alpine", "Tropical")


def _min_linf_gap(palette: dict[str, tuple[int, int, int] | None]) -> int:
    """Smallest L-infinity RGB distance between two colours of a palette."""
    cols = [np.array(c) for c in palette.values() if c is not None]
    return int(min(np.abs(a - b).max() for i, a in enumerate(cols) for b in cols[i + 1:]))


CLASS_COLOR_GAP = min(_min_linf_gap(CREST_COLORS), _min_linf_gap(EYE_RING_COLORS))
MAX_COLOR_JITTER = CLASS_COLOR_GAP / (2 * 255)  # keeps jittered class colours separable

BACKGROUND_COLORS = ((108, 138, 78), (150, 174, 198), (138, 118, 90), (188, 178, 148),
                     (88, 108, 68), (168, 168, 158), (120, 150, 120))
BEAK_COLOR = (58, 50, 42)
LEG_COLOR = (70, 60, 55)
EYE_OUTLINE = (20, 20, 20)
MARK_COLOR = (238, 238, 228)  # wing bars and spots
BRANCH_COLOR = (96, 72, 48)
LEAF_COLOR = (72, 122, 52)


# ---------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the synthetic dataset; equal configs give identical bytes."""

    seed: int = DEFAULT_SEED
    num_classes: int = DEFAULT_NUM_CLASSES
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS
    image_size: int = DEFAULT_IMAGE_SIZE
    train_fraction: float = DEFAULT_TRAIN_FRACTION
    families: int = DEFAULT_FAMILIES
    hard_fraction: float = DEFAULT_HARD_FRACTION  # share of families whose classes differ in one part
    supersample: int = DEFAULT_SUPERSAMPLE  # render at this factor, then box-downsample
    occlusion_prob: float = DEFAULT_OCCLUSION_PROB  # chance of a branch/leaves in front of the bird
    truncation_prob: float = DEFAULT_TRUNCATION_PROB  # chance the bird may stick out of the frame
    color_jitter: float = DEFAULT_COLOR_JITTER  # max relative per-channel lighting gain change
    pixel_noise: float = DEFAULT_PIXEL_NOISE  # std of Gaussian pixel noise (0..255 scale)

    def __post_init__(self) -> None:
        for problem in _config_problems(self):
            raise ValueError(f"invalid SynthConfig: {problem}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SynthConfig":
        """Inverse of to_dict; ignores unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _config_problems(c: SynthConfig) -> list[str]:
    """Human-readable list of what is wrong with a config (empty when valid)."""
    p = []
    if not isinstance(c.seed, int) or c.seed < 0:
        p.append(f"seed={c.seed!r}; use a non-negative int.")
    if c.num_classes < 2:
        p.append(f"num_classes={c.num_classes}; set num_classes to at least 2.")
    if c.images_per_class < 2:
        p.append(f"images_per_class={c.images_per_class}; set it to at least 2 "
                 "(one train and one test image per class).")
    if c.image_size < 32:
        p.append(f"image_size={c.image_size}; set image_size to at least 32 pixels "
                 "(smaller birds lose their part details).")
    if not 0.0 < c.train_fraction < 1.0:
        p.append(f"train_fraction={c.train_fraction}; pick a value strictly between 0 and 1.")
    if not 1 <= c.families <= MAX_FAMILIES:
        p.append(f"families={c.families}; use between 1 and {MAX_FAMILIES} families.")
    elif c.num_classes < 2 * c.families:
        p.append(f"num_classes={c.num_classes} with families={c.families}; every family needs "
                 "at least 2 classes, so lower families or raise num_classes.")
    if not 0.0 <= c.hard_fraction <= 1.0:
        p.append(f"hard_fraction={c.hard_fraction}; pick a value in [0, 1].")
    if not 1 <= c.supersample <= 4:
        p.append(f"supersample={c.supersample}; use an int from 1 to 4.")
    for name in ("occlusion_prob", "truncation_prob"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            p.append(f"{name}={getattr(c, name)}; pick a probability in [0, 1].")
    if not 0.0 <= c.color_jitter < MAX_COLOR_JITTER:
        p.append(f"color_jitter={c.color_jitter}; keep it in [0, {MAX_COLOR_JITTER:.3f}) so "
                 "lighting cannot make one class colour look like another.")
    if c.pixel_noise < 0:
        p.append(f"pixel_noise={c.pixel_noise}; use a non-negative std.")
    return p


def config_hash(cfg: SynthConfig) -> str:
    """SHA-256 hex digest of the config and the format version (the cache key)."""
    blob = json.dumps({"format_version": FORMAT_VERSION, **cfg.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _rng(*key: object) -> np.random.Generator:
    """A Generator seeded from a SHA-256 of the key (independent of global RNG state)."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---------------------------------------------------------------------------------------------
# taxonomy: families and classes


@dataclass(frozen=True)
class BirdClass:
    """One class: its place in the taxonomy and its attribute value indices (ATTRIBUTES order)."""

    class_id: int  # 1-based
    name: str  # CUB-style, e.g. "Northern_Finch"
    family_id: int  # 1-based
    family_name: str
    hard: bool
    attrs: tuple[int, ...]

    @property
    def folder(self) -> str:
        """Image folder / classes.txt name, e.g. "001.Northern_Finch"."""
        return f"{self.class_id:03d}.{self.name}"

    def value(self, attr: str) -> str:
        """The value name of an attribute group, e.g. value("has_tail_shape") -> "forked"."""
        i = ATTR_INDEX[attr]
        return ATTRIBUTES[i].values[self.attrs[i]]

    def describe(self) -> dict[str, str]:
        """All attribute values by attribute name."""
        return {a.name: a.values[v] for a, v in zip(ATTRIBUTES, self.attrs)}


def _family_sizes(cfg: SynthConfig) -> list[int]:
    """Split num_classes over the families as evenly as possible."""
    q, r = divmod(cfg.num_classes, cfg.families)
    return [q + (f < r) for f in range(cfg.families)]


def _hamming(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return sum(x != y for x, y in zip(a, b))


def _hard_family(rng: np.random.Generator, size: int) -> list[tuple[int, ...]]:
    """Class-level codes where each new class mutates one attribute of an existing one."""
    k = [len(ATTRIBUTES[i].values) for i in CLASS_LEVEL]
    codes = [tuple(int(rng.integers(n)) for n in k)]
    for _ in range(100 * size):
        if len(codes) == size:
            return codes
        child = list(codes[int(rng.integers(len(codes)))])
        j = int(rng.integers(len(k)))
        child[j] = (child[j] + 1 + int(rng.integers(k[j] - 1))) % k[j]  # a different value
        if tuple(child) not in codes:
            codes.append(tuple(child))
    raise ValueError(f"could not make {size} distinct classes in one family; raise families.")


def _easy_family(rng: np.random.Generator, size: int) -> list[tuple[int, ...]]:
    """Class-level codes at pairwise distance >= 3 where possible, never below 2."""
    k = [len(ATTRIBUTES[i].values) for i in CLASS_LEVEL]
    codes: list[tuple[int, ...]] = []
    for tries in range(400 * size):
        if len(codes) == size:
            return codes
        min_dist = 3 if tries < 200 * size else 2
        cand = tuple(int(rng.integers(n)) for n in k)
        if all(_hamming(cand, c) >= min_dist for c in codes):
            codes.append(cand)
    raise ValueError(f"could not make {size} well-separated classes in one family; raise families.")


@lru_cache(maxsize=32)
def make_classes(cfg: SynthConfig) -> tuple[BirdClass, ...]:
    """The class taxonomy for a config (depends on seed, num_classes, families, hard_fraction)."""
    rng = _rng("taxonomy", FORMAT_VERSION, cfg.seed, cfg.num_classes, cfg.families, cfg.hard_fraction)
    n_hard = round(cfg.hard_fraction * cfg.families)
    hard_set = set(rng.permutation(cfg.families)[:n_hard].tolist())
    body_cols = rng.permutation(len(BODY_COLORS))  # unique body and head colour per family
    head_cols = rng.permutation(len(HEAD_COLORS))
    classes, cid = [], 1
    for f, size in enumerate(_family_sizes(cfg)):
        fam = {ATTR_INDEX["has_body_color"]: int(body_cols[f]),
               ATTR_INDEX["has_head_color"]: int(head_cols[f]),
               ATTR_INDEX["has_body_shape"]: int(rng.integers(len(BODY_SHAPES))),
               ATTR_INDEX["has_wing_color"]: int(rng.integers(len(WING_COLORS)))}
        hard = f in hard_set
        codes = _hard_family(rng, size) if hard else _easy_family(rng, size)
        for k, code in enumerate(codes):
            attrs = [0] * len(ATTRIBUTES)
            for i, v in fam.items():
                attrs[i] = v
            for i, v in zip(CLASS_LEVEL, code):
                attrs[i] = v
            prefix = CLASS_PREFIXES[k % len(CLASS_PREFIXES)]
            prefix += str(k // len(CLASS_PREFIXES) + 1) if k >= len(CLASS_PREFIXES) else ""
            classes.append(BirdClass(cid, f"{prefix}_{FAMILY_NAMES[f]}", f + 1, FAMILY_NAMES[f],
                                     hard, tuple(attrs)))
            cid += 1
    return tuple(classes)


def nearest_class(
    classes: tuple[BirdClass, ...], c: BirdClass
) -> tuple[BirdClass, list[str]]:
    """Nearest other class (fewest differing attributes; ties: same family, then lowest
    id) and the parts whose attributes differ (in PART_NAMES order)."""
    others = [o for o in classes if o.class_id != c.class_id]
    best = min(others, key=lambda o: (_hamming(o.attrs, c.attrs),          # d(a, b)
                                      o.family_id != c.family_id, o.class_id))
    n = len(ATTRIBUTES)
    diff = {ATTRIBUTES[i].part for i in range(n) if best.attrs[i] != c.attrs[i]}
    return best, [p for p in PART_NAMES if p in diff]


# ---------------------------------------------------------------------------------------------
# geometry: shapes are (N, 2) point arrays in a part's local frame, mapped by 3x3 affines


def _affine(tx: float = 0.0, ty: float = 0.0, angle: float = 0.0, scale: float = 1.0,
            flip: bool = False) -> np.ndarray:
    """Matrix of x -> T(tx,ty) R(angle) S(scale) F(flip) x (y points down, so +angle is clockwise)."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    f = -1.0 if flip else 1.0
    return np.array([[c * f, -s, tx], [s * f, c, ty], [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:2, :2].T + m[:2, 2]


@lru_cache(maxsize=8)
def _unit_circle(n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return _unit_circle() * (rx, ry) + (cx, cy)


def _polar(*deg_r: tuple[float, float]) -> np.ndarray:
    """Points given as (angle in degrees, radius) pairs."""
    return np.array([(r * math.cos(math.radians(d)), r * math.sin(math.radians(d))) for d, r in deg_r])


HEAD_R = 0.42  # head radius in body half-lengths
BEAKS = {  # head-local, head facing +x
    "short": np.array([(0.36, -0.10), (0.63, 0.0), (0.36, 0.10)]),
    "long": np.array([(0.36, -0.07), (1.00, 0.03), (0.36, 0.08)]),
    "hooked": np.array([(0.34, -0.12), (0.56, -0.13), (0.72, -0.04), (0.73, 0.12),
                        (0.64, 0.03), (0.34, 0.09)]),
    "thick": np.array([(0.28, -0.20), (0.74, 0.0), (0.28, 0.20)]),
}
CREST = _polar((-170, 0.3), (-158, 0.82), (-140, 0.38), (-125, 0.88), (-108, 0.38),
               (-92, 0.78), (-75, 0.35))
TAILS = {  # tail-local, pointing +x away from the body
    "forked": np.array([(0, -0.13), (0.9, -0.34), (0.58, 0.0), (0.9, 0.34), (0, 0.13)]),
    "rounded": np.concatenate([[(0, -0.12)], _polar(*[(a, 0.84) for a in range(-24, 25, 6)]),
                               [(0, 0.12)]]),
    "square": np.array([(0, -0.13), (0.84, -0.28), (0.84, 0.28), (0, 0.13)]),
}
SPOTS = np.array([(-0.55, 0.1), (-0.3, -0.25), (-0.15, 0.3), (0.05, -0.05), (0.3, 0.25),
                  (0.35, -0.3)])  # wing-local, as fractions of the wing's half-axes


@dataclass
class Pose:
    """Per-image nuisance parameters."""

    flip: bool
    angle: float  # whole-bird rotation, radians
    scale: float  # body half-length in canvas pixels
    head_angle: float  # head tilt about its centre
    head_back: bool  # head turned to look backwards
    wing_angle: float  # wing rotation about the shoulder (positive = raised)
    tail_angle: float


def _sample_pose(rng: np.random.Generator, canvas: int) -> Pose:
    raised = rng.random() < 0.2
    return Pose(
        flip=bool(rng.random() < 0.5),
        angle=float(rng.uniform(-0.45, 0.45)),
        scale=float(canvas * rng.uniform(0.15, 0.22)),
        head_angle=float(rng.uniform(-0.5, 0.4)),
        head_back=bool(rng.random() < 0.15),
        wing_angle=float(rng.uniform(0.6, 1.1) if raised else rng.uniform(-0.12, 0.15)),
        tail_angle=float(rng.uniform(-0.3, 0.3)),
    )


Shape = tuple[np.ndarray, tuple[int, int, int]]  # (points, RGB fill)


def _bird_shapes(bc: BirdClass, pose: Pose, colors: dict[str, tuple[int, int, int]],
                 ) -> tuple[list[Shape], dict[str, np.ndarray | None]]:
    """Polygons of the bird in draw order and the part centres, in canvas coords (untranslated)."""
    g = _affine(angle=pose.angle, scale=pose.scale, flip=pose.flip)  # body frame -> canvas
    b = BODY_SHAPES[bc.value("has_body_shape")]
    head_c = (0.92, -0.55 * b - 0.22)
    head = g @ _affine(*head_c, angle=pose.head_angle, flip=pose.head_back)
    pivot = np.array([0.45, -0.2 * b])
    wing_c = np.array([-0.15, -0.05])
    wing = g @ _affine(*pivot, angle=pose.wing_angle) @ _affine(*(wing_c - pivot))
    tail = g @ _affine(-0.85, -0.05 * b, angle=math.pi + pose.tail_angle)
    wrx, wry = 0.78, 0.55 * b

    shapes: list[Shape] = []
    add = lambda m, pts, col: shapes.append((_apply(m, pts), col))  # noqa: E731
    tail_pts = TAILS[bc.value("has_tail_shape")]
    add(tail, tail_pts, colors["wing"])
    for x0 in (0.08, -0.22):  # legs: thin rectangles below the body
        add(g, np.array([(x0 - 0.04, 0.7 * b), (x0 + 0.04, 0.7 * b), (x0 + 0.04, b + 0.5),
                         (x0 - 0.04, b + 0.5)]), LEG_COLOR)
    body = _ellipse(0, 0, 1.0, b)
    add(g, body, colors["body"])
    belly_c = np.array([0.15, 0.55 * b])
    add(g, belly_c + 0.7 * (body - belly_c), colors["belly"])  # shrunk towards a low point: inside
    add(wing, _ellipse(0, 0, wrx, wry), colors["wing"])
    for mark in _wing_marks(bc.value("has_wing_pattern"), wrx, wry):
        add(wing, mark, MARK_COLOR)
    crest_col = colors.get("crest")
    if crest_col is not None:
        add(head, CREST, crest_col)
    add(head, _ellipse(0, 0, HEAD_R, HEAD_R), colors["head"])
    eye = (0.14, -0.08)
    add(head, _ellipse(*eye, 0.16, 0.16), EYE_OUTLINE)
    add(head, _ellipse(*eye, 0.13, 0.13), colors["eye ring"])
    add(head, _ellipse(*eye, 0.065, 0.065), EYE_OUTLINE)
    beak_pts = BEAKS[bc.value("has_beak_shape")]
    add(head, beak_pts, BEAK_COLOR)

    centre = lambda m, p: _apply(m, np.asarray(p, float).reshape(1, 2))[0]  # noqa: E731
    parts = {
        "body": centre(g, (0, 0)),
        "head": centre(head, (0, 0)),
        "beak": centre(head, beak_pts.mean(0)),
        "crest": centre(head, (-0.1, -0.55)) if crest_col is not None else None,
        "wing": centre(wing, (0, 0)),
        "tail": centre(tail, tail_pts.mean(0)),
        "eye ring": centre(head, eye),
    }
    return shapes, parts


def _wing_marks(pattern: str, rx: float, ry: float) -> list[np.ndarray]:
    """Wing bars (narrow ellipses across the wing) or spots, in wing-local coordinates."""
    if pattern == "spots":
        return [_ellipse(u * rx, v * ry, 0.08, 0.08) for u, v in SPOTS]
    xs = {"plain": [], "one_bar": [0.18], "two_bars": [0.32, -0.02]}[pattern]
    return [_ellipse(x, 0, 0.08, 0.85 * ry * math.sqrt(1 - (x / rx) ** 2)) for x in xs]


def _class_colors(
    bc: BirdClass, gain: np.ndarray
) -> dict[str, tuple[int, int, int] | None]:
    """The bird's fill colours under a per-channel lighting gain g: u'_k = g_k u_k."""
    light = lambda c: None if c is None else tuple(  # noqa: E731
        int(v) for v in np.clip(np.round(np.array(c) * gain), 0, 255))  # u' = g u
    body = np.array(BODY_COLORS[bc.value("has_body_color")])
    return {
        "body": light(body),
        "belly": light(np.round(0.55 * body + 0.45 * 240)),
        "head": light(HEAD_COLORS[bc.value("has_head_color")]),
        "wing": light(WING_COLORS[bc.value("has_wing_color")]),
        "crest": light(CREST_COLORS[bc.value("has_crest_color")]),
        "eye ring": light(EYE_RING_COLORS[bc.value("has_eye_ring_color")]),
    }


# ---------------------------------------------------------------------------------------------
# scene: background clutter, perch, occluders


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return x, y


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Low-frequency colour noise, maybe stripes, maybe blobs: cheap, cluttered, natural-ish."""
    base = np.array(BACKGROUND_COLORS[int(rng.integers(len(BACKGROUND_COLORS)))], np.float32)
    k = int(rng.integers(3, 8))
    noise = rng.normal(0, 28, (k, k, 1)) + rng.normal(0, 9, (k, k, 3))  # mostly brightness
    small = np.clip(base + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.35:  # stripes (reeds, fences) of random orientation and frequency
        x, y = _grid(size)
        th, freq = rng.uniform(0, np.pi), rng.uniform(2, 9)
        wave = np.sin(2 * np.pi * freq * (x * math.cos(th) + y * math.sin(th)) + rng.uniform(0, 6.3))
        arr = np.asarray(img, np.float32) + rng.uniform(6, 18) * wave[..., None]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 6))):  # blobs (foliage, stones, distant things)
        col = tuple(int(v) for v in np.clip(base + rng.normal(0, 35) + rng.normal(0, 14, 3), 0, 255))
        c, r = rng.uniform(0, size, 2), size * rng.uniform(0.04, 0.18, 2)
        draw.ellipse([c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]], fill=col)
    return img


def _band(p: np.ndarray, angle: float, width: float, length: float) -> np.ndarray:
    """A long rectangle through point p (branches)."""
    d, n = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    h, w = length / 2, width / 2
    return np.array([p - h * d - w * n, p + h * d - w * n, p + h * d + w * n, p - h * d + w * n])


def _leaf(p: np.ndarray, angle: float, length: float) -> np.ndarray:
    return _apply(_affine(p[0], p[1], angle=angle), _ellipse(0, 0, length, 0.38 * length))


def _occluder(rng: np.random.Generator, box: np.ndarray, size: int) -> list[Shape]:
    """A branch with leaves, or a leaf cluster, crossing a random point of the bird's box."""
    p = rng.uniform(box[:2], box[2:])
    jitter = lambda c: tuple(int(v) for v in np.clip(np.array(c) + rng.normal(0, 14, 3), 0, 255))  # noqa: E731
    shapes: list[Shape] = []
    if rng.random() < 0.5:
        ang = float(rng.uniform(0, np.pi))
        shapes.append((_band(p, ang, size * rng.uniform(0.05, 0.1), 3 * size), jitter(BRANCH_COLOR)))
        for _ in range(int(rng.integers(0, 3))):
            q = p + rng.uniform(-0.3, 0.3) * size * np.array([math.cos(ang), math.sin(ang)])
            shapes.append((_leaf(q, ang + rng.uniform(-1.2, 1.2), size * 0.09), jitter(LEAF_COLOR)))
    else:
        for _ in range(int(rng.integers(2, 5))):
            q = p + rng.normal(0, 0.06 * size, 2)
            shapes.append((_leaf(q, rng.uniform(0, 2 * np.pi), size * rng.uniform(0.08, 0.13)),
                           jitter(LEAF_COLOR)))
    return shapes


def _perch(rng: np.random.Generator, feet: np.ndarray, angle: float, size: int) -> Shape:
    """The branch the bird stands on (behind the bird)."""
    ang = angle + float(rng.uniform(-0.3, 0.3))
    col = tuple(int(v) for v in np.clip(np.array(BRANCH_COLOR) + rng.normal(0, 14, 3), 0, 255))
    return _band(feet, ang, size * rng.uniform(0.03, 0.06), 3 * size), col


# ---------------------------------------------------------------------------------------------
# rendering


def _translation(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, size: int,
                 truncation_prob: float) -> np.ndarray:
    """Shift that puts the bird's box [lo, hi] inside the frame (or partly outside, sometimes)."""
    margin = 0.02 * size
    extra = 0.3 * (hi - lo) if rng.random() < truncation_prob else np.zeros(2)
    t_min, t_max = margin - lo - extra, size - margin - hi + extra
    mid = (t_min + t_max) / 2  # used when the bird is larger than the frame
    return rng.uniform(np.minimum(t_min, mid), np.maximum(t_max, mid))


@dataclass
class Sample:
    """One rendered image with its annotations, in output-pixel coordinates."""

    image: np.ndarray  # uint8 (H, W, 3)
    parts: dict[str, tuple[float, float, int]]  # name -> (x, y, visible); (0, 0, 0) if not visible
    bbox: tuple[float, float, float, float]  # x, y, w, h


def _render(cfg: SynthConfig, bc: BirdClass, index: int) -> Sample:
    """Render image `index` of class `bc` (deterministic in cfg, class and index)."""
    rng = _rng("image", config_hash(cfg), bc.class_id, index)
    ss, size = cfg.supersample, cfg.image_size
    canvas = size * ss
    pose = _sample_pose(rng, canvas)
    j = cfg.color_jitter
    gain = np.clip(1 + rng.uniform(-j, j) + rng.uniform(-j / 3, j / 3, 3), 1 - j, 1 + j)
    shapes, parts = _bird_shapes(bc, pose, _class_colors(bc, gain))
    pts = np.concatenate([s for s, _ in shapes])
    t = _translation(rng, pts.min(0), pts.max(0), canvas, cfg.truncation_prob)
    shapes = [(s + t, col) for s, col in shapes]
    parts = {k: None if v is None else v + t for k, v in parts.items()}
    lo, hi = pts.min(0) + t, pts.max(0) + t

    img = _background(rng, canvas)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:
        feet = _apply(_affine(*t, angle=pose.angle, scale=pose.scale, flip=pose.flip),
                      np.array([[0.0, BODY_SHAPES[bc.value("has_body_shape")] + 0.5]]))[0]
        _fill(draw, *_perch(rng, feet, pose.angle, canvas))
    for s, col in shapes:
        _fill(draw, s, col)
    mask = None
    if rng.random() < cfg.occlusion_prob:
        mask = Image.new("L", (canvas, canvas), 0)
        mdraw = ImageDraw.Draw(mask)
        for s, col in _occluder(rng, np.concatenate([lo, hi]), canvas):
            _fill(draw, s, col)
            _fill(mdraw, s, 255)
    if ss > 1:
        img = img.reduce(ss)  # box filter: antialiased edges
    arr = np.asarray(img, np.float32)
    if cfg.pixel_noise > 0:
        arr = arr + rng.normal(0, cfg.pixel_noise, arr.shape).astype(np.float32)
    image = np.clip(np.round(arr), 0, 255).astype(np.uint8)

    m = None if mask is None else np.asarray(mask)
    out_parts = {n: _visible(parts[n], m, canvas, ss) for n in PART_NAMES}
    lo, hi = np.clip(lo, 0, canvas) / ss, np.clip(hi, 0, canvas) / ss
    bbox = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return Sample(image, out_parts, bbox)


def _fill(draw: ImageDraw.ImageDraw, pts: np.ndarray, col: Any) -> None:
    draw.polygon(pts.ravel().tolist(), fill=col)


def _visible(p: np.ndarray | None, mask: np.ndarray | None, canvas: int,
             ss: int) -> tuple[float, float, int]:
    """(x, y, 1) in output pixels if the part exists, is in frame and not occluded; else (0, 0, 0)."""
    if p is None or not (0 <= p[0] < canvas and 0 <= p[1] < canvas):
        return 0.0, 0.0, 0
    if mask is not None and mask[int(p[1]), int(p[0])]:
        return 0.0, 0.0, 0
    return float(p[0] / ss), float(p[1] / ss), 1


def render(cfg: SynthConfig, class_id: int, index: int,
           ) -> tuple[np.ndarray, dict[str, tuple[float, float, int]], tuple[float, float, float, float]]:
    """Render one sample (the same pixels generate() writes): image, parts, bbox (x, y, w, h).

    class_id is 1-based as in classes.txt; index is the image's index within its class.
    """
    classes = make_classes(cfg)
    if not 1 <= class_id <= len(classes):
        raise ValueError(f"class_id={class_id}; use 1..{len(classes)} (class ids are 1-based).")
    s = _render(cfg, classes[class_id - 1], index)
    return s.image, s.parts, s.bbox


def sample_grid(cfg: SynthConfig, class_ids: list[int], per_class: int = 8, start: int = 0,
                pad: int = 2) -> np.ndarray:
    """One row of `per_class` rendered images per class, as a uint8 image (for notebooks)."""
    n = cfg.image_size + pad
    grid = np.full((len(class_ids) * n + pad, per_class * n + pad, 3), 255, np.uint8)
    for r, c in enumerate(class_ids):
        for i in range(per_class):
            img, _, _ = render(cfg, c, start + i)
            grid[pad + r * n: r * n + n, pad + i * n: i * n + n] = img
    return grid


# ---------------------------------------------------------------------------------------------
# writing the dataset in CUB_200_2011 format


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _write_dataset(cfg: SynthConfig, root: Path) -> int:
    """Render every image and write all annotation files into root; returns the image count."""
    classes = make_classes(cfg)
    n = cfg.images_per_class
    n_train = min(max(round(cfg.train_fraction * n), 1), n - 1)
    images, labels, split, boxes, locs = [], [], [], [], []
    image_id = 0
    for bc in classes:
        (root / "images" / bc.folder).mkdir(parents=True)
        for i in range(n):
            image_id += 1
            s = _render(cfg, bc, i)
            rel = f"{bc.folder}/{bc.name}_{i + 1:04d}.png"
            Image.fromarray(s.image).save(root / "images" / rel, format="PNG", compress_level=6)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {bc.class_id}")
            split.append(f"{image_id} {int(i < n_train)}")
            boxes.append(f"{image_id} " + " ".join(_fmt(v) for v in s.bbox))
            for pid, name in enumerate(PART_NAMES, 1):
                x, y, vis = s.parts[name]
                locs.append(f"{image_id} {pid} {_fmt(x)} {_fmt(y)} {vis}")
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels)
    _write_lines(root / "train_test_split.txt", split)
    _write_lines(root / "bounding_boxes.txt", boxes)
    _write_lines(root / "classes.txt", [f"{bc.class_id} {bc.folder}" for bc in classes])
    _write_lines(root / "parts" / "parts.txt", [f"{i} {p}" for i, p in enumerate(PART_NAMES, 1)])
    _write_lines(root / "parts" / "part_locs.txt", locs)
    _write_attributes(classes, root)
    _write_synth_files(cfg, classes, root, image_id)
    return image_id


def _attribute_columns() -> list[tuple[int, int]]:
    """(attribute group index, value index) for every CUB attribute id, in id order."""
    return [(g, v) for g, a in enumerate(ATTRIBUTES) for v in range(len(a.values))]


def _write_attributes(classes: tuple[BirdClass, ...], root: Path) -> None:
    """attributes.txt (`<id> <name>::<value>`) and the class x attribute table (0 or 100)."""
    cols = _attribute_columns()
    _write_lines(root / "attributes" / "attributes.txt",
                 [f"{i} {ATTRIBUTES[g].name}::{ATTRIBUTES[g].values[v]}"
                  for i, (g, v) in enumerate(cols, 1)])
    _write_lines(root / "attributes" / "class_attribute_labels_continuous.txt",
                 [" ".join("100.0" if bc.attrs[g] == v else "0.0" for g, v in cols)
                  for bc in classes])


def _write_synth_files(cfg: SynthConfig, classes: tuple[BirdClass, ...], root: Path,
                       num_images: int) -> None:
    """Our extra files: families, discriminative parts, attribute -> part map, config."""
    syn = root / "synth"
    _write_lines(syn / "families.txt", [f"{c.class_id} {c.family_id} {c.family_name} "
                                        f"{'hard' if c.hard else 'easy'}" for c in classes])
    rows = []
    for c in classes:
        near, parts = nearest_class(classes, c)
        rows.append(f"{c.class_id} {near.class_id} "
                    + ",".join(str(PART_NAMES.index(p) + 1) for p in parts))
    _write_lines(syn / "discriminative_parts.txt", rows)
    _write_lines(syn / "attribute_parts.txt",
                 [f"{i} {PART_NAMES.index(ATTRIBUTES[g].part) + 1}"
                  for i, (g, _) in enumerate(_attribute_columns(), 1)])
    meta = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "num_images": num_images,
            "num_classes": len(classes), "parts": list(PART_NAMES)}
    (syn / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def generate(cfg: SynthConfig, root: str | os.PathLike[str]) -> Path:
    """Write the dataset for cfg to root (which must not exist) in CUB_200_2011 format.

    Writes into a temporary sibling directory and renames it into place at the end, so an
    interrupted run never leaves a partial dataset at root.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; delete it or choose another root "
                              "(synthetic_benchmark() manages a cache for you).")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        _write_dataset(cfg, tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _stored_meta(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "synth" / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _matches(root: Path, cfg: SynthConfig) -> bool:
    meta = _stored_meta(root)
    return (meta is not None and meta.get("format_version") == FORMAT_VERSION
            and meta.get("config") == cfg.to_dict())


def synthetic_benchmark(cfg: SynthConfig | None = None,
                        cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the cached dataset for cfg (default SynthConfig()), generating it if needed."""
    cfg = cfg or SynthConfig()
    root = Path(cache_dir or paths.cache_dir()) / f"synth-{config_hash(cfg)[:12]}"
    if root.exists():
        if _matches(root, cfg):
            return root
        LOG.warning("cached synthetic dataset %s does not match its config; regenerating", root)
        shutil.rmtree(root)
    try:
        generate(cfg, root)
    except OSError:
        if _matches(root, cfg):  # another process generated it at the same time
            return root
        raise
    LOG.info("generated synthetic dataset %s", root)
    return root
