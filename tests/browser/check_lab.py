#!/usr/bin/env python3
"""Step through chapters in JupyterLab as a reader does, in headless Chromium, and report what goes wrong.

    python tests/browser/check_lab.py [book/intro.md ...] [--screenshots DIR] [--chromium PATH] [--timeout S]

(`make check-lab` runs it on every chapter; without arguments it checks every paired chapter of book/.)
The chapters' folders are copied to a temporary directory (the files git tracks or would track there,
as they are in the working tree), which becomes a git repository of its own, and `jupyter lab` (this
interpreter's, with private config, data and runtime directories) serves it on a free local port with
FGLIB_STORE_ONLY=1 and FGLIB_PROGRESS=0: the chapters read every run from the results store and train
nothing. The repository itself is never written. For each chapter the check

  * opens JupyterLab, navigates the file browser into the chapter's folder and double-clicks its .md,
    which must open as a notebook (jupytext), not in the text editor;
  * runs Run > Run All Cells and waits until every cell has run and the kernel is idle;
  * saves with Ctrl+S (jupytext writes the .md and the paired .ipynb);
  * shuts its kernel down; the next chapter starts from a fresh page.

A chapter fails when

  * a code cell raises (an error output, or a traceback on stderr) or writes to stderr, Run All stops
    before the last cell, or the kernel dies;
  * raw MyST is left in the rendered markdown or in a Markdown output: `:pyobject:`, `{literalinclude}`,
    `{cite...}` or any other `{role}` followed by its `content`, or a directive's fence shown as a code
    block (```{name}); a markdown cell holds a directive that JupyterLab's MyST renderer (jupyterlab-myst)
    drops without a trace (literalinclude, include); the renderer reports an unknown directive, a TeX
    error or a cross-reference it cannot find; or a markdown cell is left unrendered or renders empty;
  * saving changes a tracked file: `git status --porcelain` of the copy, with what changed (cells paired
    by source: added, gone, outputs, execution counts, metadata; lines of the .md);
  * a dialog is left open, or the page raises a JavaScript error (but for KNOWN_JS_ERRORS of
    JupyterLab itself, printed as notes).

Citations are not failures: jupyterlab-myst cannot read the book's references.bib and shows each
`{cite}` as its key with a warning sign; the summary line counts them.

Screenshots go to _build/lab-screenshots/ (beside check_book.py's _build/browser-screenshots/) or to
--screenshots DIR: <chapter>.png, the whole notebook after Run All, and <chapter>-cell<N>.png for each
cell with a problem (or <chapter>-opened.png when it did not open as a notebook). One summary line is
printed per chapter, then every problem, chapter by chapter; the exit status is 1 when there is a
problem, 2 when the check itself cannot run.

Chromium and playwright as for check_book.py (`make venv-browser`; Debian's `apt-get install chromium`).
tests/test_lab_browser.py runs it in CI on the introduction and on a synthetic faulty chapter.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_book import find_chromium  # noqa: E402  (the book check beside this script)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120          # jupyter lab answers in 4-9 s on two busy cores
UI_TIMEOUT_MS = 90_000         # JupyterLab's page, the file browser, a notebook opening
KERNEL_TIMEOUT_S = 120         # the kernel starting
DEFAULT_RUN_TIMEOUT_S = 900    # Run All of one chapter (they execute from the store in seconds to minutes)
SAVE_TIMEOUT_MS = 60_000
RENDER_TIMEOUT_MS = 20_000     # markdown cells rendered again after Run All
MAX_CELL_SHOTS = 6
MAX_SCREENSHOT_PX = 16_000     # Chromium cannot capture much taller pages
# Directives that jupyterlab-myst drops without a trace (it has no file system to read them from).
DROPPED_DIRECTIVES = {"literalinclude": "the code it includes is missing",
                      "include": "the file it includes is missing"}
# JavaScript errors of JupyterLab itself that say nothing about the chapter (matched in the message
# and first stack frame): not counted as problems, printed as notes.
KNOWN_JS_ERRORS = {
    "_markdownOverlapsToolbar": "JupyterLab's cell toolbar measuring a markdown cell that jupyterlab-myst "
                                "renders, now and then; it only places the toolbar",
}
LAB_SETTINGS = {               # user settings of the private config dir: no news toast, no update check
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


def paired_chapters(book: Path = ROOT / "book") -> list[Path]:
    """Every chapter of the book: book/*.md with a jupytext header (not _toc)."""
    return sorted(p for p in book.glob("*.md") if "jupytext:" in p.read_text(errors="replace")[:400])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- the temporary copy -------------------------------------------------------------------------

def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    return subprocess.run(["git", "-c", "core.hooksPath=" + os.devnull, "-c", "commit.gpgsign=false",
                           "-c", "user.name=check_lab", "-c", "user.email=check_lab@localhost", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=check)


def _repository_of(path: Path) -> Path:
    """The git work tree holding path, or its parent folder's parent when there is none."""
    proc = _git(path.parent, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()).resolve()
    return path.parent.parent.resolve()


def _files_to_copy(repo: Path, folder: Path) -> list[Path]:
    """The files of folder (relative to repo) that git tracks or would track, as in the work tree."""
    proc = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                folder.relative_to(repo).as_posix() or ".", check=False)
    if proc.returncode == 0:
        rels = [Path(p) for p in proc.stdout.split("\0") if p]
    else:                                   # not a git repository: every file but checkpoints
        rels = [p.relative_to(repo) for p in folder.rglob("*")
                if p.is_file() and ".ipynb_checkpoints" not in p.parts]
    return sorted({rel for rel in rels if (repo / rel).is_file()})


@dataclass
class Chapter:
    shown: str                  # as the report names it (the path given, relative to the cwd if below it)
    source: Path                # the chapter's .md in its repository
    lab_path: str               # its path under the server's root, e.g. "main/book/intro.md"
    copy: Path                  # the copied .md


def make_copy(chapters: list[Path], dest: Path) -> list[Chapter]:
    """Copy each chapter's folder (git's view of it) to dest/<repository name>/..., and make dest a git
    repository whose one commit is that copy, so that `git status` there shows what saving changed."""
    names: dict[Path, str] = {}
    copied: set[Path] = set()
    out = []
    for md in chapters:
        md = md.resolve()
        repo = _repository_of(md)
        if repo not in names:
            name = repo.name or "repo"
            while name in names.values():
                name += "_"
            names[repo] = name
        for rel in _files_to_copy(repo, md.parent):
            target = dest / names[repo] / rel
            if target in copied:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, target)
            copied.add(target)
        lab_path = f"{names[repo]}/{md.relative_to(repo).as_posix()}"
        try:
            shown = os.path.relpath(md, Path.cwd())
            shown = shown if not shown.startswith("..") else str(md)
        except ValueError:
            shown = str(md)
        out.append(Chapter(shown, md, lab_path, dest / lab_path))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "the chapters as they were before the check")
    return out


# --- jupyter lab --------------------------------------------------------------------------------

@dataclass
class Lab:
    url: str                    # ends with "/"
    token: str
    log: Path
    proc: subprocess.Popen

    def api(self, method: str, path: str) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, work: Path):
    """`jupyter lab` serving root until the block exits. Its config, data and runtime directories are
    private (the user's ~/.jupyter cannot change the outcome; the environment's own, with jupytext's
    server extension, jupyterlab-myst and the defaultViewers override, still apply)."""
    dirs = {name: work / name for name in ("config", "data", "runtime")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for rel, settings in LAB_SETTINGS.items():
        path = dirs["config"] / "lab" / "user-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               FGLIB_STORE_ONLY="1",    # chapters read the results store and train nothing
               FGLIB_PROGRESS="0")      # no progress bars in the outputs (as under `make test`)
    token = secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={_free_port()}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"]
    log = work / "jupyter-lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    lab = None
    try:
        info = dirs["runtime"] / f"jpserver-{proc.pid}.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {proc.returncode}:\n"
                                   + Lab("", "", log, proc).log_tail())
            if lab is None and info.exists():
                with contextlib.suppress(ValueError, KeyError):
                    lab = Lab(json.loads(info.read_text())["url"], token, log, proc)
            if lab is not None:
                with contextlib.suppress(OSError):
                    if lab.api("GET", "api/status")[0] == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {START_TIMEOUT_S} s:\n"
                                   + Lab("", "", log, proc).log_tail())
            time.sleep(0.2)
        yield lab
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- what runs in the page ----------------------------------------------------------------------

# A markdown cell is shown rendered when its rendered view is there and its source editor is hidden
# (JupyterLab's jp-mod-rendered class is no guide: in the default windowing mode it is not set).
_JS_MD_RENDERED = r"""(cell) => {
    const editor = cell.querySelector('.jp-InputArea .jp-InputArea-editor');
    const view = cell.querySelector('.jp-InputArea .myst, .jp-InputArea .jp-MarkdownOutput, .jp-InputArea .jp-RenderedMarkdown');
    return !!view && !view.classList.contains('lm-mod-hidden') && (!editor || editor.classList.contains('lm-mod-hidden'));
  }"""

# Everything the check reads from the notebook once Run All is over, cell by cell (index from 1).
JS_CELLS = r"""
() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  if (!panel) return null;
  const SKIP = '.katex, mjx-container, .MathJax, .MathJax_Display, script, style, annotation, svg, .jp-InputArea-editor';
  const ROLE = /\{[a-z][\w.:-]*\}/g;
  const SPECIFIC = [[':pyobject:', /:pyobject:/], ['{literalinclude}', /\{literalinclude\}/], ['{cite', /\{cite[\w:-]*\}?/]];
  const clip = (s, n) => { s = s.replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '...' : s; };
  function rawMyst(root, where) {
    // raw MyST in the text a reader sees: code (inline or block) and typeset math are not searched,
    // but a fenced directive that was not parsed comes out as a code block of language "{name}"
    const found = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!el || el.closest(SKIP) || el.closest('code, pre, kbd, samp')) continue;
      const text = node.textContent;
      let hit = null;
      for (const [name, re] of SPECIFIC) { const m = re.exec(text); if (m) { hit = m[0]; break; } }
      if (!hit) {
        for (const m of text.matchAll(ROLE)) {
          const after = text.slice(m.index + m[0].length);
          const next = node.nextSibling;
          // {role}`content` left raw: a backtick after it, or (once markdown made it inline code) a <code>
          if (after.startsWith('`') || (!after.trim() && next && next.nodeName === 'CODE')) { hit = m[0]; break; }
        }
      }
      if (hit) {
        const next = node.nextSibling && node.nextSibling.nodeName === 'CODE' ? '`' + node.nextSibling.textContent + '`' : '';
        found.push({what: hit, where, context: clip(text + next, 120)});
      }
    }
    for (const code of root.querySelectorAll('code[class*="language-{"], pre[class*="language-{"]')) {
      const lang = [...code.classList].find(c => c.startsWith('language-{')).slice('language-'.length);
      found.push({what: '```' + lang, where, context: clip(lang + ' ' + code.textContent, 120)});
    }
    return found;
  }
  function mystFlags(root) {
    // jupyterlab-myst marks what it could not resolve with a warning sign and a title
    const citations = [], flags = [];
    for (const el of root.querySelectorAll('[title]')) {
      if (!el.querySelector(':scope > svg') || !/yellow|orange|red/.test(el.className)) continue;
      const title = el.getAttribute('title'), text = clip(el.textContent, 80);
      if (title === 'Citation Not Found') citations.push(text);
      else flags.push({title: clip(title, 120), text});
    }
    for (const el of root.querySelectorAll('summary, .myst-exercise-title')) {
      const t = el.textContent;
      if (/Unknown (Directive|Role)/.test(t)) flags.push({title: clip(t, 80), text: ''});
    }
    return {citations, flags: [...new Map(flags.map(f => [f.title + f.text, f])).values()]};
  }
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')];
  return {
    myst: !!panel.querySelector('.jp-MarkdownCell .myst'),
    cells: cells.map((cell, i) => {
      const kind = cell.classList.contains('jp-MarkdownCell') ? 'markdown'
                 : cell.classList.contains('jp-CodeCell') ? 'code' : 'raw';
      const r = {index: i + 1, kind, rendered: null, renderedChars: 0, prompt: '', stderr: [],
                 raw: [], citations: [], flags: []};
      if (kind === 'markdown') {
        r.rendered = (MD_RENDERED)(cell);
        const view = cell.querySelector('.jp-InputArea .myst, .jp-InputArea .jp-MarkdownOutput, .jp-InputArea .jp-RenderedMarkdown');
        if (view && r.rendered) {
          r.renderedChars = view.textContent.trim().length + view.querySelectorAll('img, .katex, mjx-container, table').length;
          r.raw.push(...rawMyst(view, 'markdown'));
          const f = mystFlags(view); r.citations.push(...f.citations); r.flags.push(...f.flags);
        }
      } else if (kind === 'code') {
        const prompt = cell.querySelector('.jp-InputArea .jp-InputPrompt');
        r.prompt = prompt ? prompt.textContent.trim() : '';
        for (const out of cell.querySelectorAll('.jp-OutputArea-output')) {
          const mime = out.getAttribute('data-mime-type') || '';
          if (mime === 'application/vnd.jupyter.stderr') { r.stderr.push(out.textContent); continue; }
          if (mime.startsWith('text/markdown') || mime === 'text/html') {
            r.raw.push(...rawMyst(out, 'output'));
            const f = mystFlags(out); r.citations.push(...f.citations); r.flags.push(...f.flags);
          }
        }
      }
      return r;
    }),
  };
}
"""

JS_CELLS = JS_CELLS.replace("MD_RENDERED", _JS_MD_RENDERED)

JS_RUNNING = r"""
() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  if (!panel) return -1;
  return [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea .jp-InputPrompt')]
    .filter(p => p.textContent.includes('*')).length;
}
"""

JS_ALL_RENDERED = r"""
() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  return !!panel && [...panel.querySelectorAll('.jp-Notebook .jp-MarkdownCell')].every(MD_RENDERED);
}
"""

JS_ALL_RENDERED = JS_ALL_RENDERED.replace("MD_RENDERED", _JS_MD_RENDERED)

JS_DIALOGS = r"""
() => [...document.querySelectorAll('.jp-Dialog')].map(d => {
  const t = d.querySelector('.jp-Dialog-header'), b = d.querySelector('.jp-Dialog-body');
  return ((t ? t.textContent : '') + ': ' + (b ? b.textContent : '')).replace(/\s+/g, ' ').trim().slice(0, 200);
})
"""

JS_NOTEBOOK_HEIGHT = r"""
() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  const scroller = panel && (panel.querySelector('.jp-WindowedPanel-outer') || panel.querySelector('.jp-Notebook'));
  if (!scroller) return null;
  scroller.scrollTop = 0;                    // Run All leaves it at the last cell
  return {scroll: scroller.scrollHeight, client: scroller.clientHeight};
}
"""


# --- the check ----------------------------------------------------------------------------------

@dataclass
class ChapterReport:
    chapter: Chapter
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem_cells: list[int] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""
    phases: dict = field(default_factory=dict)     # seconds spent loading, opening, running, ...


def _stopwatch(phases: dict):
    """mark(name): the seconds since the previous mark go to phases[name]."""
    last = [time.monotonic()]

    def mark(name: str) -> None:
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + now - last[0]
        last[0] = now
    return mark


def _cell_label(index: int, cells: list[dict]) -> str:
    """'cell 5 (code: `1/0`)': the 1-based index and the first non-blank line of its source."""
    if 0 < index <= len(cells):
        cell = cells[index - 1]
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        first = next((ln.strip() for ln in src.splitlines() if ln.strip()), "")
        first = first if len(first) <= 60 else first[:57] + "..."
        return f"cell {index} ({cell.get('cell_type', '?')}: `{first}`)"
    return f"cell {index}"


def _error_summary(text: str) -> str:
    """The last line of a traceback as rendered ('ZeroDivisionError: division by zero')."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= set("-")]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b", ln):
            return ln[:200]
    return (lines[-1] if lines else "(empty)")[:200]


def _is_traceback(text: str) -> bool:
    return "Traceback" in text or bool(re.search(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*$", text, re.M)
                                        and "----" in text)


def _directives(source: str) -> list[tuple[int, str, str]]:
    """(line, name, argument) of each fenced directive (```{name} arg or :::{name} arg) of a markdown cell."""
    out = []
    for i, line in enumerate(source.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|:{3,})\{([\w:.-]+)\}\s*(.*)$", line)
        if m:
            out.append((i, m.group(2), m.group(3).strip()))
    return out


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
        return f"[{output.get('name')}] " + ("".join(text) if isinstance(text, list) else text)
    if output.get("output_type") == "error":
        return f"[error] {output.get('ename')}: {output.get('evalue')}"
    data = output.get("data", {})
    for mime in ("text/plain", "text/markdown", "text/html"):
        if mime in data:
            text = data[mime]
            return f"[{mime}] " + ("".join(text) if isinstance(text, list) else text)
    return f"[{', '.join(sorted(data))}] (binary)"


def _first_difference(old: list[str], new: list[str]) -> str:
    for line in difflib.unified_diff(old, new, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        return line[:160]
    return ""


def notebook_changes(old: dict, new: dict, limit: int = 8) -> list[str]:
    """What differs between two notebooks (as JSON), cell by cell, in a few readable lines."""
    changes = []
    old_meta, new_meta = old.get("metadata", {}), new.get("metadata", {})
    for key in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(key) != new_meta.get(key):
            changes.append(f"notebook metadata {key!r}: {json.dumps(old_meta.get(key))[:70]} -> "
                           f"{json.dumps(new_meta.get(key))[:70]}")
    old_cells, new_cells = old.get("cells", []), new.get("cells", [])

    def source(cell: dict) -> str:
        src = cell.get("source", "")
        return "".join(src) if isinstance(src, list) else src

    def span(lo: int, hi: int) -> str:
        return f"cell {lo + 1}" if hi - lo == 1 else f"cells {lo + 1}-{hi}"

    # cells paired by their source, so that cells added or removed do not shift every later one
    matcher = difflib.SequenceMatcher(a=[source(c) for c in old_cells], b=[source(c) for c in new_cells],
                                      autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("delete", "insert") or (tag == "replace" and i2 - i1 != j2 - j1):
            if i2 > i1:
                changes.append(f"{span(i1, i2)} of the file before are gone")
            if j2 > j1:
                changes.append(f"{span(j1, j2)} are new (" + _cell_label(j1 + 1, new_cells) + (", ..." if j2 - j1 > 1 else "") + ")")
            continue
        for i, j in zip(range(i1, i2), range(j1, j2)):
            a, b = old_cells[i], new_cells[j]
            label = _cell_label(j + 1, new_cells)
            if source(a) != source(b):
                changes.append(f"{label}: source changed")
            for key in sorted(set(a.get("metadata", {})) | set(b.get("metadata", {}))):
                if a.get("metadata", {}).get(key) != b.get("metadata", {}).get(key):
                    changes.append(f"{label}: metadata {key!r} "
                                   + ("added" if key not in a.get("metadata", {}) else
                                      "removed" if key not in b.get("metadata", {}) else "changed"))
            if a.get("execution_count") != b.get("execution_count"):
                changes.append(f"{label}: execution count {a.get('execution_count')} -> {b.get('execution_count')}")
            if a.get("outputs") != b.get("outputs"):
                old_text = "\n".join(_output_text(o) for o in a.get("outputs", [])).splitlines()
                new_text = "\n".join(_output_text(o) for o in b.get("outputs", [])).splitlines()
                first = _first_difference(old_text, new_text) or "(the same text; other data or metadata)"
                changes.append(f"{label}: output changed, first difference: {first}")
    if len(changes) > limit:
        changes = changes[:limit] + [f"... and {len(changes) - limit} more differences"]
    return changes


def saved_changes(copy_root: Path, chapters: list[Chapter]) -> dict[str, list[str]]:
    """`git status --porcelain` of the copy after the saves, each changed file explained, by chapter."""
    status = _git(copy_root, "status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    by_chapter: dict[str, list[str]] = {}
    owners = {}
    for ch in chapters:
        stem = ch.lab_path[:-len(".md")]
        for suffix in (".md", ".ipynb"):
            owners[stem + suffix] = ch.shown
    for line in status:
        rel = line[3:].strip().strip('"')
        owner = owners.get(rel, chapters[-1].shown)
        lines = [f"saving changed {rel} (git status: {line[:2].strip()})"]
        path = copy_root / rel
        before = _git(copy_root, "show", f"HEAD:{rel}", check=False).stdout
        if rel.endswith(".ipynb") and path.exists():
            try:
                details = notebook_changes(json.loads(before), json.loads(path.read_text()))
            except ValueError as exc:
                details = [f"(not JSON: {exc})"]
        elif path.exists():
            diff = [d for d in difflib.unified_diff(before.splitlines(), path.read_text().splitlines(),
                                                    lineterm="", n=0)
                    if not d.startswith(("---", "+++", "@@"))]
            details = [d[:160] for d in diff[:8]] + ([f"... and {len(diff) - 8} more lines"] if len(diff) > 8 else [])
        else:
            details = ["(the file was deleted)"]
        by_chapter.setdefault(owner, []).append("\n      ".join(lines + details))
    return by_chapter


def _visible_widget_kind(page) -> str:
    return page.evaluate("""() => {
      const w = [...document.querySelectorAll('#jp-main-dock-panel .jp-MainAreaWidget, #jp-main-dock-panel .jp-Document')]
        .find(e => !e.classList.contains('lm-mod-hidden') && e.offsetParent !== null && !e.closest('.lm-mod-hidden'));
      if (!w) return 'none';
      if (w.classList.contains('jp-NotebookPanel') || w.querySelector('.jp-Notebook')) return 'notebook';
      if (w.querySelector('.jp-FileEditor')) return 'editor';
      return [...w.classList].join(' ');
    }""")


def _open_by_double_click(page, lab_path: str) -> None:
    """From the root of the file browser, double-click each folder of lab_path, then the file."""
    parts = lab_path.split("/")
    for i, name in enumerate(parts):
        item = page.locator(".jp-DirListing-content .jp-DirListing-item").filter(
            has=page.locator(".jp-DirListing-itemText", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$")))
        item.first.wait_for(timeout=UI_TIMEOUT_MS)
        item.first.dblclick()
        if i < len(parts) - 1:
            page.locator(".jp-BreadCrumbs").filter(has_text=name).first.wait_for(timeout=UI_TIMEOUT_MS)


def _kernel_state(lab: Lab, lab_path: str) -> str | None:
    status, sessions = lab.api("GET", "api/sessions")
    if status != 200 or not isinstance(sessions, list):
        return None
    for s in sessions:
        if s.get("path") == lab_path and s.get("kernel"):
            return s["kernel"].get("execution_state")
    return None


def _shut_down(lab: Lab, lab_path: str) -> None:
    status, sessions = lab.api("GET", "api/sessions")
    for s in sessions if status == 200 and isinstance(sessions, list) else []:
        if s.get("path") == lab_path:
            lab.api("DELETE", f"api/sessions/{s['id']}")


def _screenshot_cell(page, index: int, path: Path) -> None:
    with contextlib.suppress(Exception):
        cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index - 1)
        cell.scroll_into_view_if_needed(timeout=5_000)
        cell.screenshot(path=str(path), timeout=15_000)


def _screenshot_notebook(page, path: Path, viewport: dict) -> None:
    """The whole notebook: the window made as tall as the notebook (up to 16,000 px), then restored."""
    with contextlib.suppress(Exception):
        size = page.evaluate(JS_NOTEBOOK_HEIGHT)
        if size and size["scroll"] > size["client"]:
            extra = size["scroll"] - size["client"]
            page.set_viewport_size({"width": viewport["width"],
                                    "height": min(viewport["height"] + extra + 40, MAX_SCREENSHOT_PX)})
            page.wait_for_timeout(800)
            page.evaluate(JS_NOTEBOOK_HEIGHT)  # to the top again, now that it is all in view
            page.wait_for_timeout(300)
        page.screenshot(path=str(path))
        page.set_viewport_size(viewport)


def check_chapter(browser, lab: Lab, ch: Chapter, shots: Path, viewport: dict, run_timeout: float) -> ChapterReport:
    report = ChapterReport(ch)
    stem = Path(ch.lab_path).stem
    t0 = time.monotonic()
    status, model = lab.api("GET", "api/contents/" + urllib.parse.quote(ch.lab_path) + "?type=notebook&content=1")
    cells = model.get("content", {}).get("cells", []) if status == 200 and isinstance(model, dict) else []
    if not cells:
        report.problems.append(f"the server does not serve {ch.lab_path} as a notebook (HTTP {status}): "
                               "is jupytext's server extension enabled?")
        return report
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page_errors: list[str] = []
    console_errors: list[str] = []

    def on_pageerror(err):
        frame = next((ln.strip() for ln in (err.stack or "").splitlines()[1:2]), "").replace(lab.url, "")
        page_errors.append(f"{err.name or 'Error'}: {err.message}"[:200] + (f" ({frame[:160]})" if frame else ""))

    page.on("pageerror", on_pageerror)
    page.on("console", lambda msg: console_errors.append(msg.text.strip().splitlines()[0][:200])
            if msg.type == "error" and msg.text.strip() else None)
    try:
        mark = _stopwatch(report.phases)
        page.goto(f"{lab.url}lab?reset&token={lab.token}", timeout=UI_TIMEOUT_MS)
        page.locator(".jp-DirListing-content .jp-DirListing-item").first.wait_for(timeout=UI_TIMEOUT_MS)
        mark("load")

        # 1. a double-click in the file browser must open the .md as a notebook
        _open_by_double_click(page, ch.lab_path)
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").filter(has_text=Path(ch.lab_path).name)
        tab.first.wait_for(timeout=UI_TIMEOUT_MS)
        deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
        kind = _visible_widget_kind(page)
        while kind not in ("notebook", "editor") and time.monotonic() < deadline:
            page.wait_for_timeout(250)
            kind = _visible_widget_kind(page)
        if kind != "notebook":
            what = "in the text editor" if kind == "editor" else f"as {kind!r}"
            report.problems.append(f"a double-click opened {Path(ch.lab_path).name} {what}, not as a notebook: "
                                   "is .jupyterlab/overrides.json installed (`make venv`) and jupytext's "
                                   "server extension enabled?")
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shots / f"{stem}-opened.png"))
            return report
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").first.wait_for(timeout=UI_TIMEOUT_MS)

        mark("open")

        # 2. Run > Run All Cells, once the kernel is up; then until no cell is queued and the kernel is idle
        deadline = time.monotonic() + KERNEL_TIMEOUT_S
        while _kernel_state(lab, ch.lab_path) != "idle":
            if time.monotonic() > deadline:
                report.problems.append(f"the kernel did not start within {KERNEL_TIMEOUT_S} s "
                                       f"(state {_kernel_state(lab, ch.lab_path)!r})")
                return report
            page.wait_for_timeout(250)
        mark("kernel")
        code_cells = sum(1 for c in cells if c.get("cell_type") == "code")
        t_run = time.monotonic()
        page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile(r"^Run$")).first.click()
        page.locator(".lm-Menu-itemLabel").filter(has_text=re.compile(r"^Run All Cells$")).first.click()
        if code_cells:
            with contextlib.suppress(Exception):   # a fast notebook may be done before we look
                page.wait_for_function(f"() => ({JS_RUNNING.strip()})() > 0", timeout=5_000)
        quiet = 0
        while True:
            running = page.evaluate(JS_RUNNING)
            state = _kernel_state(lab, ch.lab_path)
            if state == "dead":
                report.problems.append("the kernel died during Run All")
                break
            quiet = quiet + 1 if running == 0 and state == "idle" else 0
            if quiet >= 3:
                break
            if time.monotonic() - t_run > run_timeout:
                report.problems.append(f"Run All did not finish within {run_timeout:.0f} s "
                                       f"({running} cells still queued or running)")
                break
            page.wait_for_timeout(400)
        run_seconds = time.monotonic() - t_run
        # the last outputs settle; jupyterlab-myst renders the markdown cells that Run All ran
        # asynchronously, so wait (a while) for every one of them to be rendered
        page.wait_for_timeout(500)
        with contextlib.suppress(Exception):
            page.wait_for_function(JS_ALL_RENDERED, timeout=RENDER_TIMEOUT_MS)

        mark("run")
        # 3. what the reader sees
        dom = page.evaluate(JS_CELLS)
        seen = dom["cells"] if dom else []
        if dom and len(seen) != len(cells):
            report.notes.append(f"the notebook shows {len(seen)} cells, the file has {len(cells)}")
        citations: list[str] = []
        not_run: list[int] = []
        first_error = None
        for c in seen:
            label = _cell_label(c["index"], cells)
            bad = False
            if c["kind"] == "markdown":
                source = "".join(cells[c["index"] - 1].get("source", "")) if c["index"] <= len(cells) else ""
                if not c["rendered"]:
                    report.problems.append(f"{label}: the markdown cell is not rendered (it shows its source)")
                    bad = True
                elif c["renderedChars"] == 0 and source.strip():
                    report.problems.append(f"{label}: the markdown cell renders empty")
                    bad = True
                for line, name, arg in _directives(source):
                    if name in DROPPED_DIRECTIVES and dom["myst"]:
                        report.problems.append(f"{label}: the {{{name}}} directive on line {line} ({arg}) is "
                                               f"not shown in JupyterLab: {DROPPED_DIRECTIVES[name]}")
                        bad = True
            if c["kind"] == "code":
                if code_cells and re.fullmatch(r"\[\s*\]:?", c["prompt"] or "[ ]:"):
                    not_run.append(c["index"])
                for text in c["stderr"]:
                    if _is_traceback(text):
                        first_error = first_error or c["index"]
                        report.problems.append(f"{label} raised {_error_summary(text)}")
                    else:
                        first_line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
                        report.problems.append(f"{label} wrote to stderr: {first_line[:160]}")
                    bad = True
            for raw in c["raw"]:
                report.problems.append(f"{label}: raw MyST {raw['what']!r} in the rendered {raw['where']}: "
                                       f"\"{raw['context']}\"")
                bad = True
            for flag in c["flags"]:
                report.problems.append(f"{label}: the MyST renderer reports {flag['title']!r}"
                                       + (f" at \"{flag['text']}\"" if flag["text"] else ""))
                bad = True
            citations += c["citations"]
            if bad:
                report.problem_cells.append(c["index"])
        if not_run:
            why = f"after the error in cell {first_error}" if first_error else "without an error shown"
            report.problems.append(f"Run All stopped {why}: {len(not_run)} code cell(s) did not run "
                                   f"(cells {', '.join(map(str, not_run[:10]))}{', ...' if len(not_run) > 10 else ''})")
        for text in page.evaluate(JS_DIALOGS):
            report.problems.append(f"a dialog is open after Run All: {text}")
            page.keyboard.press("Escape")

        mark("inspect")
        # 4. Ctrl+S: jupytext writes the .md and the .ipynb (run() then reads what changed from git)
        with contextlib.suppress(Exception):
            page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.focus()
        quoted = "/api/contents/" + urllib.parse.quote(ch.lab_path)
        try:
            with page.expect_response(lambda r: r.request.method == "PUT" and quoted in r.url,
                                      timeout=SAVE_TIMEOUT_MS) as saved:
                page.keyboard.press("Control+s")
            if saved.value.status >= 400:
                report.problems.append(f"saving failed: HTTP {saved.value.status} {saved.value.text()[:200]}")
        except Exception as exc:
            report.problems.append(f"Ctrl+S did not save {ch.lab_path} within {SAVE_TIMEOUT_MS // 1000} s "
                                   f"({type(exc).__name__})")
        page.wait_for_timeout(500)
        for text in page.evaluate(JS_DIALOGS):
            report.problems.append(f"a dialog is open after saving: {text}")
            page.keyboard.press("Escape")
        for err in page_errors:
            known = next((why for where, why in KNOWN_JS_ERRORS.items() if where in err), None)
            if known:
                report.notes.append(f"JavaScript error, known and harmless ({known}): {err}")
            else:
                report.problems.append(f"JavaScript error: {err}")
        if console_errors:
            report.notes.append(f"{len(console_errors)} console error(s), e.g. {console_errors[0]}")

        mark("save")
        # 5. screenshots: the whole notebook, and each cell with a problem
        _screenshot_notebook(page, shots / f"{stem}.png", viewport)
        for index in report.problem_cells[:MAX_CELL_SHOTS]:
            _screenshot_cell(page, index, shots / f"{stem}-cell{index}.png")
        mark("screenshots")
        n_md = sum(1 for c in cells if c.get("cell_type") == "markdown")
        report.summary = (f"{len(cells)} cells ({code_cells} code, {n_md} markdown), Run All {run_seconds:.1f} s"
                          + (f"; {len(citations)} citation{'s' if len(citations) != 1 else ''} shown as "
                             f"{'their keys' if len(citations) != 1 else 'its key'}" if citations else "")
                          + ("" if dom and dom["myst"] else "; markdown rendered without jupyterlab-myst"))
        return report
    except Exception as exc:                    # playwright's TimeoutError and the like
        report.problems.append(f"the check could not finish: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}")
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shots / f"{stem}-stuck.png"))
        return report
    finally:
        report.seconds = time.monotonic() - t0
        with contextlib.suppress(Exception):
            _shut_down(lab, ch.lab_path)
        context.close()


def run(chapters: list[Path], shots: Path, chromium: str, viewport: dict, run_timeout: float) -> int:
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="check_lab-") as tmp:
        tmp = Path(tmp)
        copy_root = tmp / "lab"
        copy_root.mkdir()
        chs = make_copy(chapters, copy_root)
        reports = []
        try:
            with jupyter_lab(copy_root, tmp / "jupyter") as lab, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True)
                print(f"check_lab: {len(chs)} chapter(s) in JupyterLab {_version('jupyterlab')} "
                      f"(jupytext {_version('jupytext')}, jupyterlab-myst {_version('jupyterlab-myst')}), "
                      f"{Path(chromium).name} {browser.version} at {viewport['width']}x{viewport['height']}; "
                      f"server up after {time.monotonic() - t0:.1f} s", flush=True)
                for ch in chs:
                    r = check_chapter(browser, lab, ch, shots, viewport, run_timeout)
                    # what saving changed: the copy's `git status`, then a new baseline for the next one
                    for changes in saved_changes(copy_root, [ch]).values():
                        r.problems.extend(changes)
                    _git(copy_root, "add", "-A")
                    _git(copy_root, "commit", "-q", "--allow-empty", "-m", f"after {ch.lab_path}")
                    reports.append(r)
                    phases = ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items())
                    print(f"  {'ok  ' if not r.problems else 'FAIL'} {ch.shown} ({r.seconds:.1f} s"
                          + (f": {phases}" if phases else "") + ")", flush=True)
                browser.close()
        except RuntimeError as exc:
            print(f"check_lab: {exc}", file=sys.stderr)
            return 2

    print()
    for r in reports:
        status = "ok  " if not r.problems else "FAIL"
        detail = "; ".join(x for x in ((f"{len(r.problems)} problem{'s' if len(r.problems) != 1 else ''}"
                                        if r.problems else ""), r.summary) if x)
        print(f"{status} {r.chapter.shown:<28} {r.seconds:6.1f} s  {detail}")
    failed = [r for r in reports if r.problems]
    for r in reports:
        if not r.problems and not r.notes:
            continue
        print(f"\n{r.chapter.shown}:")
        for problem in r.problems:
            print(f"  - {problem}")
        for note in r.notes:
            print(f"  (note: {note})")
    total = sum(len(r.problems) for r in failed)
    print(f"\ncheck_lab: {len(reports)} chapter(s) in {time.monotonic() - t0:.1f} s, "
          + (f"{total} problem{'s' if total != 1 else ''} in {len(failed)} chapter(s)" if failed else "no problem")
          + f"; screenshots in {shots}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", metavar="CHAPTER.md",
                        help="chapters to check (default: every paired chapter of book/)")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="where the PNGs go (default: _build/lab-screenshots/ of the repository)")
    parser.add_argument("--chromium", metavar="PATH", help="Chromium executable (default: $CHROMIUM, "
                        "then /usr/lib/chromium/chromium, chromium, ... on PATH)")
    parser.add_argument("--viewport", default="1280x900", help="WIDTHxHEIGHT (default: 1280x900)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_RUN_TIMEOUT_S, metavar="S",
                        help=f"seconds Run All may take per chapter (default: {DEFAULT_RUN_TIMEOUT_S})")
    args = parser.parse_args(argv)

    chapters = [Path(c) for c in args.chapters] or paired_chapters()
    missing = [str(c) for c in chapters if not c.is_file() or c.suffix != ".md"]
    if missing or not chapters:
        print(f"check_lab: not a chapter's .md: {', '.join(missing) or '(none given, none in book/)'}",
              file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_lab: no Chromium executable found: install Debian's (`apt-get install chromium`) "
              "or pass --chromium PATH / set $CHROMIUM", file=sys.stderr)
        return 2
    for module, fix in (("playwright", "pip install -e '.[browser]' (make venv-browser)"),
                        ("jupyterlab", "run it with the book's environment: .venv/bin/python"),
                        ("jupytext", "run it with the book's environment: .venv/bin/python")):
        if importlib.util.find_spec(module) is None:
            print(f"check_lab: the {module} package is missing: {fix}", file=sys.stderr)
            return 2
    if shutil.which("git") is None:
        print("check_lab: git is needed (the copy's `git status` tells what saving changed)", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.viewport.lower().split("x"))
    shots = Path(args.screenshots) if args.screenshots else ROOT / "_build" / "lab-screenshots"
    return run(chapters, shots.resolve(), chromium, {"width": width, "height": height}, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
