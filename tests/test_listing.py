"""fglib.book.listing.show: the code under a chapter's equations, as the file has it."""
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

import fglib.core.verdict
import fglib.models.mcloss
from fglib.book.listing import COLUMN, ROOT, show

SOURCE = '''\
"""A module to list."""
WIDTH = 3
HEIGHT = 4  # end of the sizes


def twice(x):
    return 2 * x


class Box:
    """A box."""
    size = 1

    def __init__(self):
        self.n = 0

    def grow(self, k):
        self.n += k
        return self.n
'''


@pytest.fixture
def module(tmp_path):
    """SOURCE as an imported module (inspect finds a class's file through sys.modules)."""
    path = tmp_path / "listed.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("listed", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["listed"] = mod
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["listed"]


def listing(path: Path, lines: str, code: str) -> str:
    return f"`{path}`, {lines}\n\n```python\n{textwrap.dedent(code).strip()}\n```"


def test_a_function_is_its_lines(module):
    assert show(module.twice).data == listing(module.__file__, "lines 6–7", """
        def twice(x):
            return 2 * x""")


def test_a_method_is_dedented(module):
    assert show(module.Box.grow).data == listing(module.__file__, "lines 17–19", """
        def grow(self, k):
            self.n += k
            return self.n""")


def test_markers_select_a_range_of_a_module_or_a_class(module):
    assert show(module, start_at="WIDTH =", end_at="# end").data == listing(
        module.__file__, "lines 2–3", "WIDTH = 3\nHEIGHT = 4  # end of the sizes")
    assert show(module.Box, end_before="def __init__").data == listing(   # no blank line kept
        module.__file__, "lines 10–12", 'class Box:\n    """A box."""\n    size = 1')
    assert show(module, start_at="HEIGHT", end_at="HEIGHT").data.startswith(
        f"`{module.__file__}`, line 3\n")


def test_several_objects_are_listed_in_turn(module):
    assert show(module.twice, module.Box.grow).data == (
        show(module.twice).data + "\n\n" + show(module.Box.grow).data)
    with pytest.raises(TypeError, match="one object"):
        show(module.twice, module.Box, end_before="def")


@pytest.mark.parametrize("obj", [fglib.core.verdict.word, fglib.models.mcloss.MCLoss.grouped,
                                 fglib.models.mcloss.MCLoss])
def test_the_caption_names_the_file_and_lines_that_hold_the_code(obj):
    text = show(obj).data
    m = re.fullmatch(r"`(fglib/[\w/]+\.py)`, lines (\d+)–(\d+)\n\n```python\n(.*)\n```", text, re.S)
    assert m, text[:120]
    lines = (ROOT / m.group(1)).read_text().split("\n")[int(m.group(2)) - 1:int(m.group(3))]
    assert m.group(4) == textwrap.dedent("\n".join(lines))


def test_a_line_wider_than_the_column_is_refused(tmp_path):
    long_line = "    return " + " + ".join(["x"] * 40)
    assert len(long_line) > COLUMN
    (tmp_path / "wide.py").write_text(f"def wide(x):\n{long_line}\n")
    spec = importlib.util.spec_from_file_location("wide", tmp_path / "wide.py")
    wide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wide)
    with pytest.raises(ValueError, match=f"wide: 1 line.* over the book's {COLUMN} columns"):
        show(wide.wide)


def test_a_marker_not_found_is_refused(module):
    with pytest.raises(ValueError, match="Box: no line contains 'def shrink'"):
        show(module.Box, end_before="def shrink")
    with pytest.raises(ValueError, match="no line contains 'DEPTH'"):
        show(module, start_at="DEPTH")
    with pytest.raises(ValueError, match="no line contains 'WIDTH'"):   # the end is after the start
        show(module, start_at="HEIGHT", end_at="WIDTH")


def test_backticks_in_the_source_do_not_close_the_fence(tmp_path):
    (tmp_path / "ticks.py").write_text('def f():\n    """```python\n    x\n    ```"""\n')
    spec = importlib.util.spec_from_file_location("ticks", tmp_path / "ticks.py")
    ticks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ticks)
    text = show(ticks.f).data
    assert "\n````python\n" in text and text.endswith("\n````")
