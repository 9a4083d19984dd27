"""fglib's code under a chapter's equations, shown the same way in the rendered book and in JupyterLab.

`show(obj, ...)` returns Markdown: a caption naming the file (relative to the repository) and the
lines shown, then the source in a fenced python block, dedented so that a method starts at column 0.
A chapter calls it in a cell tagged `remove-input`: the book (myst-nb renders Markdown output as
MyST) shows only the highlighted listing, JupyterLab shows the call and the listing; nbval compares
the listing with the committed one, so a chapter whose listed code changed fails until re-executed.
"""
from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

from IPython.display import Markdown

ROOT = Path(__file__).resolve().parents[2]   # the repository: captions name files relative to it
COLUMN = 88                                   # characters of code that fit the book's column


def show(*objs, start_at: str | None = None, end_at: str | None = None,
         end_before: str | None = None) -> Markdown:
    """The source of each of `objs` (a function, class or method; a module to show a range of it),
    one listing after another. The markers select part of a single object's source, as
    literalinclude's options did: from the first line containing `start_at`, to the next line
    containing `end_at` (shown) or `end_before` (not shown)."""
    if not objs:
        raise TypeError("show() needs a function, class, method or module")
    if len(objs) > 1 and (start_at or end_at or end_before):
        raise TypeError("markers select lines of one object: show several objects without them")
    if end_at is not None and end_before is not None:
        raise TypeError("give end_at or end_before, not both")
    return Markdown("\n\n".join(listing(obj, start_at, end_at, end_before) for obj in objs))


def listing(obj, start_at: str | None = None, end_at: str | None = None,
            end_before: str | None = None) -> str:
    """One object's listing as Markdown text (see `show`)."""
    obj = inspect.unwrap(obj)                 # a decorated function's own source (lru_cache...)
    lines, first = inspect.getsourcelines(obj)
    first = max(first, 1)                     # a module's source starts at line 1 (inspect says 0)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    start = 0 if start_at is None else _find(lines, start_at, 0, name)
    stop = len(lines)
    if end_at is not None:
        stop = _find(lines, end_at, start, name) + 1
    elif end_before is not None:
        stop = _find(lines, end_before, start + 1, name)
    while stop > start + 1 and not lines[stop - 1].strip():     # no trailing blank lines
        stop -= 1
    code = textwrap.dedent("".join(lines[start:stop])).rstrip("\n")
    wide = [line for line in code.split("\n") if len(line) > COLUMN]
    if wide:
        raise ValueError(f"{name}: {len(wide)} line(s) over the book's {COLUMN} columns, e.g. "
                         f"{len(wide[0])} characters: {wide[0].strip()[:60]!r}; wrap them in the source")
    path = Path(inspect.getsourcefile(obj)).resolve()
    shown = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    lo, hi = first + start, first + stop - 1
    where = f"line {lo}" if lo == hi else f"lines {lo}\N{EN DASH}{hi}"
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", code)), default=0))
    return f"`{shown}`, {where}\n\n{fence}python\n{code}\n{fence}"


def _find(lines: list[str], marker: str, start: int, name: str) -> int:
    """The index of the first line from `start` on that contains `marker`."""
    for i in range(start, len(lines)):
        if marker in lines[i]:
            return i
    raise ValueError(f"{name}: no line contains {marker!r} (renamed or removed?)")
