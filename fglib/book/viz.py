"""Small plotting helpers for the chapters: images in pixel coordinates, grids, part annotations.

Coordinates follow the annotation files (CUB format): x to the right, y down, in pixels, with pixel
(i, j) covering the square [i, i + 1) x [j, j + 1). `show_image` draws an image with exactly that
extent, so a part location or a box read from the files lands on the right spot (matplotlib's
default would put pixel centres, not corners, on the integers: half a pixel off, which is visible
on a 40-pixel bird).
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

PartTable = Mapping[str, Sequence[float]] | np.ndarray  # name -> (x, y, visible), or a (P, 3) array


def show_image(ax: Axes, image: np.ndarray, title: str | None = None, fontsize: float = 8) -> Axes:
    """imshow in annotation coordinates (extent 0..W, 0..H, y down), no ticks, optional title."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    return ax


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
               size: float = 1.5, fontsize: float = 8) -> tuple[Figure, np.ndarray]:
    """A figure with one small panel per image (row-major, unused panels hidden); returns
    (figure, 2-D array of axes)."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2 * nrows),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            show_image(ax, images[k], None if titles is None else titles[k], fontsize)
        else:
            ax.axis("off")
    return fig, axes


def _rows(parts: PartTable, names: Sequence[str] | None) -> list[tuple[str, float, float, bool]]:
    """(name, x, y, visible) rows from a name -> (x, y, visible) mapping or a (P, 3) array."""
    if isinstance(parts, Mapping):
        return [(str(k), float(v[0]), float(v[1]), bool(v[2])) for k, v in parts.items()]
    arr = np.asarray(parts, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"parts must be a mapping or a (P, 3) array, got shape {arr.shape}.")
    if names is None:
        names = [str(i + 1) for i in range(len(arr))]
    if len(names) != len(arr):
        raise ValueError(f"{len(arr)} parts but {len(names)} names.")
    return [(str(n), float(x), float(y), bool(v)) for n, (x, y, v) in zip(names, arr)]


def mark_parts(ax: Axes, parts: PartTable, names: Sequence[str] | None = None,
               only: Sequence[str] | None = None, label: bool = True, color: str = "white",
               size: float = 18, fontsize: float = 6) -> list[str]:
    """Draw a marker (and the name) at every visible part; returns the names drawn.

    parts: name -> (x, y, visible) as fglib.data.synth.render returns it, or a (P, 3) array of
    x, y, visible as CUBDataset.parts holds it (then `names` gives the part names). `only`
    restricts the drawing to some parts. Invisible parts (visible == 0) are skipped.
    """
    drawn = []
    for name, x, y, vis in _rows(parts, names):
        if not vis or (only is not None and name not in only):
            continue
        ax.scatter([x], [y], s=size, c=color, edgecolors="black", linewidths=0.6, zorder=3)
        if label:
            ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=fontsize,
                        color=color, zorder=4)
        drawn.append(name)
    return drawn


def circle_part(ax: Axes, xy: Sequence[float], radius: float, color: str = "red",
                linewidth: float = 2.0) -> Circle:
    """An unfilled circle of `radius` pixels around xy (to point at a discriminative part)."""
    circle = Circle((float(xy[0]), float(xy[1])), radius, fill=False, edgecolor=color,
                    linewidth=linewidth, zorder=5)
    ax.add_patch(circle)
    return circle


def draw_box(ax: Axes, box: Sequence[float], color: str = "yellow", linewidth: float = 1.2) -> Rectangle:
    """The rectangle of a CUB-style box (x, y, w, h)."""
    x, y, w, h = (float(v) for v in box)
    rect = Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=linewidth, zorder=4)
    ax.add_patch(rect)
    return rect


def as_jpeg(fig: Figure, quality: int = 85, dpi: float | None = None) -> Any:
    """The figure as an IPython JPEG image (the figure is closed).

    For figures made of photo-like images (rendered birds on cluttered, noisy backgrounds), whose
    PNGs are several times larger than a JPEG of the same quality: returning this object as the
    last expression of a notebook cell shows the JPEG instead of the default PNG, which keeps the
    committed notebooks small.
    """
    from IPython.display import Image as IPythonImage

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    return IPythonImage(data=buf.getvalue(), format="jpeg")
