"""Checked figures: what a figure draws, compared with data/expected/figures/<chapter>.json.

nbval compares a chapter's text outputs, not its images, so a figure could change silently.
`check_figure(fig, name)`, called in the cell that draws the figure, reads the data back from
the figure's artists (every line's points, every scatter's offsets, every image's pixels, every
bar, box or circle, every fill band, and the words: titles, axis labels, legend entries,
annotations and the names on categorical axes) and compares them with the chapter's stored
expectation. A moved curve, another image, a box in another place or a renamed legend entry
raises `ResultMismatch`, so `pytest --nbval` goes red.

Large arrays are stored as a sketch, not in full: the shape, the sum, the sum of absolute
values, the minimum, the maximum and eight projections on fixed pseudo-random weights in
[-1, 1]. Any change of one element by more than the tolerance moves the projections; the
tolerance, `rtol` times the array's sum of absolute values (1e-6 by default), is far above
the last-bit differences of float32 arithmetic between CPU kinds and far below anything a
reader could see. After an intended change, re-execute the chapter with
FGLIB_UPDATE_EXPECTED=1 (refused under CI) and commit the JSON file beside the notebook.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import Collection, PathCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import FixedFormatter

from fglib.book.expected import ResultMismatch, updating
from fglib.core.paths import expected_dir
from fglib.core.runtime import current_chapter

PROJECTIONS = 8


def figures_path(chapter: str) -> Path:
    return expected_dir() / "figures" / f"{chapter}.json"


def dumps(stored: Any, depth: int = 0) -> str:
    """The file's text: objects one key per line (sorted), every list on one line."""
    if not isinstance(stored, dict) or not stored:
        return json.dumps(stored, ensure_ascii=False)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(v, depth + 1)}"
             for k, v in sorted(stored.items())]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}" + ("\n" if depth == 0 else "")


def sketch(a: Any) -> dict[str, Any]:
    """An array's fingerprint (float64): shape, sum, sum of |a|, min, max, projections."""
    a = np.ma.filled(np.ma.asarray(a, dtype=np.float64), np.nan).ravel()
    a = np.where(np.isfinite(a), a, 0.0)            # masked or missing points draw nothing
    w = np.random.default_rng(a.size).uniform(-1, 1, (PROJECTIONS, a.size))
    return {"shape": [int(a.size)], "sum": float(a.sum()), "l1": float(np.abs(a).sum()),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0,
            "proj": [float(v) for v in w @ a]}


def _category_names(axis) -> list[str]:
    """The names on a categorical axis (seaborn's strip, bar and box plots), else none."""
    fmt = axis.get_major_formatter()
    if isinstance(fmt, FixedFormatter) or type(fmt).__name__ == "StrCategoryFormatter":
        return [str(t) for t in fmt.format_ticks(axis.get_majorticklocs())]
    return []


def _axes_data(ax: Axes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, line in enumerate(ax.lines):
        out[f"line {i}"] = sketch(line.get_xydata())
    for i, c in enumerate(ax.collections):
        if isinstance(c, PathCollection) and len(c.get_offsets()):      # scatter points
            out[f"points {i}"] = sketch(c.get_offsets())
        elif isinstance(c, QuadMesh):                                     # pcolormesh
            out[f"mesh {i}"] = sketch(c.get_array())
        elif isinstance(c, Collection) and c.get_paths():                 # bands, segments
            out[f"paths {i}"] = sketch(np.concatenate([p.vertices for p in c.get_paths()]))
    for i, im in enumerate(ax.images):
        out[f"image {i}"] = sketch(im.get_array())
        out[f"image {i} extent"] = sketch(im.get_extent())
    for i, p in enumerate(ax.patches):                   # bars, boxes, circles, rectangles
        out[f"patch {i}"] = sketch(p.get_patch_transform().transform(p.get_path().vertices))
    legend = ax.get_legend()
    words = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
             *[t.get_text() for t in ax.texts],
             *([t.get_text() for t in legend.get_texts()] if legend else []),
             *_category_names(ax.xaxis), *_category_names(ax.yaxis)]
    out["words"] = [w for w in words if w]
    return out


def figure_data(fig: Figure) -> dict[str, Any]:
    """What `fig` draws, axes by axes (hidden axes left out), as sketches and words."""
    out: dict[str, Any] = {"words": [t.get_text() for t in fig.texts if t.get_text()]}
    if getattr(fig, "_suptitle", None) is not None:
        out["words"].insert(0, fig._suptitle.get_text())
    for legend in fig.legends:                           # seaborn's figure-level legends
        out["words"] += [t.get_text() for t in legend.get_texts()]
    for k, ax in enumerate(a for a in fig.axes if a.get_visible()):
        out[f"axes {k}"] = _axes_data(ax)
    return out


def _compare(ours: Any, expected: Any, where: str, rtol: float, problems: list[str]) -> None:
    if isinstance(expected, dict) and "proj" in expected:          # a sketch
        if not isinstance(ours, dict) or ours.get("shape") != expected["shape"]:
            problems.append(f"{where}: shape {ours.get('shape') if isinstance(ours, dict) else ours}"
                            f", expected {expected['shape']}")
            return
        tol = rtol * max(expected["l1"], ours["l1"]) + 1e-12
        for key in ("sum", "l1", "min", "max"):
            if abs(ours[key] - expected[key]) > tol:
                problems.append(f"{where}: {key} {ours[key]:.6g}, expected {expected[key]:.6g} "
                                f"(tolerance {tol:.2g})")
        worst = max(abs(a - b) for a, b in zip(ours["proj"], expected["proj"]))
        if worst > tol:
            problems.append(f"{where}: the values moved (a projection by {worst:.3g}, "
                            f"tolerance {tol:.2g})")
    elif isinstance(expected, dict):
        if not isinstance(ours, dict) or set(ours) != set(expected):
            got = sorted(ours) if isinstance(ours, dict) else ours
            problems.append(f"{where}: draws {got}, expected {sorted(expected)}")
            return
        for key in expected:
            _compare(ours[key], expected[key], f"{where}, {key}", rtol, problems)
    elif ours != expected:
        problems.append(f"{where}: {ours!r}, expected {expected!r}")


def check_figure(fig: Figure, name: str, chapter: str | None = None, rtol: float = 1e-6,
                 update: bool | None = None) -> None:
    """Compare what `fig` draws with the stored expectation `name` of the chapter (the one
    fglib.setup(chapter=...) named); raise ResultMismatch naming every difference."""
    chapter = chapter or current_chapter()
    if chapter is None:
        raise ValueError("check_figure needs the chapter: call fglib.setup(chapter=...) first "
                         "or pass chapter=")
    path = figures_path(chapter)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    ours = json.loads(json.dumps(figure_data(fig)))            # as the file will hold it
    if updating(update):
        stored[name] = ours
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dumps(stored), encoding="utf-8")
        tmp.replace(path)
        return
    if name not in stored:
        raise ResultMismatch(f"{path} holds no figure {name!r}: execute the chapter once with "
                             "FGLIB_UPDATE_EXPECTED=1, look at the figure, and commit the file")
    problems: list[str] = []
    _compare(ours, stored[name], f"figure {name!r}", rtol, problems)
    if problems:
        raise ResultMismatch(f"{chapter}: figure {name!r} differs from {path.name}:\n  "
                             + "\n  ".join(problems[:20])
                             + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20
                                else ""))
