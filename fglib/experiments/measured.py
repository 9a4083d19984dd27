"""Measurements on trained models, stored like runs: data/runs/evidence/.

A chapter's evidence (pointing rates, linear probes, per-step read-outs, feature similarities, and
the arrays its figures draw) is computed from trained weights by a function of fglib, decorated with
`@measurement(tol=..., why=...)`. The chapter never calls that function itself; it asks

    value = measure(fn, runs, **args)

and gets the function's value from, in order,
1. the results store, data/runs/evidence/<name>-<key>.json (committed, written by `make record`);
2. the local cache, <cache>/evidence/<name>-<key>-<fingerprint>.json (computed on this machine);
and only then computes it, on one torch thread, into the local cache, with a line that says so.

- The **key** hashes what the value is of: the function's name, the runs it reads (label -> run key)
  and its arguments (JSON).
- The **fingerprint** hashes the code that can change it: the function's module and the fglib
  modules it imports (the plumbing that only finds and loads runs does not count, see PLUMBING),
  plus the code fingerprint of every run it reads (runner.run_fingerprint, with the weights the run
  starts from). A stored value whose
  fingerprint is not the current code's is *stale*: under FGLIB_STORE_ONLY=1 (`make test`) asking
  for it is an error naming the changed modules and `make record CH=<chapter>`.
- A record carries a checksum, so a hand-edited or corrupted value is refused like a hand-edited run.

Values are what the function returns: numbers, strings, lists and dicts of them, pandas DataFrames
(flat: a RangeIndex, plain column names) and torch tensors or NumPy arrays (stored as their raw bytes,
base64, in the dtype the function chose). A chapter prints stored numbers, so it prints the same
digits on every CPU.

CI re-computes a rotating sample (`sample`, `verify`): on the CPU kind that recorded a value it must
be identical; on another kind every number must lie within the function's stated `tol` (absolute),
whose `why` says why that bound holds.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from fglib.core.config import RunConfig
from fglib.core.hardware import cpu_kind
from fglib.core.paths import cache_dir
from fglib.core.runtime import current_chapter
from fglib.experiments import runner, store
from fglib.experiments.provenance import NOT_RESULT_CHANGING, fglib_imports, module_hash, normalised_source
from fglib.experiments.usage import note_usage

# 2: dicts in a value keep their order (1 sorted them); 3: the value's own checksum, the loader's hash
# and each run's weights in the fingerprint, defaults in the key
FORMAT = 3
# Modules a measurement's import walk stops at: they find, load and record runs (their results are
# covered by each run's own fingerprint), configure, or print; they do not compute evidence.
PLUMBING = NOT_RESULT_CHANGING | {"fglib.experiments", "fglib.experiments.runner", "fglib.experiments.store",
                                  "fglib.experiments.record", "fglib.experiments.verify",
                                  "fglib.experiments.measured", "fglib.experiments.regimes",
                                  "fglib.experiments.usage", "fglib.book", "fglib.book.chapters"}
ENV_RECORD_DIR = "FGLIB_RECORD_DIR"
# CI re-computes one stored measurement per chapter while their recorded times add up to at most this.
SAMPLE_BUDGET_SECONDS = 60.0


# The `why` of a measurement computed by float64 forward passes (fglib.experiments.runner.load_model's default).
FLOAT64 = ("float64 forward passes: CPUs differ by rounding only, about 1e-12 relative; a prediction, "
           "a peak, a nearest neighbour or a channel's part changes only where two values are that close")


class OutdatedEvidenceError(store.StoreError):
    """A measurement record written by an older fglib (another record layout): stale, not corrupt."""


class StaleEvidenceError(store.StaleRunError):
    """A chapter needs a measurement the store lacks, or holds for older code, and computing it is
    not allowed (FGLIB_STORE_ONLY=1)."""


@dataclass(frozen=True)
class Spec:
    tol: float          # absolute tolerance for every number on another CPU kind
    why: str            # why the value cannot move by more than that


def measurement(tol: float, why: str) -> Callable:
    """Declare fn(runs, **args) a measurement: `tol` bounds how far any number of its value may move
    on another kind of CPU, `why` says why (printed when verification fails)."""
    if not (tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")

    def mark(fn):
        fn.measurement = Spec(float(tol), why)
        return fn
    return mark


# -- identity ---------------------------------------------------------------------------------------

def qualified_name(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def spec_of(fn: Callable) -> Spec:
    spec = getattr(fn, "measurement", None)
    if not isinstance(spec, Spec):
        raise TypeError(f"{qualified_name(fn)} is not a measurement: decorate it with "
                        "@fglib.experiments.measured.measurement(tol=..., why=...) in an fglib module")
    if fn.__module__ == "__main__" or not fn.__module__.startswith("fglib."):
        raise TypeError(f"{qualified_name(fn)} is defined outside fglib: a stored measurement must be "
                        "code whose fingerprint the store can take; move it into an fglib module")
    return spec


def _canonical(args: Mapping[str, Any]) -> str:
    try:
        return json.dumps(args, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"a measurement's arguments must be plain JSON values (numbers, strings, lists, "
                        f"dicts), got {args!r}: {e}") from None


def _json_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(_canonical(args))                     # tuples -> lists, as the record stores them


def bound_args(fn: Callable, args: Mapping[str, Any]) -> dict[str, Any]:
    """args with fn's defaults filled in, as JSON: measure(f, r) and measure(f, r, radius=8.0) are
    one value, and one record."""
    try:
        bound = inspect.signature(fn).bind(None, **args)
    except TypeError as e:
        raise TypeError(f"{qualified_name(fn)}: {e}") from None
    bound.apply_defaults()
    return _json_args({k: v for k, v in list(bound.arguments.items())[1:]})


@dataclass
class Measurement:
    """fn applied to runs (label -> RunConfig) with args: what is stored and how it is found."""
    fn: Callable
    runs: dict[str, RunConfig]
    args: dict[str, Any]

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def key(self) -> str:
        body = {"fn": qualified_name(self.fn), "runs": {k: c.key() for k, c in self.runs.items()},
                "args": self.args}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def file(self) -> str:
        return f"{self.name}-{self.key}.json"

    def modules(self) -> dict[str, str]:
        return code_modules(self.fn.__module__)

    def run_fingerprints(self) -> dict[str, str]:
        """label -> the run's code fingerprint and the sha256 of the weights a measurement loads."""
        return {label: f"{runner.run_fingerprint(cfg)}:{weights_digest(cfg)}" for label, cfg in self.runs.items()}

    def fingerprint(self) -> str:
        return fingerprint_of(self.modules(), self.run_fingerprints())


def fingerprint_of(modules: dict[str, str], run_fingerprints: dict[str, str]) -> str:
    body = {"modules": modules, "runs": run_fingerprints, "loader": loader_hash()}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def weights_digest(cfg: RunConfig) -> str:
    """The sha256 of the weights fglib.experiments.runner.load_model would load for cfg: the store's (when it
    holds the run with weights for the current code), else the local cache's; "none" before the
    run is trained."""
    record, where = runner.lookup(cfg)
    if where == "store" and record.get("weights") and store.weights_path(cfg.key()).exists():
        return record["weights"]["sha256"][:16]
    path = runner.cache_folder(cfg) / "model.pt"
    return store.file_sha256(path)[:16] if path.exists() else "none"


def loader_hash() -> str:
    """Hash of the code that turns a stored run into the model a measurement reads (load_model:
    its dtype, eval mode; load_weights: the float16 -> float32 conversion)."""
    text = "\n".join(inspect.getsource(f) for f in (runner.load_model, store.load_weights))
    return hashlib.sha256(normalised_source(text).encode()).hexdigest()[:12]


def code_modules(module: str) -> dict[str, str]:
    """{module: hash} of `module` and the fglib modules it imports, stopping at PLUMBING."""
    todo, seen = [module], set()
    while todo:
        m = todo.pop()
        if m in seen or (m in PLUMBING and m != module):
            continue
        seen.add(m)
        todo.extend(fglib_imports(m))
    return {m: module_hash(m) for m in sorted(seen)}


def _as_runs(runs) -> dict[str, RunConfig]:
    if isinstance(runs, RunConfig):
        return {"run": runs}
    if isinstance(runs, Mapping) and all(isinstance(c, RunConfig) for c in runs.values()):
        return {str(k): c for k, c in runs.items()}
    raise TypeError("runs must be a RunConfig or a mapping label -> RunConfig, got "
                    f"{type(runs).__name__}")


# -- values -----------------------------------------------------------------------------------------

def encode(value: Any) -> Any:
    """A measurement's value as JSON: arrays as {"__array__": dtype, shape, base64 bytes}, frames as
    {"__frame__": columns, rows}."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"arrays of dtype {a.dtype} cannot be stored; use numbers")
        a = a.astype(a.dtype.newbyteorder("<"))
        return {"__array__": {"dtype": str(a.dtype.newbyteorder("=")), "shape": list(a.shape),
                              "base64": base64.b64encode(a.tobytes()).decode()}}
    if isinstance(value, pd.DataFrame):
        if not isinstance(value.index, pd.RangeIndex) or value.columns.nlevels != 1:
            raise TypeError("store flat frames (reset_index(), one level of column names) and set the "
                            "index in the chapter")
        return {"__frame__": {"columns": [str(c) for c in value.columns],
                              "rows": [[encode(v) for v in row] for row in value.itertuples(index=False)]}}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a measurement cannot store a {type(value).__name__}; return numbers, strings, "
                    "lists, dicts, flat DataFrames or arrays")


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            a = value["__array__"]
            dtype = np.dtype(a["dtype"]).newbyteorder("<")
            raw = np.frombuffer(base64.b64decode(a["base64"]), dtype=dtype).astype(np.dtype(a["dtype"]))
            return torch.from_numpy(raw.reshape(a["shape"]).copy())
        if set(value) == {"__frame__"}:
            f = value["__frame__"]
            return pd.DataFrame([[decode(v) for v in row] for row in f["rows"]], columns=f["columns"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def numbers(value: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """(path, leaf) of every leaf of an encoded value; arrays give one leaf per element."""
    if isinstance(value, dict) and set(value) == {"__array__"}:
        yield f"{path}.shape", str(value["__array__"]["shape"])
        a = decode(value).double().flatten().tolist()
        for i, v in enumerate(a):
            yield f"{path}[{i}]", v
    elif isinstance(value, dict) and set(value) == {"__frame__"}:
        f = value["__frame__"]
        for i, row in enumerate(f["rows"]):
            for c, v in zip(f["columns"], row):
                yield from numbers(v, f"{path}[{i}].{c}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")
    else:
        yield path, value


# -- where values live --------------------------------------------------------------------------------

def stored_path(m: Measurement | str) -> Path:
    return store.evidence_dir() / (m if isinstance(m, str) else m.file)


def cache_path(m: Measurement, fingerprint: str | None = None) -> Path:
    fp = fingerprint or m.fingerprint()
    return cache_dir() / "evidence" / f"{m.name}-{m.key}-{fp}-f{FORMAT}.json"


def read(path: Path, chapter: str | None = None) -> dict[str, Any]:
    """A measurement record, validated (format, checksum) like a run record."""
    record = store.read_record(path, chapter)
    if record.get("kind") != "measurement":
        raise store.StoreError(f"{path} is not a measurement record; restore it with `git checkout -- {path}`")
    if record.get("evidence_format", 1) != FORMAT:
        newer = record.get("evidence_format", 1) > FORMAT
        error = store.StoreError if newer else OutdatedEvidenceError
        raise error(f"{path} was written by {'a newer' if newer else 'an older'} fglib (measurement format "
                    f"{record.get('evidence_format', 1)}, this one reads {FORMAT}); "
                    + ("update fglib" if newer else f"re-record it with `{store._fix(chapter)}`"))
    if not path.name.startswith(f"{record.get('name')}-{record.get('key')}") or \
            record.get("value_sha256") != value_checksum(record.get("value")):
        raise store.StoreError(f"{path} was edited by hand or is corrupted (its name or the order of its value "
                               f"does not match its content); restore it with `git checkout -- {path}` or "
                               f"re-record it with `{store._fix(chapter)}`")
    return record


def value_checksum(value: Any) -> str:
    """sha256 of the value as stored, in its order (the record's checksum sorts keys)."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def lookup(m: Measurement) -> tuple[dict[str, Any] | None, str]:
    """(record, where): where is 'store', 'cache' or 'none'; only a record of this measurement (its
    key) computed by the current code (its fingerprint) counts."""
    fp = m.fingerprint()
    path = stored_path(m)
    if path.exists():
        try:
            record = read(path, _chapter())
        except OutdatedEvidenceError:                      # stale: computed again, or an error
            record = None                                  # under FGLIB_STORE_ONLY=1
        if record is not None and record["fingerprint"] == fp and record["key"] == m.key:
            return record, "store"
    path = cache_path(m, fp)
    if path.exists():
        record = read(path)                                # the cache path names the format
        if record["fingerprint"] == fp and record["key"] == m.key:
            return record, "cache"
    return None, "none"


def why_not_stored(m: Measurement) -> str:
    path = stored_path(m)
    if not path.exists():
        return "not in the store"
    try:
        record = read(path)
    except OutdatedEvidenceError:
        return "stale: written by an older fglib (another record layout)"
    if record["key"] != m.key:
        return f"another measurement ({record['fn']}, key {record['key']}) is stored under its name"
    now = {**m.modules(), **{f"run {k} (code:weights)": v for k, v in m.run_fingerprints().items()},
           "fglib.experiments.runner.load_model / fglib.experiments.store.load_weights": loader_hash()}
    then = {**record["modules"], **{f"run {k} (code:weights)": v for k, v in record["run_fingerprints"].items()},
            "fglib.experiments.runner.load_model / fglib.experiments.store.load_weights": record.get("loader")}
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    return "stale: recorded before a change to " + (", ".join(changed) or "its code")


def _chapter() -> str | None:
    return current_chapter()


# -- computing ---------------------------------------------------------------------------------------

def compute(m: Measurement) -> dict[str, Any]:
    """Run the measurement on one torch thread (bit-reproducible on one CPU kind); its record."""
    spec = spec_of(m.fn)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):      # the caller's random state is left as it was
            torch.manual_seed(0)
            value = encode(m.fn(dict(m.runs), **m.args))
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    modules, run_fps = m.modules(), m.run_fingerprints()      # the runs are trained by now
    fp = fingerprint_of(modules, run_fps)
    kind = cpu_kind()
    record = {"format": store.FORMAT, "evidence_format": FORMAT, "kind": "measurement", "name": m.name, "fn": qualified_name(m.fn),
              "key": m.key, "fingerprint": fp, "modules": modules, "run_fingerprints": run_fps,
              "loader": loader_hash(),
              "runs": {label: cfg.key() for label, cfg in m.runs.items()}, "args": m.args,
              "tolerance": {"abs": spec.tol, "why": spec.why}, "value": value,
              "value_sha256": value_checksum(value),
              "seconds": round(seconds, 2),
              "provenance": {"cpu": kind["cpu"], "torch_capability": kind["torch_capability"],
                             "onednn_max_isa": kind["onednn_max_isa"], "torch": kind["torch"],
                             "cpu_kind": kind["id"], "threads": 1,
                             "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}}
    record["sha256"] = store.checksum(record)
    return record


def measure(fn: Callable, runs: RunConfig | Mapping[str, RunConfig], **args) -> Any:
    """The value of fn(runs, **args): from the store, else the local cache, else computed here.

    runs: the trained runs the measurement reads (a RunConfig, or label -> RunConfig); args: plain
    JSON values. Under FGLIB_STORE_ONLY=1 a value the store lacks for the current code is an error
    that names the command that records it.
    """
    spec_of(fn)
    m = Measurement(fn, _as_runs(runs), bound_args(fn, args))
    record, where = lookup(m)
    if record is None:
        if store.store_only():
            chapter = _chapter() or "<chapter>"
            raise StaleEvidenceError(
                f"the measurement {m.name} ({m.file}) this chapter needs is {why_not_stored(m)}, and "
                f"FGLIB_STORE_ONLY=1 forbids computing it. Record it with "
                f"`{store.RECORD_HINT.format(chapter=chapter)}` (it computes it, writes "
                "data/runs/evidence/ and re-executes the chapter), then commit data/runs/ and the notebook.")
        print(f"fglib: computing {m.name} from the weights of {len(m.runs)} run(s) (not stored for this "
              f"code; local cache: {cache_path(m).parent})", flush=True)
        record = compute(m)
        store.write_text_atomic(cache_path(m, record["fingerprint"]), store.dumps(record, sort_keys=False))
    note(m, record)
    return decode(record["value"])


def note(m: Measurement, record: dict[str, Any]) -> None:
    """While a chapter is being recorded: note the measurement (its record: from the store, or the
    local cache file it was written to) and the runs whose weights it reads."""
    for cfg in m.runs.values():
        note_usage(cfg, weights=True)
    folder = os.environ.get(ENV_RECORD_DIR)
    if folder:
        line = {"key": m.key, "name": m.name, "file": m.file, "fingerprint": record["fingerprint"],
                "format": record["evidence_format"],
                "cache": str(cache_path(m, record["fingerprint"]))}
        with open(Path(folder) / "evidence.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


# -- re-computing a stored value (CI's sample, `make reproduce`) -------------------------------------------

def from_record(record: dict[str, Any]) -> Measurement:
    """The measurement a record describes, rebuilt from the store (its function and its runs)."""
    module, _, qualname = record["fn"].partition(":")
    try:
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
    except (ModuleNotFoundError, AttributeError):
        raise OutdatedEvidenceError(
            f"the measurement {record['name']} was computed by {record['fn']}, which no longer exists "
            "(moved or removed): it is stale; re-record the chapter that reads it with "
            "`make record CH=<chapter>`") from None
    runs = {label: RunConfig.from_dict(store.read_record(store.run_path(key))["config"])
            for label, key in record["runs"].items()}
    return Measurement(fn, runs, record["args"])


def same_kind(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["provenance"]["cpu_kind"] == b["provenance"]["cpu_kind"]


def compare(chapter: str, stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """One row: the largest difference over the value's numbers, the rule, and whether it holds.
    The tolerance is fresh's (the current code's), so a changed `tol` applies at once."""
    a, b = list(numbers(stored["value"])), list(numbers(fresh["value"]))
    exact = same_kind(stored, fresh)
    tol = 0.0 if exact else fresh["tolerance"]["abs"]
    worst, where, ok = 0.0, "", True
    if [p for p, _ in a] != [p for p, _ in b]:                  # other keys, lengths or shapes
        first = next((p for (p, _), (q, _) in zip(a, b) if p != q), f"{len(a)} vs {len(b)} numbers")
        worst, where, ok = math.inf, f"structure differs at {first}", False
    for (path, x), (_, y) in zip(a, b):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if x == y or (math.isnan(x) and math.isnan(y)):            # equal infinities too
                continue
            d = abs(y - x) if not (math.isnan(x) or math.isnan(y)) else math.inf
            if d > worst:
                worst, where = d, path
            ok = ok and d <= tol
        elif x != y:
            worst, where, ok = math.inf, path, False
    if exact:
        ok = ok and store.same_numbers(stored["value"], fresh["value"])
    return {"chapter": chapter, "measurement": stored["name"], "file": f"{stored['name']}-{stored['key']}.json",
            "numbers": len(a), "max |diff|": worst, "at": where, "tol": tol,
            "rule": "same CPU kind: identical" if exact else f"other CPU kind: <= {tol:g} ({fresh['tolerance']['why']})",
            "seconds": stored["seconds"], "ok": bool(ok)}


def verify(entries: list[tuple[str, str]]) -> pd.DataFrame:
    """Re-compute stored measurements (chapter, file) from the stored weights and compare."""
    rows = []
    for chapter, file in entries:
        stored = read(stored_path(file), chapter)
        m = from_record(stored)
        if m.fingerprint() != stored["fingerprint"] or m.key != stored["key"]:   # before computing anything
            raise StaleEvidenceError(f"{stored_path(file)} is stale ({why_not_stored(m)}); "
                                     f"record it with `make record CH={chapter}`")
        fresh = compute(m)
        rows.append(compare(chapter, stored, fresh))
    return pd.DataFrame(rows)


def sample(chapters: Iterable[str], salt: str, budget: float | None) -> list[tuple[str, str]]:
    """One stored measurement per chapter, picked by hashing (salt, chapter) among those that took
    at most `budget` seconds when recorded; chapters are taken in an order that rotates with the salt
    while the picks' seconds add up to at most `budget` (None: every chapter, any measurement).
    Longer measurements are re-computed by `python -m fglib store verify --all`."""
    chapters = sorted(chapters, key=lambda ch: hashlib.sha256(f"{salt}:evidence-order:{ch}".encode()).hexdigest())
    picked: list[tuple[str, str]] = []
    spent, seen = 0.0, set()
    for ch in chapters:
        files = [e["file"] for e in store.read_evidence_index(ch) if e["file"] not in seen]
        if not files:
            continue
        start = int(hashlib.sha256(f"{salt}:evidence:{ch}".encode()).hexdigest(), 16) % len(files)
        order = [files[(start + i) % len(files)] for i in range(len(files))]
        cost = {f: _seconds(f) for f in order}
        fits = [f for f in order if budget is None or spent + cost[f] <= budget]
        if fits:
            picked.append((ch, fits[0]))
            seen.add(fits[0])
            spent += cost[fits[0]]
    return picked


def _seconds(file: str) -> float:
    try:
        return float(read(stored_path(file))["seconds"])
    except (store.StoreError, KeyError, ValueError):
        return math.inf

