"""Readers open a chapter's .md in JupyterLab: jupytext must serve it as the notebook paired with the .ipynb.

A real `jupyter lab` server is started on 127.0.0.1 (free port, random token, root = the repository),
with private config, data and runtime directories so that the user's ~/.jupyter cannot change the
outcome; the server extensions enabled in the environment (`<sys.prefix>/etc/jupyter`, where
jupytext's `jupyterlab_jupytext` is enabled) still load. Each chapter's `book/<chapter>.md` is then
fetched through the contents API as a notebook, as JupyterLab does when it opens the file.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None,
                                reason="jupyterlab is not installed")

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "jupytext:" in p.read_text()[:400])
PAIRING = "ipynb,md:myst"              # book/jupytext.toml
START_TIMEOUT_S = 90                   # the server answers in 4-9 s on 2 busy cores; 90 s leaves room for a slow CI machine
STOP_TIMEOUT_S = 10


@dataclass
class Server:
    url: str                           # ends with "/"
    token: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)

    def get(self, path: str) -> tuple[int, dict]:
        """GET url + path with the token; (HTTP status, JSON body or {"message": raw text})."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"message": raw.decode(errors="replace")[:2000]}


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def jupyter_lab(tmp: Path):
    """Run `jupyter lab` (this interpreter's) on the repository until the block exits; yields a Server.

    JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR and JUPYTER_RUNTIME_DIR point into `tmp` and every other
    JUPYTER* variable is dropped: the user's config cannot leak in, and the environment's own config
    (sys.prefix/etc/jupyter, which enables jupytext's server extension) still applies.
    """
    dirs = {name: tmp / name for name in ("config", "data", "runtime")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]))
    token = secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={_free_port()}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           "--ServerApp.allow_root=True"]          # CI containers often run as root
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        # The server writes jpserver-<pid>.json (with its URL; it may have moved to another port if
        # ours was taken meanwhile) once it listens; then /api/status must answer.
        info_file = dirs["runtime"] / f"jpserver-{proc.pid}.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        server, last = None, "no server info file yet"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {proc.returncode} before answering "
                            f"/api/status.\ncommand: {' '.join(cmd[:3])} ...\nserver log (tail):\n{_tail(log, 40)}")
            if server is None and info_file.exists():
                with contextlib.suppress(ValueError, KeyError):   # the file may be half-written
                    server = Server(json.loads(info_file.read_text())["url"], token, log)
            if server is not None:
                try:
                    status, body = server.get("api/status")
                    if status == 200:
                        break
                    last = f"/api/status answered HTTP {status}: {body}"
                except OSError as e:
                    last = f"/api/status: {e}"
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer /api/status within {START_TIMEOUT_S} s "
                            f"({last}).\nserver log (tail):\n{_tail(log, 40)}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with jupyter_lab(tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


def md_as_notebook_problems(server: Server, md: Path) -> list[str]:
    """What is wrong with JupyterLab's view of book/<chapter>.md (empty: it is the paired notebook)."""
    path = md.relative_to(ROOT).as_posix()
    status, model = server.get(f"api/contents/{path}?type=notebook&content=1")
    if status != 200:
        return [f"GET /api/contents/{path}?type=notebook answered HTTP {status}: "
                f"{model.get('message') or model}"]
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return [f"{path} came back as type {model.get('type')!r}, not as a notebook"]
    got = nbformat.from_dict(model["content"])
    want = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    problems = []
    if not got.cells:
        problems.append(f"{path} came back as a notebook without cells")
    formats = got.metadata.get("jupytext", {}).get("formats")
    if formats != PAIRING:
        problems.append(f"notebook metadata jupytext.formats is {formats!r}, not {PAIRING!r} (no pairing)")
    got_code = [c for c in got.cells if c.cell_type == "code"]
    want_code = [c for c in want.cells if c.cell_type == "code"]
    if [c.source for c in got_code] != [c.source for c in want_code]:
        problems.append(f"the code cells of {path} as served differ from those of {md.stem}.ipynb")
    elif [c.outputs for c in got_code] != [c.outputs for c in want_code]:
        problems.append(f"the outputs served with {path} are not those of {md.stem}.ipynb")
    if not any(c.outputs for c in got_code):
        problems.append(f"{path} came back without outputs (they should come from {md.stem}.ipynb)")
    return problems


def test_there_are_chapters_to_open():
    assert CHAPTERS, "no paired chapter found in book/"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_md_opens_as_the_paired_notebook(lab, md):
    problems = md_as_notebook_problems(lab, md)
    assert not problems, (f"JupyterLab does not open {md.relative_to(ROOT)} as the notebook paired with "
                          f"{md.stem}.ipynb (is jupytext's server extension jupyterlab_jupytext enabled?):\n"
                          + "\n".join(problems) + f"\nserver log (tail):\n{lab.log_tail()}")



def test_chapters_open_as_notebooks_by_default(lab):
    """`make venv` installs .jupyterlab/overrides.json as JupyterLab's settings override, so a
    double-click on a chapter's .md opens jupytext's notebook view, not the text editor."""
    status, plugin = lab.get("lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert status == 200, plugin
    default = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert default.get("markdown") == "Jupytext Notebook", (
        f"defaultViewers is {default}: run `make venv` (it copies .jupyterlab/overrides.json "
        "into .venv/share/jupyter/lab/settings/)")
