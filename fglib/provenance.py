"""Where a result came from: the code that computed it, the CPU it ran on, the precision it used.

- `code_fingerprint(method)`: a hash of the fglib source that can change a training result of that
  method: the engine, the backbones, the data pipeline and the method's own model module, with every
  fglib module they import, and the method's builder in the model registry. Comments, docstrings and
  blank lines do not count, so a reworded comment keeps the recorded runs valid while any changed
  line of code makes them stale. Not covered: code that only chooses the precision (recorded with
  each run) and the torch/CPU below fglib (recorded as the CPU kind).
- `cpu_kind()`: what decides whether training is bit-reproducible: the CPU model, its vector
  instruction sets, the instruction sets torch and oneDNN were allowed to use, and the torch version.
- `resolve_precision(amp, device)`: what `train.amp` means on this machine.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import platform
import time
import textwrap
import tokenize
from functools import lru_cache
from pathlib import Path

IMPORTED_AT = time.time()      # a source file changed after this cannot be the code this process runs

PACKAGE_DIR = Path(__file__).resolve().parent

# The modules every training run goes through. A method adds the module that defines its model.
ENGINE_MODULES = ("fglib.train", "fglib.backbones", "fglib.data.memory", "fglib.data.cub",
                  "fglib.data.synth", "fglib.data.files")
# fglib modules that cannot change a result, so the import walk stops there: the model registry (it
# only maps names to classes; each method's module is added on its own, so that a new method does not
# make every recorded run stale), provenance and progress bars, paths, configs (a run's config is part
# of its key anyway) and the download code of real datasets.
NOT_RESULT_CHANGING = frozenset({"fglib", "fglib.models", "fglib.provenance", "fglib.runtime", "fglib.paths",
                                 "fglib.config", "fglib.data", "fglib.data.download",
                                 "fglib.data.registry"})


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


def _state(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def fglib_imports(module: str) -> set[str]:
    """The fglib modules that `module` imports, at module level or inside functions."""
    return _imports(module, _state(module_path(module)))


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
    from fglib.data.registry import GENERATED

    name = run.data.name
    return run.model.method, [GENERATED[name].split(":")[0]] if name in GENERATED else []


def result_modules(run) -> list[str]:
    """The fglib modules whose code can change a run (a method name or a RunConfig), in a stable order."""
    from fglib.models import model_module

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
    return _module_hash(module, _state(module_path(module)))


def builder_hash(method: str) -> str:
    """Hash of the registry's builder of `method` (how a config's fields reach the model's constructor)."""
    import inspect

    from fglib.models import MODELS, _options

    text = "\n".join(inspect.getsource(f) for f in (MODELS[method], _options))
    return hashlib.sha256(normalised_source(textwrap.dedent(text)).encode()).hexdigest()[:12]


def initial_weights(run) -> Path | None:
    """The file a RunConfig's small_resnet starts from (model.weights_path, or the book's pretraining
    run's weights for model.pretrained), else None. Its bytes are part of the run's fingerprint (a
    torchvision backbone's weights are not: they are ImageNet's, named by torchvision)."""
    if isinstance(run, str) or run.model.backbone != "small_resnet":
        return None
    if run.model.weights_path is not None:
        return Path(run.model.weights_path)
    if not run.model.pretrained:
        return None
    from fglib.pretraining import PretrainedWeightsMissing, pretrained_weights_file

    try:
        return pretrained_weights_file(run.model.widths, run.model.blocks)
    except PretrainedWeightsMissing:
        return None


@lru_cache(maxsize=None)
def _file_hash(path: Path, state: tuple[int, int]) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def module_hashes(run) -> dict[str, str]:
    """{module: hash of its normalised source} for `result_modules(run)`, plus the method's builder,
    plus (for a RunConfig starting from saved weights) the hash of those weights."""
    method, _ = _method_and_extras(run)
    hashes = {m: _module_hash(m, _state(module_path(m))) for m in result_modules(run)}
    hashes[f"fglib.models:{method}"] = builder_hash(method)
    if not isinstance(run, str) and run.model.backbone == "small_resnet" and (
            run.model.pretrained or run.model.weights_path):
        path = initial_weights(run)                  # None: the pretraining run is not there yet
        exists = path is not None and path.exists()
        hashes["initial weights"] = _file_hash(path, _state(path)) if exists else "missing"
    return hashes


def edited_since_import(run) -> list[str]:
    """The result modules of a run whose file changed after this process imported fglib."""
    return [m for m in result_modules(run) if module_path(m).stat().st_mtime > IMPORTED_AT]


def code_fingerprint(run) -> str:
    """One hash over `module_hashes(run)` (a method name or a RunConfig): runs recorded under another
    fingerprint are stale."""
    blob = json.dumps(module_hashes(run), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- the CPU ----------------------------------------------------------------------------------------

_ISA_PREFIXES = ("sse", "ssse3", "avx", "amx", "fma", "f16c", "vnni")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """(CPU model, vector ISA flags) from /proc/cpuinfo (x86: model name + flags; ARM: part + Features)."""
    model, flags, arm = platform.processor() or platform.machine(), (), {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = tuple(sorted(f for f in value.split() if f.startswith(_ISA_PREFIXES)))
        elif key in ("CPU implementer", "CPU part", "CPU variant") and key not in arm:
            arm[key] = value.strip()
        elif key == "Features" and not flags:                   # ARM: sve, bf16, asimd...
            flags = tuple(sorted(value.split()))
    if arm and model in ("", platform.machine(), platform.processor()):
        model = f"{platform.machine()} " + " ".join(f"{k.split()[-1]}={v}" for k, v in sorted(arm.items()))
    return model, flags


def _onednn_max_isa() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has BF16 instructions and neither torch nor oneDNN was told not to use them."""
    import torch

    _, flags = _cpuinfo()
    has = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    capability = torch.backends.cpu.get_cpu_capability().upper()
    isa = _onednn_max_isa()
    onednn_ok = isa in ("", "ALL", "DEFAULT") or any(w in isa for w in ("BF16", "AMX", "AVX10"))
    return has and capability.startswith("AVX512") and onednn_ok


AUTO_PRECISION_ENV = "FGLIB_AUTO_PRECISION"


def resolve_precision(amp: bool | str, device_type: str) -> str:
    """'float16', 'bfloat16' or 'float32': what `train.amp` means on this device.

    FGLIB_AUTO_PRECISION=float32|bfloat16 fixes what "auto" means on a CPU: the store's verification
    re-trains a run in the precision it was recorded in, so that another CPU changes only the
    summation order, not the arithmetic."""
    if amp is False:
        return "float32"
    if device_type == "cuda":
        return "float16"
    if amp is True:
        return "bfloat16"
    forced = os.environ.get(AUTO_PRECISION_ENV, "")
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ValueError(f"{AUTO_PRECISION_ENV} must be float32 or bfloat16, got {forced!r}")
        return forced
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def cpu_kind() -> dict[str, object]:
    """What a bit-exact re-run needs to share with the recording machine (and a short id of it)."""
    import torch

    model, flags = _cpuinfo()
    kind = {"cpu": model, "isa_flags": " ".join(flags),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": _onednn_max_isa() or "default",
            "torch": torch.__version__.split("+")[0]}
    kind["id"] = hashlib.sha256(json.dumps(kind, sort_keys=True).encode()).hexdigest()[:10]
    return kind
