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
