"""The book's structure: paired chapters in sync, executed notebooks, toc and citations."""
import ast
import json
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


def long_lines(lines: list[str], limit: int = LINE_LIMIT) -> list[str]:
    return [f"{len(line)} chars: {line.strip()[:60]}" for line in lines if len(line) > limit]


# A listing cell shows fglib's code under an equation (fglib.book.listing.show): the book hides
# its input and renders the listing, JupyterLab shows both. It holds imports from fglib, then one
# show(...) call, the cell's last expression and so its output.

def is_listing(cell) -> bool:
    if cell.cell_type != "code" or "remove-input" not in cell.metadata.get("tags", []):
        return False
    try:
        *imports, last = ast.parse(cell.source).body
    except (SyntaxError, ValueError):                   # ValueError: an empty cell
        return False
    shows = (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
             and isinstance(last.value.func, ast.Name) and last.value.func.id == "show")
    modules = [a.name for s in imports if isinstance(s, ast.Import) for a in s.names]
    modules += [s.module or "" for s in imports if isinstance(s, ast.ImportFrom)]
    return (shows and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in imports)
            and all(m == "fglib" or m.startswith("fglib.") for m in modules))


def listing_cells(text: str) -> list:
    """The listing cells of a chapter's (or a section's) MyST text."""
    return [c for c in jupytext.reads(text, fmt="md:myst").cells if is_listing(c)]


def run_listing(source: str) -> str:
    """What a listing cell displays: its show(...) call's Markdown text, run on its own."""
    *imports, last = ast.parse(source).body
    scope: dict = {}
    exec(compile(ast.Module(imports, []), "<listing cell>", "exec"), scope)
    return eval(compile(ast.Expression(last.value), "<listing cell>", "eval"), scope).data


LISTING = re.compile(r"^`([^`]+)`, lines? [\d–]+\n\n(`{3,})python\n(.*?)\n\2$", re.M | re.S)


def listed_files_and_code(text: str) -> list[tuple[str, list[str]]]:
    """(file named by the caption, code lines) of each listing in show()'s Markdown."""
    return [(m.group(1), m.group(3).split("\n")) for m in LISTING.finditer(text)]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_fit_the_column(md):
    too_long = [f"line {n}: {len(t)} chars" for n, t in code_cell_lines(md) if len(t) > LINE_LIMIT]
    assert not too_long, f"{md.name}: code lines over {LINE_LIMIT} characters: {too_long}"


CELL_LIMIT = 20          # code cells per chapter: a chapter a reader can step through


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_has_more_than_twenty_code_cells(md):
    """Listing cells do not count: the book hides their input, a reader reads them as code."""
    cells = sum(c.cell_type == "code" and not is_listing(c) for c in jupytext.read(md).cells)
    assert cells <= CELL_LIMIT, (f"{md.name} has {cells} code cells (listing cells aside), over "
                                 f"{CELL_LIMIT}: merge cells or move code into fglib")


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
def test_no_chapter_uses_literalinclude(md):
    """The directive renders in the book only: JupyterLab shows it as a raw block, without the code."""
    assert "{literalinclude}" not in md.read_text(), (
        f"{md.name} has a literalinclude: show the code with a listing cell (fglib.book.listing)")


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_listings_show_fglib_code_that_fits_the_column(md):
    """Every listing cell runs on its own (the objects exist, the markers are found), shows code
    of fglib's files within the column, and the notebook holds that listing, not an older one."""
    ipynb = md.with_suffix(".ipynb")                 # (a missing one: test_chapter_pair_is_in_sync)
    cells = nbformat.read(ipynb, as_version=4).cells if ipynb.exists() else []
    outputs = {c.source.strip(): "".join(o.get("data", {}).get("text/markdown", "")
                                         for o in c.get("outputs", []))
               for c in cells if c.cell_type == "code"}
    for cell in listing_cells(md.read_text()):
        try:
            text = run_listing(cell.source)
        except Exception as e:                      # a renamed object, a marker that moved
            pytest.fail(f"{md.name}: the listing cell {cell.source.splitlines()[-1]!r} "
                        f"fails: {type(e).__name__}: {e}")
        shown = listed_files_and_code(text)
        assert shown, f"{md.name}: {cell.source!r} displays no listing"
        for path, code in shown:
            assert path.startswith("fglib/") and (ROOT / path).is_file(), (
                f"{md.name} lists {path}, not a file of fglib")
            assert not long_lines(code), (f"{md.name} lists {path} with lines over "
                                          f"{LINE_LIMIT}: {long_lines(code)}")
        assert outputs.get(cell.source.strip()) == text, (
            f"{md.name}: the notebook's listing of {cell.source.splitlines()[-1]!r} is not the "
            f"code as it is now: `make chapter CH={md.stem}`")


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
    """A section with a display equation shows fglib code (a listing cell), or says in a MyST
    comment line starting with "% no code:" why none implements it (a derivation, say)."""
    missing = [title for title, text in sections(md)
               if re.search(r"^\$\$", text, re.M) and not listing_cells(text)
               and not re.search(r"^% no code: \S", text, re.M)]
    assert not missing, f"{md.name}: sections with equations but no code shown: {missing}"


LISTING_CELL = "```{{code-cell}} ipython3\n:tags: [remove-input]\n\n{}\n```\n\n"


def test_the_checks_catch_a_long_line_a_section_without_code_and_a_bad_listing(tmp_path):
    md = tmp_path / "x.md"
    show_word = "import fglib.core.verdict\nfrom fglib.book.listing import show\n\n" \
                "show(fglib.core.verdict.word)"
    md.write_text("# T\n\n## Eq\n\n$$\na = b\n$$\n\n```{code-cell} ipython3\n"
                  + "x = 1  # " + "y" * 100 + "\n```\n\n## Shown\n\n$$\nc\n$$\n\n"
                  + LISTING_CELL.format(show_word)
                  + "```{code-cell} ipython3\n# not a heading\n```\n\n## Eq2\n\n$$\nc\n$$\n\n"
                  + "```{code-cell} ipython3\nfrom fglib.book.listing import show\n\n"
                  + "show(fglib.core.verdict.word)\n```\n\n"            # not tagged: not a listing
                  + LISTING_CELL.format(show_word + "\nx = 1")               # show() is not last
                  + LISTING_CELL.format("import os\nshow(os.getcwd)"))   # not fglib's code
    assert [n for n, t in code_cell_lines(md) if len(t) > LINE_LIMIT] == [10]
    assert [t for t, _ in sections(md)] == ["(top)", "T", "Eq", "Shown", "Eq2"]
    assert [t for t, text in sections(md) if "$$" in text] == ["Eq", "Shown", "Eq2"]
    with pytest.raises(AssertionError, match=r"no code shown: \['Eq', 'Eq2'\]"):
        test_every_section_with_equations_shows_the_code_of_them(md)
    assert run_listing(show_word).startswith("`fglib/core/verdict.py`, lines ")

    (tmp_path / "x.ipynb").write_text(nbformat.writes(jupytext.read(md)))     # no outputs
    with pytest.raises(AssertionError, match="is not the code as it is now"):
        test_listings_show_fglib_code_that_fits_the_column(md)
    md.write_text(LISTING_CELL.format(show_word.replace("word", "wordy")))   # renamed object
    with pytest.raises(pytest.fail.Exception, match="AttributeError.*wordy"):
        test_listings_show_fglib_code_that_fits_the_column(md)
    md.write_text(LISTING_CELL.format(show_word.replace(")", ', end_at="no such line")')))
    with pytest.raises(pytest.fail.Exception, match="no line contains 'no such line'"):
        test_listings_show_fglib_code_that_fits_the_column(md)
    assert long_lines(listed_files_and_code(f"`fglib/x.py`, line 3\n\n```python\n{'y' * 89}\n```")
                      [0][1]) == [f"89 chars: {'y' * 60}"]

    md.write_text("# T\n\n```{literalinclude} ../fglib/core/verdict.py\n:pyobject: word\n```\n")
    with pytest.raises(AssertionError, match="has a literalinclude"):
        test_no_chapter_uses_literalinclude(md)
    md.write_text("".join(LISTING_CELL.format(show_word) for _ in range(CELL_LIMIT + 1)))
    test_no_chapter_has_more_than_twenty_code_cells(md)                     # listings do not count
    md.write_text("".join("```{code-cell} ipython3\nx = 1\n```\n\n" for _ in range(CELL_LIMIT + 1)))
    with pytest.raises(AssertionError, match="21 code cells"):
        test_no_chapter_has_more_than_twenty_code_cells(md)


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_notebook_cell_carries_metadata_jupyterlab_drops_on_save(md):
    """JupyterLab drops a cell's "execution" timings when it saves, so a notebook that holds
    them changes on a reader's Save (record_timing=False keeps nbconvert from adding them,
    but does not remove old ones)."""
    nb = json.loads(md.with_suffix(".ipynb").read_text())
    timed = [i for i, c in enumerate(nb["cells"]) if "execution" in c.get("metadata", {})]
    assert not timed, (f"{md.with_suffix('.ipynb').name}: cells {timed} carry execution "
                       "timings; remove them (jupytext.read, pop metadata['execution'], write)")


def plain_code_lines(md: Path) -> list[tuple[int, int]]:
    """(line number, length) of every line of a plain ``` block (a shell command, a
    layout) at the left margin: the browser check measured about 90 characters there.
    Code cells and other directives (```{...}) are skipped: other tests measure them."""
    out, fence, plain = [], None, False
    for n, line in enumerate(md.read_text().split("\n"), 1):
        m = re.match(r"^(`{3,})(.*)$", line)
        if fence is None and m:
            fence, plain = m.group(1), not m.group(2).startswith("{")
        elif fence is not None and line.rstrip() == fence:
            fence = None
        elif fence is not None and plain:
            out.append((n, len(line)))
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_plain_code_blocks_fit_the_column(md):
    too_long = [f"line {n}: {k} chars" for n, k in plain_code_lines(md) if k > LINE_LIMIT]
    assert not too_long, f"{md.name}: plain code lines over {LINE_LIMIT}: {too_long}"
