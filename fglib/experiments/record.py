"""Recording the results store: `make record CH=<chapter>` (python -m fglib record <chapter>).

1. The chapter's notebook is executed with FGLIB_RECORD_DIR set: every run it asks for is trained (or
   read from the local cache) and noted, with its variant, seed and whether a figure needs its weights.
2. Only when the whole notebook ran, the noted runs are copied into data/runs/: every new file is
   first written under a temporary name, then all are renamed into place (weights before records),
   then the chapter's index is replaced, then files that no chapter uses any more are removed. An
   interruption before the renames leaves the previous store as it was; one during the renames (a
   fraction of a second) is undone with `git checkout -- data/runs && git clean -f data/runs`.
3. The notebook is executed again with FGLIB_STORE_ONLY=1, so that its committed outputs are read
   from the store, exactly as `make test` will read them.

Measurements on trained runs (fglib.experiments.measured) are noted and written the same way, into
data/runs/evidence/, and listed in the chapter's index.

Recording is refused under CI: CI verifies the store, it never writes it.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fglib.core.config import RunConfig
from fglib.core.hardware import AUTO_PRECISION_ENV
from fglib.core.paths import REPO_ROOT, cache_dir
from fglib.experiments import store
from fglib.experiments.runner import cache_folder, lookup
from fglib.experiments.usage import read_evidence_usage, read_usage

# Every stored run trained in float32 (the book was recorded on AVX2 machines, where train.amp="auto"
# keeps float32). Recording trains in it on every CPU, so that a run recorded on a CPU with BF16
# instructions sits beside its baseline in the same arithmetic; a chapter never mixes the two.
BOOK_PRECISION = "float32"


def stage_evidence(chapter: str, evidence: list[dict[str, Any]]) -> tuple[list[tuple[Path, Path]], int]:
    """Temporary copies of the measurements the store lacks for the current code (from the local
    cache), and how many the store already holds."""
    staged, kept = [], 0
    try:
        for e in evidence:
            final = store.evidence_dir() / e["file"]
            stored = store.read_record(final, chapter) if final.exists() else {}
            if stored.get("fingerprint") == e["fingerprint"] and stored.get("evidence_format") == e["format"]:
                kept += 1
                continue
            cached = Path(e["cache"])
            if not cached.exists():
                raise store.StoreError(f"the measurement {e['file']} was used by {chapter} but is neither in "
                                       "the store nor in the local cache; run the record again")
            store.read_record(cached)                                # intact
            tmp = store.temporary_path(final)
            store.copy_atomic(cached, tmp)                           # byte for byte
            staged.append((tmp, final))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged, kept


def notebook_path(chapter: str) -> Path:
    path = REPO_ROOT / "book" / f"{chapter}.ipynb"
    if not (REPO_ROOT / "book" / f"{chapter}.md").exists():
        known = sorted(p.stem for p in (REPO_ROOT / "book").glob("*.md") if "jupytext:" in p.read_text()[:400])
        raise SystemExit(f"no chapter {chapter!r}: book/{chapter}.md does not exist; chapters: {', '.join(known)}")
    return path


def book_chapters() -> list[str]:
    """The chapters in the order of the table of contents."""
    import yaml

    toc = yaml.safe_load((REPO_ROOT / "book" / "_toc.yml").read_text())
    names = [Path(toc["root"]).name]

    def walk(node):
        for key in ("chapters", "sections", "parts"):
            for child in node.get(key, []):
                if "file" in child:
                    names.append(Path(child["file"]).name)
                walk(child)
    walk(toc)
    return [n for n in names if (REPO_ROOT / "book" / f"{n}.md").exists()
            and "jupytext:" in (REPO_ROOT / "book" / f"{n}.md").read_text()[:400]]


def execute(notebook: Path, env: dict[str, str], output: Path | None = None) -> None:
    """Run a notebook top to bottom with nbconvert (in place, or into `output`)."""
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--ExecutePreprocessor.record_timing=False", "--ExecutePreprocessor.timeout=7200"]
    cmd += ["--inplace"] if output is None else ["--output-dir", str(output.parent), "--output", output.name]
    subprocess.run([*cmd, str(notebook)], check=True, env={**os.environ, **env}, cwd=REPO_ROOT)


@contextmanager
def store_lock():
    """One writer of the store at a time: two chapters recorded at once would otherwise collect each
    other's new files as unused between their renames and their indexes."""
    store.store_dir().mkdir(parents=True, exist_ok=True)
    with open(store.store_dir() / ".record.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def commit(chapter: str, entries: list[dict[str, Any]],
           evidence: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Write the chapter's runs and measurements into the store (atomically, file by file), then its
    index, then clean up; one chapter at a time (store_lock)."""
    with store_lock():
        return _commit(chapter, entries, evidence)


def _commit(chapter: str, entries: list[dict[str, Any]],
            evidence: list[dict[str, Any]] | None = None) -> dict[str, int]:
    elsewhere = {r["key"] for ch in store.indexed_chapters() if ch != chapter
                 for r in store.read_index(ch) if r["weights"]}
    plan = []
    for e in entries:
        e = {**e, "needs_weights": e["weights"] or e["key"] in elsewhere}   # another chapter's figures too
        cfg = RunConfig.from_dict(e["config"])
        record, where = lookup(cfg)
        if record is None:
            raise store.StoreError(f"run {e['key']} ({e['variant']}, seed {e['seed']}) was used by {chapter} but is "
                                   "neither in the store nor in the local cache; run the record again")
        in_store_weights = where == "store" and record.get("weights") and store.weights_path(e["key"]).exists()
        cache_weights = cache_folder(cfg) / "model.pt"
        if where == "store" and e["needs_weights"] and not in_store_weights:
            cached = cache_folder(cfg) / "result.json"     # the store has its numbers, the cache its weights
            if not cached.exists():
                raise store.StoreError(f"run {e['key']} needs weights the store lacks; delete "
                                       f"{store.run_path(e['key'])} and record {chapter} again")
            record, where = store.read_record(cached), "cache"
        plan.append((e, record, where, cache_weights if where == "cache" and e["needs_weights"] else None))
    precisions = {r["provenance"]["precision"] for _, r, _, _ in plan}
    if len(precisions) > 1:                # a method and its baseline in different arithmetic
        mixed = ", ".join(f"{e['key']} ({r['provenance']['precision']})" for e, r, _, _ in plan
                          if r["provenance"]["precision"] != BOOK_PRECISION)
        raise store.StoreError(
            f"{chapter} would mix runs trained in {' and '.join(sorted(precisions))}: {mixed}. A "
            f"chapter compares runs trained in one precision; delete those runs from the local "
            f"cache ({store.runs_dir()}) and record again with {AUTO_PRECISION_ENV}={BOOK_PRECISION}")
    counts = {"recorded": 0, "kept": 0, "weights": 0}
    staged: list[tuple[Path, Path]] = []                 # (temporary file, final path), weights first
    try:
        for e, record, where, weights_src in plan:       # 1. new files under temporary names
            if where == "store":
                counts["kept"] += 1
                if record.get("weights") and not e["needs_weights"]:   # no chapter needs its weights now
                    staged.append(_stage_text(store.run_path(e["key"]), {**record, "weights": None}))
                continue
            record = {**record, "weights": None}
            if weights_src is not None:
                tmp = store.temporary_path(store.weights_path(e["key"]))
                digest = store.copy_atomic(weights_src, tmp)
                staged.insert(0, (tmp, store.weights_path(e["key"])))
                record["weights"] = {"file": store.weights_path(e["key"]).name, "sha256": digest,
                                     "dtype": str(store.WEIGHTS_DTYPE).replace("torch.", "")}
                counts["weights"] += 1
            staged.append(_stage_text(store.run_path(e["key"]), record))
            counts["recorded"] += 1
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    evidence = evidence or []
    try:
        staged_evidence, counts["evidence kept"] = stage_evidence(chapter, evidence)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    counts["evidence"] = len(staged_evidence)
    for tmp, final in staged + staged_evidence:          # 2. renamed into place
        tmp.replace(final)
    store.write_index(chapter, [{k: e[k] for k in ("key", "variant", "seed", "weights")} for e in entries],
                      [{k: e[k] for k in ("file", "name", "key")} for e in evidence])
    counts["removed"] = collect_garbage()                # 3. files no chapter uses any more
    return counts


def _stage_text(final: Path, record: dict[str, Any]) -> tuple[Path, Path]:
    tmp = store.temporary_path(final)
    store.write_text_atomic(tmp, store.dumps({**record, "sha256": store.checksum(record)}))
    return tmp, final


def collect_garbage() -> int:
    """Remove run records, weights and measurements that no chapter index uses (after an index was
    replaced)."""
    used, weights, evidence = set(), set(), set()
    for ch in store.indexed_chapters():
        for r in store.read_index(ch):
            used.add(r["key"])
            if r["weights"]:
                weights.add(r["key"])
        evidence |= {e["file"] for e in store.read_evidence_index(ch)}
    removed = 0
    for path in store.store_dir().glob("*.json"):
        if path.stem not in used:
            path.unlink()
            removed += 1
    for path in store.store_dir().glob("*.pt"):
        if path.stem not in weights:
            path.unlink()
            removed += 1
    for path in store.evidence_dir().glob("*.json"):
        if path.name not in evidence:
            path.unlink()
            removed += 1
    return removed


def record(chapter: str) -> None:
    """Train what the chapter needs, write it into the store, re-execute the chapter from the store."""
    if os.environ.get("CI"):
        raise SystemExit("recording the results store is refused under CI: CI verifies the store, "
                         "it never writes it (record on your machine with `make record CH=...` and commit)")
    precision = {AUTO_PRECISION_ENV: os.environ.get(AUTO_PRECISION_ENV) or BOOK_PRECISION}
    print(f"record {chapter}: training in {precision[AUTO_PRECISION_ENV]} (the book's runs are "
          f"{BOOK_PRECISION}, on any CPU; {AUTO_PRECISION_ENV} overrides)", flush=True)
    nb = notebook_path(chapter)
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(nb.with_suffix(".md"))], check=True,
                   cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    staging = cache_dir() / "record" / chapter
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    print(f"record {chapter}: 1/3 executing the chapter, training what the store lacks", flush=True)
    execute(nb, {"FGLIB_RECORD_DIR": str(staging), "FGLIB_STORE_ONLY": "0", "FGLIB_CHAPTER": chapter,
                 **precision}, output=staging / nb.name)   # the kernel and its workers inherit it
    entries, evidence = read_usage(staging), read_evidence_usage(staging)
    if not entries and not evidence and not store.chapter_index_path(chapter).exists():
        print(f"record {chapter}: the chapter trains and measures nothing; nothing to record", flush=True)
        shutil.rmtree(staging, ignore_errors=True)
        return
    print(f"record {chapter}: 2/3 writing {len(entries)} runs and {len(evidence)} measurements into "
          f"{store.store_dir()}", flush=True)
    counts = commit(chapter, entries, evidence)
    print(f"record {chapter}: 3/3 re-executing the chapter from the store", flush=True)
    execute(nb, {"FGLIB_STORE_ONLY": "1", "FGLIB_CHAPTER": chapter, **precision})
    shutil.rmtree(staging, ignore_errors=True)
    print(f"record {chapter}: {counts['recorded']} runs written ({counts['weights']} with weights), "
          f"{counts['kept']} unchanged, {counts['evidence']} measurements written "
          f"({counts['evidence kept']} unchanged), {counts['removed']} unused files removed; "
          f"store size {store.size_bytes() / 1e6:.1f} MB. Review `git status data/runs` and commit.")
