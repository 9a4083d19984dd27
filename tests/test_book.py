"""The book's structure: paired chapters in sync, executed notebooks, toc and citations."""
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "jupytext:" in p.read_text()[:400])


def cells_of(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def pair_differences(md: Path, ipynb: Path) -> list[str]:
    """Where a chapter's .md and .ipynb disagree (empty when they are in sync)."""
    a, b = cells_of(jupytext.read(md)), cells_of(nbformat.read(ipynb, as_version=4))
    problems = [f"{md.name} has {len(a)} cells, {ipynb.name} has {len(b)}"] if len(a) != len(b) else []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            problems.append(f"cell {i} differs: {x[1][:60]!r} (md) vs {y[1][:60]!r} (ipynb)")
    return problems


def unexecuted_cells(ipynb: Path) -> list[int]:
    """Indices of code cells that were never run, or run out of order."""
    nb = nbformat.read(ipynb, as_version=4)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return [i for k, (i, c) in enumerate(code) if c.get("execution_count") != k + 1]


def test_there_are_chapters():
    assert CHAPTERS, "no paired chapter found in book/"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_pair_is_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{md.name} has no paired notebook: run `make chapter CH={md.stem}`"
    problems = pair_differences(md, ipynb)
    assert not problems, (f"{md.name} and {ipynb.name} differ; re-sync with `make chapter CH={md.stem}`:\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_committed_notebook_was_executed_top_to_bottom(md):
    bad = unexecuted_cells(md.with_suffix(".ipynb"))
    assert not bad, f"code cells {bad} of {md.stem}.ipynb were not executed in order: `make chapter CH={md.stem}`"


def test_an_edited_md_is_caught(tmp_path):
    md = CHAPTERS[0]
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    nbformat.write(nb, tmp_path / "ch.ipynb")
    edited = md.read_text().replace("```{code-cell} ipython3\n", "```{code-cell} ipython3\nx = 1\n", 1)
    (tmp_path / "ch.md").write_text(edited)
    assert pair_differences(tmp_path / "ch.md", tmp_path / "ch.ipynb")


def test_an_unexecuted_notebook_is_caught(tmp_path):
    nb = nbformat.read(CHAPTERS[0].with_suffix(".ipynb"), as_version=4)
    next(c for c in nb.cells if c.cell_type == "code").execution_count = None
    nbformat.write(nb, tmp_path / "ch.ipynb")
    assert unexecuted_cells(tmp_path / "ch.ipynb")


def toc_files() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        for key in ("chapters", "sections", "parts"):
            for child in node.get(key, []):
                if "file" in child:
                    files.append(child["file"])
                walk(child)
    walk(toc)
    return files


PAGES = {BOOK / "bibliography"}      # pages that are not chapter pairs


def test_toc_lists_every_chapter_and_nothing_else():
    listed = {ROOT / f for f in toc_files()}
    assert listed == {md.with_suffix("") for md in CHAPTERS} | PAGES


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (BOOK / "references.bib").read_text(), re.M))
    for md in CHAPTERS:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md.read_text()):
            for key in group.split(","):
                assert key.strip() in keys, f"{md.name} cites {key.strip()!r}, not in book/references.bib"


def test_jupytext_pairs_md_and_ipynb():
    assert 'formats = "ipynb,md:myst"' in (BOOK / "jupytext.toml").read_text()


# -- what the rendered pages show ------------------------------------------------------------

LINE_LIMIT = 88          # what fits the book's column in a code block (tests/browser checks it)
INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\n((?::[\w-]+:.*\n)*)```")


def code_cell_lines(md: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a ```{code-cell} block of a chapter."""
    out, inside = [], False
    for n, line in enumerate(md.read_text().splitlines(), 1):
        if line.startswith("```{code-cell"):
            inside = True
        elif line.startswith("```"):
            inside = False
        elif inside:
            out.append((n, line))
    return out


def includes(md: Path) -> list[tuple[Path, dict[str, str]]]:
    """The literalinclude directives of a chapter: (file, options)."""
    found = []
    for m in INCLUDE.finditer(md.read_text()):
        opts = dict(re.findall(r":([\w-]+):\s*(.*)", m.group(2)))
        found.append(((md.parent / m.group(1)).resolve(), opts))
    return found


def shown_source(path: Path, opts: dict[str, str]) -> list[str]:
    """The lines a literalinclude shows, read by Sphinx's own reader (without dedenting, so
    the width checked is the file's); [] when the object is not in the file."""
    from sphinx.config import Config
    from sphinx.directives.code import LiteralIncludeReader

    keep = {k: v for k, v in opts.items() if k in ("pyobject", "start-at", "end-at",
                                                    "start-after", "end-before", "lines")}
    try:
        text, _ = LiteralIncludeReader(str(path), keep, Config()).read()
    except ValueError:                                  # "Object named ... not found"
        return []
    return text.splitlines()


def pyobject_source(path: Path, dotted: str) -> list[str]:
    """The source lines of a top-level function/class or Class.method, as Sphinx finds it."""
    return shown_source(path, {"pyobject": dotted})


def long_lines(lines: list[str], limit: int = LINE_LIMIT) -> list[str]:
    return [f"{len(line)} chars: {line.strip()[:60]}" for line in lines if len(line) > limit]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_fit_the_column(md):
    too_long = [f"line {n}: {len(t)} chars" for n, t in code_cell_lines(md) if len(t) > LINE_LIMIT]
    assert not too_long, f"{md.name}: code lines over {LINE_LIMIT} characters: {too_long}"


CELL_LIMIT = 20          # code cells per chapter: a chapter a reader can step through


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_has_more_than_twenty_code_cells(md):
    cells = sum(line.startswith("```{code-cell}") for line in md.read_text().split("\n"))
    assert cells <= CELL_LIMIT, (f"{md.name} has {cells} code cells, over {CELL_LIMIT}: merge cells "
                                 "or move code into fglib")


# Issue 29: one verdict function (fglib.core.verdict) for the whole book. A chapter that wrote its
# own rule would match one of these (the old rule's names and words, a hand-made threshold).
OWN_RULES = [r"two standard errors", r"\b2 ?\* ?se\b", r"\bmean_difference\b",
             r"\beffect\(", r"no measurable effect", r"fglib\.core\.stats import .*compare_sentence",
             r"ttest_rel|ttest_ind|ttest_1samp"]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_has_a_verdict_rule_of_its_own(md):
    text = md.read_text()
    found = [(pattern, m.group(0)) for pattern in OWN_RULES
             for m in [re.search(pattern, text)] if m]
    assert not found, (f"{md.name} reads differences with a rule of its own {found}: use "
                       "fglib.core.verdict (compare_sentence, family) or runner.versus_baseline")


def test_the_verdict_rule_check_catches_the_old_rule(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("The gain is more than two standard errors above zero.\n")
    with pytest.raises(AssertionError, match="a rule of its own"):
        test_no_chapter_has_a_verdict_rule_of_its_own(md)
    md.write_text("d, se = between(runs, a, b)\nif abs(d) > 2 * se:\n    print('gain')\n")
    with pytest.raises(AssertionError, match="a rule of its own"):
        test_no_chapter_has_a_verdict_rule_of_its_own(md)


NESTED_LIMIT = 80        # a code block inside a list item (an exercise's solution) is indented


def nested_code_lines(md: Path) -> list[tuple[int, int]]:
    """(line number, length without the block's indentation) of every line of a plain ```
    block indented inside a list item: the browser check measured about 83 characters there."""
    out, indent = [], None
    for n, line in enumerate(md.read_text().split("\n"), 1):
        fence = re.match(r"^(\s+)```(?!\{)", line)
        if indent is None and fence:
            indent = len(fence.group(1))
        elif indent is not None and re.match(r"^\s+```\s*$", line):
            indent = None
        elif indent is not None:
            out.append((n, len(line) - indent))
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_code_in_solutions_fits_the_narrower_column(md):
    too_long = [f"line {n}: {k} chars" for n, k in nested_code_lines(md) if k > NESTED_LIMIT]
    assert not too_long, f"{md.name}: indented code lines over {NESTED_LIMIT}: {too_long}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_shown_library_code_exists_and_fits_the_column(md):
    for path, opts in includes(md):
        assert path.is_file(), f"{md.name} includes {path}, which does not exist"
        if "pyobject" in opts:
            lines = shown_source(path, opts)
            assert lines, f"{md.name}: {path.name} has no {opts['pyobject']} (renamed?)"
            assert not long_lines(lines), (f"{md.name} shows {path.name}:{opts['pyobject']} with "
                                           f"lines over {LINE_LIMIT}: {long_lines(lines)}")


def sections(md: Path) -> list[tuple[str, str]]:
    """(heading, text) of each section of a chapter, split at Markdown headings outside code."""
    out, title, buf, fence = [], "(top)", [], False
    for line in md.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence                      # code cells and directives alike
        if not fence and re.match(r"#{1,6} ", line):
            out.append((title, "\n".join(buf)))
            title, buf = line.lstrip("# "), []
        else:
            buf.append(line)
    out.append((title, "\n".join(buf)))
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_section_with_equations_shows_the_code_of_them(md):
    """A section with a display equation shows fglib code (literalinclude), or says in a MyST
    comment line starting with "% no code:" why none implements it (a derivation, say)."""
    missing = [title for title, text in sections(md)
               if re.search(r"^\$\$", text, re.M) and "{literalinclude}" not in text
               and not re.search(r"^% no code: \S", text, re.M)]
    assert not missing, f"{md.name}: sections with equations but no code shown: {missing}"


def test_the_checks_catch_a_long_line_and_a_section_without_code(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# T\n\n## Eq\n\n$$\na = b\n$$\n\n```{code-cell} ipython3\n"
                  + "x = 1  # " + "y" * 100 + "\n```\n\n## Shown\n\n"
                  + "```{literalinclude} ../f.py\n:pyobject: f\n```\n\n"
                  + "```{code-cell} ipython3\n# not a heading\n```\n\n## Eq2\n\n$$\nc\n$$\n")
    assert [n for n, t in code_cell_lines(md) if len(t) > LINE_LIMIT] == [10]
    assert [t for t, _ in sections(md)] == ["(top)", "T", "Eq", "Shown", "Eq2"]
    assert [t for t, text in sections(md) if "$$" in text] == ["Eq", "Eq2"]
    with pytest.raises(AssertionError, match=r"no code shown: \['Eq', 'Eq2'\]"):
        test_every_section_with_equations_shows_the_code_of_them(md)
    assert pyobject_source(ROOT / "fglib" / "core" / "stats.py", "signed")[0].startswith("def signed")
    assert pyobject_source(ROOT / "fglib" / "core" / "stats.py", "nothing_here") == []
