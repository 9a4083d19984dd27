"""The results store: every run a chapter shows, committed in data/runs/.

    data/runs/<key>.json            one run: config, code fingerprint, final metrics, evaluations,
                                    per-step loss terms, seconds, provenance, checksum
    data/runs/<key>.pt              its weights in float16, only for runs whose figures need them
    data/runs/chapters/<name>.json  the runs a chapter uses: key, variant, seed, whether it needs weights;
                                    and the measurements it reads
    data/runs/evidence/<m>-<key>.json  a measurement on trained runs (fglib.experiments.measured): its value,
                                    the runs and code it was computed from, provenance, checksum

<key> is the config's hash (`RunConfig.key()`); the record also holds the code fingerprint of the
method (fglib.experiments.provenance). A chapter gets a stored run only when both match: a run whose fingerprint
is not the current code's is *stale*, and under `FGLIB_STORE_ONLY=1` (`make test`) asking for it is an
error that names the command that refreshes it. The store is written only by `make record`
(fglib.experiments.record), through temporary files and renames, so an interrupted record leaves it as it was.

The local cache (data/cache/runs/<key>-<fingerprint>/) holds runs trained on this machine in the same
format; its folder name covers the fingerprint too, so edited code never reads old numbers from it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from fglib.core.paths import cache_dir, data_dir

FORMAT = 1                       # bump when the record layout changes; older fglib refuses newer files
MAX_HISTORY_ROWS = 2000          # longer per-step histories are thinned to every k-th step
DIGITS = 6                       # significant digits kept of per-step loss terms (metrics are exact)
WEIGHTS_DTYPE = torch.float16    # stored weights: half the bytes, about 3 decimal digits per weight

RECORD_HINT = "make record CH={chapter}"


class StoreError(RuntimeError):
    """A store file that cannot be used; the message names the file and the command that fixes it."""


class StaleRunError(StoreError):
    """A chapter needs a run that the store lacks, or holds for older code, and training is not allowed."""


def store_dir() -> Path:
    """data/runs (under FGLIB_DATA_DIR when set)."""
    return data_dir() / "runs"


def chapters_dir() -> Path:
    return store_dir() / "chapters"


def evidence_dir() -> Path:
    """data/runs/evidence: the measurements chapters read (fglib.experiments.measured)."""
    return store_dir() / "evidence"


def runs_dir() -> Path:
    """<cache>/runs, the local run cache, where <cache> is $FGLIB_DATA_CACHE or data/cache (shared with
    the benchmark): one folder <key>-<fingerprint> per run trained on this machine."""
    return cache_dir() / "runs"


def run_path(key: str) -> Path:
    return store_dir() / f"{key}.json"


def weights_path(key: str) -> Path:
    return store_dir() / f"{key}.pt"


def store_only() -> bool:
    """FGLIB_STORE_ONLY=1 (set by `make test`): chapters read the store and never train."""
    return os.environ.get("FGLIB_STORE_ONLY", "") == "1"


def _fix(chapter: str | None) -> str:
    return RECORD_HINT.format(chapter=chapter) if chapter else "make record CH=<chapter>"


# -- the record of one run ---------------------------------------------------------------------------

def _round(v: float) -> float:
    return float(f"{v:.{DIGITS}g}")


def history_columns(history: list[dict[str, float]]) -> dict[str, Any]:
    """Per-step rows -> {"every": k, "columns": {name: values}}, thinned and rounded for storage."""
    every = max(1, -(-len(history) // MAX_HISTORY_ROWS))
    rows = history[::every]
    names = list(dict.fromkeys(k for row in rows for k in row))
    cols = {n: [(_round(r[n]) if isinstance(r.get(n), float) else r.get(n)) for r in rows] for n in names}
    return {"every": every, "columns": cols}


def history_rows(stored: dict[str, Any]) -> list[dict[str, float]]:
    cols = stored["columns"]
    n = len(next(iter(cols.values()), []))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def checksum(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def make_record(result, fingerprint: str, modules: dict[str, str], provenance: dict[str, Any]) -> dict[str, Any]:
    """A RunResult (fglib.engine.train) as a store record (without weights)."""
    history = result.history if isinstance(result.history, list) else history_rows(result.history)
    record = {"format": FORMAT, "key": result.key, "fingerprint": fingerprint, "modules": modules,
              "config": result.config, "metrics": result.metrics, "evals": result.evals,
              "history": history_columns(history), "seconds": round(result.seconds, 2),
              "images_per_second": round(result.images_per_second, 1),
              "provenance": {"precision": result.precision, **provenance}, "weights": None}
    record["sha256"] = checksum(record)
    return record


def dumps(record: dict[str, Any], sort_keys: bool = True) -> str:
    """One top-level field per line, each field compact: readable diffs, small files. sort_keys=False
    keeps the order of dicts inside the fields (a measurement's value keeps the order it was built in)."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), sort_keys=sort_keys)}"
             for k, v in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def temporary_path(final: Path) -> Path:
    """Where a file is written before it is renamed to `final` (ignored by git)."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> str:
    """Write to a temporary file, flush it to disk, rename it: readers never see half a file.
    Returns the sha256 of the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def same_numbers(a: Any, b: Any) -> bool:
    """Equality of stored values that treats NaN as equal to NaN (a class absent from a split)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_record(path: Path, record: dict[str, Any]) -> None:
    record = {**record, "sha256": checksum(record)}
    write_text_atomic(path, dumps(record))


def read_record(path: Path, chapter: str | None = None) -> dict[str, Any]:
    """Load and validate one record: readable JSON, a format this fglib knows, an intact checksum."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; restore it with `git checkout -- {path}` or re-record it with "
                         f"`{_fix(chapter)}`") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is not a readable run record ({e}); restore it with "
                         f"`git checkout -- {path}` or re-record it with `{_fix(chapter)}`") from None
    if not isinstance(record, dict) or "format" not in record:
        raise StoreError(f"{path} is not a run record (no 'format' field); restore it with "
                         f"`git checkout -- {path}` or re-record it with `{_fix(chapter)}`")
    if record["format"] > FORMAT:
        raise StoreError(f"{path} was written by a newer fglib (store format {record['format']}, this one reads "
                         f"up to {FORMAT}); update fglib (`git pull`, then `pip install -e .`)")
    if record.get("sha256") != checksum(record):
        raise StoreError(f"{path} was edited by hand or is corrupted: its checksum does not match its content. "
                         f"Restore it with `git checkout -- {path}`, or re-record it with `{_fix(chapter)}`; "
                         "stored numbers are only ever written by the record command")
    return record


# -- weights -------------------------------------------------------------------------------------------

def compact_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors in WEIGHTS_DTYPE, the rest (BatchNorm's step counters) as they are."""
    return {k: v.to(WEIGHTS_DTYPE) if v.is_floating_point() else v for k, v in state.items()}


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> str:
    """Write compact weights atomically; returns their sha256."""
    buffer = io.BytesIO()
    torch.save(compact_state(state), buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def copy_atomic(src: Path, dst: Path) -> str:
    """Copy src to dst through a temporary file and a rename; returns the sha256 of the bytes."""
    return write_bytes_atomic(dst, src.read_bytes())


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_weights(path: Path, expected_sha256: str | None = None, chapter: str | None = None):
    """The stored weights as float32 tensors; a clear error when the file is missing or altered."""
    if not path.exists():
        raise StoreError(f"the weights file {path} is missing; restore it with `git checkout -- {path}` "
                         f"or re-record the chapter with `{_fix(chapter)}`")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise StoreError(f"the weights file {path} does not match the checksum in its run record; restore it "
                         f"with `git checkout -- {path}` or re-record with `{_fix(chapter)}`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                                            # a truncated or foreign file
        raise StoreError(f"{path} cannot be read as weights ({type(e).__name__}: {e}); restore it with "
                         f"`git checkout -- {path}` or re-record with `{_fix(chapter)}`") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# -- chapter indexes -------------------------------------------------------------------------------------

def chapter_index_path(chapter: str) -> Path:
    return chapters_dir() / f"{chapter}.json"


def read_chapter_index(chapter: str) -> dict[str, Any]:
    """A chapter's whole index, validated: {"runs": [...], "evidence": [...] (optional)}."""
    path = chapter_index_path(chapter)
    if not path.exists():
        raise StoreError(f"the store has no index for chapter {chapter!r} ({path}); record it with "
                         f"`{_fix(chapter)}`")
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise StoreError(f"{path} is not valid JSON ({e}); restore it with `git checkout -- {path}` "
                         f"or re-record with `{_fix(chapter)}`") from None
    if index.get("format", 0) > FORMAT:
        raise StoreError(f"{path} was written by a newer fglib (format {index['format']}); update fglib")
    return index


def read_index(chapter: str) -> list[dict[str, Any]]:
    """The runs a chapter uses: [{key, variant, seed, weights}]."""
    return read_chapter_index(chapter)["runs"]


def read_evidence_index(chapter: str) -> list[dict[str, Any]]:
    """The measurements a chapter reads: [{file, name, key}] (empty for a chapter that reads none)."""
    return read_chapter_index(chapter).get("evidence", [])


def indexed_chapters() -> list[str]:
    return sorted(p.stem for p in chapters_dir().glob("*.json"))


def write_index(chapter: str, runs: list[dict[str, Any]], evidence: list[dict[str, Any]] | None = None) -> None:
    index = {"format": FORMAT, "chapter": chapter, "runs": runs}
    if evidence:
        index["evidence"] = evidence
    body = json.dumps(index, indent=1)
    write_text_atomic(chapter_index_path(chapter), body + "\n")


def config_of(key: str) -> dict[str, Any]:
    """The config of run `key`, from the store or the local run cache (any code fingerprint)."""
    path = run_path(key)
    if path.exists():
        return read_record(path)["config"]
    for folder in runs_dir().glob(f"{key}-*"):
        if (folder / "result.json").exists():
            return json.loads((folder / "result.json").read_text())["config"]
    raise StoreError(f"no run with key {key} in {store_dir()} or {runs_dir()}")


def weights_of(key: str) -> Path:
    """The weights file of run `key` (any code fingerprint): the store's, else the run cache's."""
    stored = weights_path(key)
    if stored.exists():
        return stored
    cached = sorted(runs_dir().glob(f"{key}-*/model.pt"))
    if cached:
        return cached[-1]
    raise StoreError(f"no weights for run {key!r} in {stored.parent} or the run cache ({runs_dir()}): train "
                     "that run first (fglib.experiments.runner.run with its config), or record the chapter "
                     "that stores it with its weights")


def chapters_using(key: str) -> list[str]:
    return [ch for ch in indexed_chapters() if any(r["key"] == key for r in read_index(ch))]


def size_bytes(folder: Path | None = None) -> int:
    return sum(p.stat().st_size for p in (folder or store_dir()).rglob("*") if p.is_file())
