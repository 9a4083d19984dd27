"""fglib is a stack of layers (pyproject.toml's import-linter contracts): imports only go down, no
sibling modules import each other in a circle, imports sit at the top of their files, and no module
reaches for another one's private names."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
# Function-local fglib imports allowed, each deliberately lazy (and saying why on its line). The
# issue allowed five; there are none, so any new one has to argue for raising this.
MAX_LOCAL_IMPORTS = 0


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with this repository's contracts, on the fglib found in package_parent."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
                          cwd=package_parent, env=env, capture_output=True, text=True)


def fglib_imports(path: Path):
    """(line, imported module, names, at module level) of every fglib import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fglib"):
            yield node.lineno, node.module, [a.name for a in node.names], id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fglib"):
                    yield node.lineno, a.name, [], id(node) in top


def test_the_import_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, back_edge", [
    ("models/heads.py", "from fglib.experiments import store"),          # a model reading the store
    ("experiments/store.py", "from fglib.experiments import runner"),    # a cycle inside a layer
])
def test_a_back_edge_breaks_the_contract(tmp_path, module, back_edge):
    shutil.copytree(ROOT / "fglib", tmp_path / "fglib", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "fglib" / module
    path.write_text(path.read_text() + f"\n{back_edge}  # added on purpose\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout, result.stdout


def test_imports_sit_at_the_top_and_reach_no_private_names():
    local, private = [], []
    for path in sorted((ROOT / "fglib").rglob("*.py")):
        lines = path.read_text().splitlines()
        for line, module, names, at_top in fglib_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if not at_top:
                local.append(where)
                assert "#" in lines[line - 1], f"{where}: a function-local import says why on its line"
            private += [f"{where}: {module}.{n}" for n in names if n.startswith("_")]
    assert len(local) <= MAX_LOCAL_IMPORTS, local
    assert not private, private
