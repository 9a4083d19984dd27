"""Moving code without re-training: `python -m fglib store migrate --from OLD`.

A run's code fingerprint hashes fglib's source module by module (fglib.experiments.provenance), so a
refactor that moves or renames code makes every stored run stale although no number would change,
and re-training ~300 runs takes most of a day on two cores. This command proves instead, on this
machine, that the refactor left each training computation bit for bit the same, and only then
carries the runs over to the new code's fingerprints:

1. OLD (the commit the store was recorded with) is checked out into a temporary git worktree; the new
   code is HEAD, and fglib/ must be committed (the note names both commits).
2. The stored runs that are stale under HEAD are kept only if they are fresh under OLD: their
   fingerprints computed by OLD's own code (fglib.experiments.probe, in a subprocess).
3. For each distinct configuration among them (the seed aside: it changes numbers, not code paths),
   the probe trains a few steps in OLD's tree and in HEAD's, in separate processes on one thread, in
   the precision the runs were recorded in, from the same config, initial and saved weights, on the
   same first images of each class, each tree generating its own data in its own cache.
4. Accepted only when every loss term of every step, the final weights and the logits on the first
   test images are identical in every bit (`compare_probes`); anything else refuses the runs of that
   configuration, which stay stale (`make record` re-trains them).
5. Each accepted run's record gets the new fingerprint and module hashes and a provenance note
   {"from": OLD, "to": HEAD, "check": ...}; the weights they start from must hash as before.

Same machine, same torch: no CPU-kind question enters. Stored measurements (fglib.experiments.measured)
are not carried over: they are re-computed from the carried runs by `make record`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fglib.core.config import RunConfig
from fglib.core.hardware import AUTO_PRECISION_ENV, cpu_kind
from fglib.core.paths import REPO_ROOT
from fglib.core.runtime import progress_bar
from fglib.experiments import store
from fglib.experiments.pretraining import pretraining_config
from fglib.experiments.record import store_lock
from fglib.experiments.runner import run_fingerprint, run_modules

PROBE = Path(__file__).with_name("probe.py")


@dataclass
class Verdict:
    """The probe's comparison of one configuration in two trees."""

    key: str
    method: str
    accepted: bool
    why: str
    steps: int = 0
    runs: list[str] = field(default_factory=list)


def git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def probe_config(cfg: RunConfig) -> RunConfig:
    """cfg as the probe trains it in both trees: a pre-trained small_resnet gets the stored weights
    of the book's pretraining run as model.weights_path (each tree would otherwise resolve them
    through its own fingerprints, which differ by construction)."""
    m = cfg.model
    if m.backbone == "small_resnet" and m.pretrained and m.weights_path is None:
        path = store.weights_path(pretraining_config(m.widths, m.blocks).key())
        if not path.exists():
            raise store.StoreError(f"{path} (the pretraining run's weights) is not in the store")
        return cfg.override(**{"model.weights_path": str(path)})
    return cfg


def probe_epochs(cfg: RunConfig) -> int:
    """One epoch past the frozen-backbone phase, so that both phases are exercised."""
    return min(cfg.train.epochs, cfg.train.freeze_backbone_epochs + 1)


def run_probe(tree: Path, job: dict[str, Any], env: dict[str, str], label: str,
              progress: bool | None = False) -> dict[str, Any]:
    """Run fglib.experiments.probe in `tree` (a subprocess) on `job`; its output by config key."""
    with tempfile.TemporaryDirectory(prefix=f"fglib-probe-{label}-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job, default=list))
        proc = subprocess.Popen([sys.executable, str(PROBE), str(tree), str(job_path), str(out_path)],
                                env={**os.environ, **env}, stderr=subprocess.PIPE, text=True,
                                cwd=tree)
        bar = progress_bar(progress, total=len(job["configs"]), desc=f"probe {label}", unit="config")
        tail = []
        try:
            for line in proc.stderr:
                if line.startswith("probe "):
                    bar.update(1)
                else:
                    tail = (tail + [line])[-30:]
        finally:                                       # interrupted: the probe stops too
            bar.close()
            if proc.poll() is None:
                proc.kill()
        if proc.wait() != 0:
            raise RuntimeError(f"the probe failed in {tree} ({label}):\n" + "".join(tail))
        return json.loads(out_path.read_text())


def compare_probes(old: dict[str, Any], new: dict[str, Any]) -> tuple[bool, str, int]:
    """(identical, why, steps) for one configuration's probe output in two trees."""
    for side, out in (("old", old), ("new", new)):
        if "error" in out:
            return False, f"{side} code failed: {out['error']}", 0
    a, b = old["steps"], new["steps"]
    if len(a) != len(b):
        return False, f"{len(a)} training steps with the old code, {len(b)} with the new", 0
    for i, (ra, rb) in enumerate(zip(a, b)):
        if ra != rb:
            terms = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            return False, f"step {i} differs in {', '.join(terms)}", len(a)
    if old["weights"] != new["weights"]:
        return False, "identical losses but different final weights", len(a)
    if old["logits"] != new["logits"]:
        return False, "identical weights but different test logits", len(a)
    return True, f"bit-identical loss terms over {len(a)} steps, final weights and test logits", len(a)


def compare_trees(old_tree: Path, new_tree: Path, cfgs: list[RunConfig], precision: str = "float32",
                  data_cache: Path | None = None, progress: bool | None = False) -> dict[str, tuple]:
    """{probe config key: compare_probes(...)} for cfgs trained a few steps in each tree."""
    probes = [probe_config(c) for c in cfgs]
    job = {"mode": "train", "keys": [c.key() for c in probes], "configs": [c.portable_dict() for c in probes],
           "epochs": {c.key(): probe_epochs(c) for c in probes}}
    with tempfile.TemporaryDirectory(prefix="fglib-migrate-data-", dir=data_cache) as tmp:
        outs = {}
        for label, tree in (("old", old_tree), ("new", new_tree)):
            env = {AUTO_PRECISION_ENV: precision, "FGLIB_DATA_DIR": str(store.store_dir().parent),
                   "FGLIB_DATA_CACHE": str(Path(tmp) / label), "FGLIB_PROGRESS": "0",
                   "FGLIB_STORE_ONLY": "1", "FGLIB_THREADS": "1"}
            outs[label] = run_probe(tree, job, env, label, progress)
    return {c.key(): compare_probes(outs["old"][c.key()], outs["new"][c.key()]) for c in probes}


def old_fingerprints(old_tree: Path, cfgs: list[RunConfig]) -> dict[str, str]:
    """{key: fingerprint} of cfgs under the old tree's code (read against this store)."""
    env = {"FGLIB_DATA_DIR": str(store.store_dir().parent), "FGLIB_PROGRESS": "0"}
    job = {"mode": "fingerprints", "keys": [c.key() for c in cfgs], "configs": [c.portable_dict() for c in cfgs]}
    return run_probe(old_tree, job, env, "old fingerprints")


def seedless(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d["train"].pop("seed", None)
    return json.dumps(d, sort_keys=True, default=list)


def stale_records() -> list[dict[str, Any]]:
    """The store's run records whose fingerprint is not the current code's."""
    out = []
    for path in sorted(store.store_dir().glob("*.json")):
        record = store.read_record(path)
        if record["fingerprint"] != run_fingerprint(RunConfig.from_dict(record["config"])):
            out.append(record)
    return out


def rewrite(probed: dict[str, Any], note: dict[str, Any]) -> str | None:
    """Carry one record over to the current code's fingerprint; the reason when it cannot be.
    The record is read again (under the store's lock, held by the caller): one that changed since it
    was probed (a concurrent `make record`) is left alone."""
    record = store.read_record(store.run_path(probed["key"]))
    if record["sha256"] != probed["sha256"]:
        return "its record changed while it was probed; run store migrate again"
    cfg = RunConfig.from_dict(record["config"])
    modules = run_modules(cfg)
    before = record["modules"].get("initial weights")
    if before != modules.get("initial weights"):
        return (f"the weights it starts from hash {modules.get('initial weights')} now, "
                f"{before} when it was recorded")
    record = {**record, "fingerprint": run_fingerprint(cfg), "modules": modules,
              "provenance": {**record["provenance"],
                             "migrated": [*record["provenance"].get("migrated", []), note]}}
    store.write_record(store.run_path(record["key"]), record)
    return None


def migrate(old: str, new: str = "HEAD", dry_run: bool = False,
            progress: bool | None = True) -> list[Verdict]:
    """Probe every configuration of the runs stale under `new` and fresh under `old`, and carry the
    accepted runs over (not with dry_run). `new` must be the checked-out, committed code."""
    try:
        old_sha, new_sha = git("rev-parse", "--verify", f"{old}^{{commit}}"), git("rev-parse", "HEAD")
        named_new = git("rev-parse", "--verify", f"{new}^{{commit}}")
    except subprocess.CalledProcessError as e:
        raise ValueError(f"not a commit of this repository: {e.stderr.strip() or e}") from None
    if named_new != new_sha:
        raise ValueError(f"{new} is not the checked-out commit (HEAD {new_sha[:12]}): check it out first")
    if git("status", "--porcelain", "--", "fglib"):
        raise ValueError("fglib/ has uncommitted changes: commit the refactor first, so that the note "
                         "names the code that was checked")
    stale = stale_records()
    if not stale:
        print("migrate: no stale runs in the store; nothing to do")
        return []
    tmp = Path(tempfile.mkdtemp(prefix="fglib-old-"))
    tree = tmp / "tree"
    try:
        git("worktree", "add", "--detach", str(tree), old_sha)
        cfgs = {r["key"]: RunConfig.from_dict(r["config"]) for r in stale}
        old_fp = old_fingerprints(tree, list(cfgs.values()))
        verdicts: list[Verdict] = []
        fresh_at_old = [r for r in stale if old_fp.get(r["key"]) == r["fingerprint"]]
        for r in stale:
            if r not in fresh_at_old:
                verdicts.append(Verdict(r["key"], r["config"]["model"]["method"], False,
                                        f"not recorded with {old_sha[:12]}'s code either", runs=[r["key"]]))
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in fresh_at_old:
            precision = r["provenance"]["precision"]
            groups.setdefault((precision, seedless(cfgs[r["key"]])), []).append(r)
        by_precision: dict[str, list[list[dict[str, Any]]]] = {}
        for (precision, _), rs in groups.items():
            by_precision.setdefault(precision, []).append(rs)
        for precision, group_list in by_precision.items():
            firsts = [cfgs[rs[0]["key"]] for rs in group_list]
            results = compare_trees(tree, REPO_ROOT, firsts, precision, progress=progress)
            for rs, c in zip(group_list, firsts):
                ok, why, steps = results[probe_config(c).key()]
                verdicts.append(Verdict(c.key(), c.model.method, ok, why, steps, [r["key"] for r in rs]))
    finally:                                           # never masks the error that got here
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT,
                       capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO_ROOT, capture_output=True, check=False)
    if dry_run:
        return verdicts
    note = {"from": old_sha, "to": new_sha, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_kind": cpu_kind()["id"]}
    accepted = {k: v for v in verdicts if v.accepted for k in v.runs}
    records = {r["key"]: r for r in stale if r["key"] in accepted}
    # the pretraining runs first: the fingerprints of the runs that start from their weights need them
    order = sorted(records, key=lambda k: records[k]["config"]["data"]["name"] != "pretrain")
    refused = []
    with store_lock():
        for key in order:
            v = accepted[key]
            why = rewrite(records[key], {**note, "check": f"{v.why} (probe of config {v.key})"})
            if why is not None:                        # its group's other runs are carried over
                v.runs.remove(key)
                refused.append(Verdict(key, v.method, False, why, v.steps, [key]))
    return verdicts + refused
