"""The project's own files must install what it needs, the same way for pip and conda users."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge spells a few PyPI names differently
CONDA_TO_PYPI = {"pytorch": "torch"}


def split_requirement(req: str) -> tuple[str, str]:
    """'jupyter-book>=1.0.4,<2' -> ('jupyter-book', '>=1.0.4,<2'), names normalised as in PEP 503."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, f"cannot parse requirement {req!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    spec = m.group(2).replace(" ", "")
    if spec.startswith("=") and not spec.startswith("=="):   # conda's single '=' pins a version
        spec = "=" + spec
    return CONDA_TO_PYPI.get(name, name), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(split_requirement(r) for r in project["dependencies"])


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e") or item.split("=")[0].strip() in ("python", "pip"):
                continue
            name, spec = split_requirement(item)
            reqs[name] = spec
    return reqs


def test_environment_yml_and_pyproject_list_the_same_packages():
    pip, conda = pyproject_requirements(), environment_requirements()
    assert sorted(pip) == sorted(conda), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}")
    assert pip == conda, {k: (pip[k], conda[k]) for k in pip if pip[k] != conda[k]}


def test_machine_pins_and_required_packages():
    pip = pyproject_requirements()
    assert pip["torch"] == "==2.14.1" and pip["torchvision"] == "==0.29.1"
    assert pip["jupyter-book"] == ">=1.0.4,<2"
    for name in ["jupyterlab", "jupytext", "nbval", "seaborn", "pandas", "nbconvert", "ipykernel",
                 "tqdm", "sphinxcontrib-bibtex"]:
        assert name in pip, f"{name} is missing from pyproject.toml"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^\s*make test\b", ci, re.M), ".ci/run must call README's test command"


def test_top_level_layout():
    for name in ["book", "fglib", "data", "tests", "environment.yml", "_config.yml", "README.md"]:
        assert (ROOT / name).exists(), f"{name} is missing from the top level"
