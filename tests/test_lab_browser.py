"""The JupyterLab check (tests/browser/check_lab.py): a real chapter passes, a faulty one fails.

One run of the check, in headless Chromium, on two chapters: the introduction (the cheapest chapter
with code listings, citations and display math), which must pass, and a synthetic faulty one, each
of whose faults must be reported and none of whose look-alikes (a citation, math, `:pyobject:` and
`{literalinclude}` in inline code, a Markdown output holding a code block) may be. About 35 s on
two cores. Needs Chromium and playwright (`make venv-browser`): skipped
without them, except under CI, where .ci/run installs both and a skip would hide a broken check.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "browser" / "check_lab.py"
CHAPTER = "book/intro.md"

_spec = importlib.util.spec_from_file_location("fgvc_check_lab", SCRIPT)
check_lab = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(check_lab)


def _missing() -> str | None:
    if check_lab.find_chromium() is None:
        return "no Chromium executable found (apt-get install chromium, or set $CHROMIUM)"
    for module, fix in (("playwright", "pip install -e '.[browser]'"), ("jupyterlab", "pip install -e ."),
                        ("jupytext", "pip install -e .")):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is missing ({fix})"
    return None


MISSING = _missing()

HEADER = """---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---
"""

BAD = HEADER + r"""
# A faulty chapter

The code under the formula:

```{literalinclude} ../fglib/core/stats.py
:pyobject: scatter_traces
```

A directive that lost its fence leaves :pyobject: scatter_ratio in the text, and the formula
$x^2^3$ is not TeX.

```{unknowndirective}
body
```

Look-alikes that are fine: {cite:t}`wah2011cub` (a citation, shown as its key), the display

$$
\begin{aligned}
J &= \frac{\operatorname{tr} S_B}{\operatorname{tr} S_W}, & K &= \{x : x > 0\}
\end{aligned}
$$

and {math}`\alpha + \beta`, the old `{literalinclude}` directive, its `:pyobject:` option and the
`{cite}` role named in inline code.

```{code-cell} ipython3
print("fresh output")
```

```{code-cell} ipython3
from IPython.display import Markdown

Markdown("`fglib/core/stats.py`, line 1\n\n```python\ndef f(x):\n    return {'cite': x}\n```")
```

```{code-cell} ipython3
import sys
print("a warning on stderr", file=sys.stderr)
```

```{code-cell} ipython3
raise ValueError("synthetic failure")
```

```{code-cell} ipython3
print("never runs")
```
"""


def _write_chapter(book: Path) -> Path:
    """bad.md and its .ipynb, paired as the chapters are but never executed (no outputs), so that
    saving it after Run All changes the .ipynb."""
    import jupytext

    book.mkdir(parents=True)
    nb = jupytext.reads(BAD, fmt="md:myst")
    nb.metadata["jupytext"]["formats"] = "ipynb,md:myst"
    jupytext.write(nb, book / "bad.ipynb", fmt="ipynb")
    jupytext.write(nb, book / "bad.md", fmt="md:myst")
    return book / "bad.md"


def _snapshot() -> dict[str, bytes | None]:
    """The checked chapter's pair as it is on disk, and whether JupyterLab left checkpoints in book/
    (the check works on a copy: neither may change)."""
    files = {p: (ROOT / p).read_bytes() if (ROOT / p).exists() else None
             for p in (CHAPTER, CHAPTER.replace(".md", ".ipynb"))}
    files["book/.ipynb_checkpoints exists"] = b"yes" if (ROOT / "book" / ".ipynb_checkpoints").exists() else None
    return files


def _sections(output: str) -> dict[str, list[str]]:
    """The report's 'chapter:' sections, each with its '  - problem' lines (notes left out)."""
    found, current = {}, None
    for line in output.splitlines():
        if re.fullmatch(r"\S+\.md:", line):
            current = found.setdefault(line[:-1], [])
        elif line.startswith("  - ") and current is not None:
            current.append(line[4:])
        elif line.startswith("      ") and current:
            current[-1] += "\n" + line.strip()
        elif not line.startswith("  "):
            current = None
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if MISSING:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the JupyterLab check, but {MISSING}: .ci/run installs Chromium and playwright")
        pytest.skip(f"JupyterLab check not run: {MISSING}")
    base = tmp_path_factory.mktemp("lab")
    bad = _write_chapter(base / "syn" / "book")
    before = _snapshot()
    proc = subprocess.run([sys.executable, str(SCRIPT), CHAPTER, str(bad),
                           "--screenshots", str(base / "shots"), "--timeout", "240"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    after = _snapshot()
    out = proc.stdout + proc.stderr
    return {"rc": proc.returncode, "out": out, "sections": _sections(out), "bad": str(bad), "shots": base / "shots", "git": (before, after)}


def _one(problems: list[str], pattern: str) -> str:
    hits = [p for p in problems if re.search(pattern, p, re.S)]
    assert hits, f"no problem matching {pattern!r} in:\n" + "\n".join(problems)
    return hits[0]


def test_the_introduction_runs_clean_in_jupyterlab(report):
    """Double-click book/intro.md, Run All, Ctrl+S: no error, no raw MyST, and nothing changes on disk."""
    out = report["out"]
    assert not report["sections"].get(CHAPTER), out      # a section of notes only is fine
    assert re.search(rf"^ok +{re.escape(CHAPTER)} .*\d+ citations shown as their keys", out, re.M), out
    assert (report["shots"] / "intro.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_check_leaves_the_repository_as_it_was(report):
    before, after = report["git"]
    assert before == after, [k for k in before if before[k] != after[k]]


def test_every_fault_is_reported(report):
    out = report["out"]
    assert report["rc"] == 1, out
    bad = report["sections"].get(report["bad"])
    assert bad, out
    _one(bad, r"cell \d+ \(code: `raise ValueError\(\"synthetic failure\"\)`\) raised ValueError: synthetic failure")
    _one(bad, r"Run All stopped after the error in cell \d+: 1 code cell\(s\) did not run")
    _one(bad, r"\(code: `import sys`\) wrote to stderr: a warning on stderr")
    _one(bad, r"the \{literalinclude\} directive on line \d+ \(\.\./fglib/core/stats\.py\) is not shown in JupyterLab")
    _one(bad, r"raw MyST ':pyobject:' in the rendered markdown: .*leaves :pyobject: scatter_ratio")
    _one(bad, r"the MyST renderer reports 'unknowndirective - Unknown Directive'")
    _one(bad, r"the MyST renderer reports 'Double superscript.*' at \"x\^2\^3\"")
    _one(bad, r"saving changed \S+/book/bad\.ipynb \(git status: M\).*\(code: `print\(\"fresh output\"\)`\): "
              r"output changed, first difference: \+\[stdout\] fresh output")
    assert len(bad) == 8, "look-alikes reported as problems:\n" + "\n".join(bad)
    assert re.search(rf"^FAIL +{re.escape(report['bad'])} .*1 citation shown as its key", out, re.M), out
    assert list(report["shots"].glob("bad-cell*.png")), "no screenshot of the faulty cells"


def test_what_is_not_a_chapter_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing.md")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a chapter's .md" in proc.stderr, proc.stderr
