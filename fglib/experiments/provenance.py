"""Where a result came from: the code that computed it (the CPU and precision: fglib.core.hardware).

- `code_fingerprint(method)`: a hash of the fglib source that can change a training result of that
  method: the engine, the backbones, the data pipeline and the method's own model module, with every
  fglib module they import, and the method's builder in the model registry. Comments, docstrings and
  blank lines do not count, so a reworded comment keeps the recorded runs valid while any changed
  line of code makes them stale. Not covered: code that only chooses the precision (recorded with
  each run) and the torch/CPU below fglib (recorded as the CPU kind).
- A run that starts from saved weights (a pre-trained small_resnet) adds the hash of those bytes;
  which file that is, the caller resolves (fglib.experiments.runner.run_fingerprint).
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import textwrap
import time
import tokenize
from functools import lru_cache
from pathlib import Path

from fglib.data.registry import GENERATED
from fglib.models import MODELS, model_module, options_of

IMPORTED_AT = time.time()      # a source file changed after this cannot be the code this process runs

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The modules every training run goes through. A method adds the module that defines its model.
ENGINE_MODULES = ("fglib.engine.train", "fglib.models.backbones", "fglib.data.memory", "fglib.data.cub",
                  "fglib.data.synth", "fglib.data.files")
# fglib modules that cannot change a result, so the import walk stops there: the model registry (it
# only maps names to classes; each method's module is added on its own, so that a new method does not
# make every recorded run stale), provenance and progress bars, paths, configs (a run's config is part
# of its key anyway), the hardware module (it only chooses the precision, recorded with each run),
# the packages' __init__ files and the download code of real datasets.
NOT_RESULT_CHANGING = frozenset({"fglib", "fglib.models", "fglib.experiments.provenance",
                                 "fglib.core", "fglib.core.runtime", "fglib.core.paths",
                                 "fglib.core.config", "fglib.core.hardware", "fglib.engine",
                                 "fglib.data", "fglib.data.download", "fglib.data.registry"})


def module_path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    path = PACKAGE_DIR / rel
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def normalised_source(text: str) -> str:
    """The source without comments, docstrings, blank lines and trailing spaces.

    Built from tokenize's comment positions and ast's line numbers, which are the same on every
    Python version, so the fingerprint is too.
    """
    lines = [line.rstrip("\r\n") for line in io.StringIO(text).readlines()]   # tokenize's lines
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                for row in range(body[0].lineno, body[0].end_lineno + 1):
                    lines[row - 1] = ""
    return "\n".join(line.rstrip() for line in lines if line.strip())


def file_state(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def fglib_imports(module: str) -> set[str]:
    """The fglib modules that `module` imports, at module level or inside functions."""
    return _imports(module, file_state(module_path(module)))


@lru_cache(maxsize=None)
def _imports(module: str, state: tuple[int, int]) -> frozenset[str]:
    tree = ast.parse(module_path(module).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fglib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fglib":
            found.add(node.module)
            for a in node.names:                       # `from fglib.data import synth` imports a module
                sub = f"{node.module}.{a.name}"
                if module_path(sub).exists():
                    found.add(sub)
    return frozenset(m for m in found if module_path(m).exists())


def _method_and_extras(run) -> tuple[str, list[str]]:
    """(method, extra modules) of a method name or a RunConfig: a config on a generated dataset other
    than the benchmark adds that dataset's module (fglib.data.registry.GENERATED)."""
    if isinstance(run, str):
        return run, []
    name = run.data.name
    return run.model.method, [GENERATED[name].split(":")[0]] if name in GENERATED else []


def result_modules(run) -> list[str]:
    """The fglib modules whose code can change a run (a method name or a RunConfig), in a stable order."""
    method, extras = _method_and_extras(run)
    todo, seen = [*ENGINE_MODULES, model_module(method), *extras], set()
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_RESULT_CHANGING:
            continue
        seen.add(m)
        todo.extend(fglib_imports(m))
    return sorted(seen)


@lru_cache(maxsize=None)
def _module_hash(module: str, state: tuple[int, int]) -> str:
    text = module_path(module).read_text(encoding="utf-8")
    return hashlib.sha256(normalised_source(text).encode()).hexdigest()[:12]


def module_hash(module: str) -> str:
    """Hash of a module's normalised source (comments, docstrings and blank lines do not count)."""
    return _module_hash(module, file_state(module_path(module)))


def builder_hash(method: str) -> str:
    """Hash of the registry's builder of `method` (how a config's fields reach the model's constructor)."""
    text = "\n".join(inspect.getsource(f) for f in (MODELS[method], options_of))
    return hashlib.sha256(normalised_source(textwrap.dedent(text)).encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def _file_hash(path: Path, state: tuple[int, int]) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def starts_from_weights(run) -> bool:
    """Whether a RunConfig's small_resnet starts from saved weights (model.pretrained or
    model.weights_path); their bytes are then part of its fingerprint (a torchvision backbone's are
    not: they are ImageNet's, named by torchvision)."""
    return not isinstance(run, str) and run.model.backbone == "small_resnet" and bool(
        run.model.pretrained or run.model.weights_path)


def module_hashes(run, initial_weights: Path | None = None) -> dict[str, str]:
    """{module: hash of its normalised source} for `result_modules(run)`, plus the method's builder,
    plus (for a RunConfig that `starts_from_weights`) the hash of those weights: the file
    model.weights_path names, else `initial_weights` (None: not there yet, hashed as "missing")."""
    method, _ = _method_and_extras(run)
    hashes = {m: _module_hash(m, file_state(module_path(m))) for m in result_modules(run)}
    hashes[f"fglib.models:{method}"] = builder_hash(method)
    if starts_from_weights(run):
        path = Path(run.model.weights_path) if run.model.weights_path else initial_weights
        exists = path is not None and path.exists()
        hashes["initial weights"] = _file_hash(path, file_state(path)) if exists else "missing"
    return hashes


def edited_since_import(run) -> list[str]:
    """The result modules of a run whose file changed after this process imported fglib."""
    return [m for m in result_modules(run) if module_path(m).stat().st_mtime > IMPORTED_AT]


def code_fingerprint(run, initial_weights: Path | None = None) -> str:
    """One hash over `module_hashes(run, initial_weights)` (a method name or a RunConfig): runs
    recorded under another fingerprint are stale."""
    blob = json.dumps(module_hashes(run, initial_weights), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
