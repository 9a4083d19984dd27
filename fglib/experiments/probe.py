"""The probe of `store migrate` (fglib.experiments.migrate): a script, run in a subprocess inside one
source tree of fglib (an old commit's worktree or the current checkout), that imports *that* tree's
fglib and reports, for each configuration it is given, what a few training steps compute:

    python probe.py TREE JOB.json OUT.json

JOB.json: {"mode": "train", "keys": [...], "configs": [config dicts], "epochs": {key: epochs}}
          or {"mode": "fingerprints", "keys": [...], "configs": [...]}; results are keyed by the
          job's keys (the new code's), whatever key the probed tree computes.
OUT.json: per config key, the loss terms of every step (float.hex: every bit), the sha256 of the
final weights and of the logits on the first test images; or the config's code fingerprint under
that tree's code.

It is a script, not a module of the package: it reaches fglib only through `importlib`, by the
module names each layout of fglib has had (LAYOUTS), so that the same probe runs against code from
before and after a move. Nothing in fglib imports it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import sys
from pathlib import Path

# Where the probe's entry points lived, newest layout first.
LAYOUTS = (
    {"config": "fglib.core.config", "train": "fglib.engine.train", "runner": "fglib.experiments.runner"},
    {"config": "fglib.config", "train": "fglib.train", "provenance": "fglib.provenance"},
)
TEST_IMAGES = 32


def load_api(tree: Path) -> dict:
    """The tree's modules by role; refuses to run another tree's fglib."""
    # an editable install of another checkout (pip install -e) finds fglib's submodules that the
    # tree lacks in that checkout: only the tree may answer
    sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    here = str(Path(__file__).resolve().parent)          # this script's folder: not a source of fglib
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    sys.path.insert(0, str(tree))
    for layout in LAYOUTS:
        try:
            api = {role: importlib.import_module(name) for role, name in layout.items()}
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("fglib"):   # a missing package, not another layout
                raise
            continue
        for module in api.values():
            where = Path(module.__file__).resolve()
            if tree.resolve() not in where.parents:
                raise SystemExit(f"probe: imported {where}, not the fglib of {tree}")
        return api
    raise SystemExit(f"probe: no known fglib layout in {tree} (LAYOUTS in {__file__})")


def subset(train_set, cfg):
    """Three batches' worth of training images: for a class-balanced sampler the first images of up
    to 3 x classes_per_batch classes, as many of each as three batches need, else the first
    3 x batch_size images taken class by class in turn."""
    t, labels = cfg.train, train_set.labels
    by_class = [(labels == c).nonzero().flatten().tolist() for c in range(int(labels.max()) + 1)]
    by_class = [idx for idx in by_class if idx]
    if t.sampler == "balanced":
        classes = by_class[:3 * t.classes_per_batch]
        per = max(t.images_per_class, -(-3 * t.classes_per_batch * t.images_per_class // len(classes)))
        chosen = [i for idx in classes for i in idx[:per]]
    else:
        chosen, rank = [], 0
        while len(chosen) < 3 * t.batch_size and rank < max(map(len, by_class)):
            chosen += [idx[rank] for idx in by_class if rank < len(idx)]
            rank += 1
        chosen = chosen[:3 * t.batch_size]
    return select(train_set, sorted(chosen))


def select(data, index):
    import torch

    index = torch.tensor(index)
    return dataclasses.replace(data, images=data.images[index], labels=data.labels[index],
                               parts=None if data.parts is None else data.parts[index])


def digest(tensors) -> str:
    h = hashlib.sha256()
    for name, v in tensors:
        h.update(name.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def train_probe(api: dict, cfg, epochs: int, data_cache: dict) -> dict:
    import torch

    engine = api["train"]
    dkey = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True, default=list)
    if dkey not in data_cache:
        data_cache[dkey] = engine.load_data(cfg)
    train_set, test_set = data_cache[dkey]
    train_sub = subset(train_set, cfg)
    test_sub = select(test_set, list(range(min(TEST_IMAGES, len(test_set)))))
    kwargs = {"files": api["runner"].run_files(cfg)} if "runner" in api else {}
    result = engine.train(cfg, data=(train_sub, test_sub), progress=False, stop_after_epochs=epochs,
                          **kwargs)
    mean, std = result.normalisation
    logits = engine.predict(result.model, test_sub, mean, std)
    state = sorted(result.model.state_dict().items())
    return {"steps": [{k: (float(v).hex() if isinstance(v, float) else v) for k, v in row.items()}
                      for row in result.history],
            "weights": digest(state), "logits": digest([("logits", logits)]),
            "images": len(train_sub)}


def main(argv: list[str]) -> int:
    tree, job_path, out_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    api = load_api(tree)
    import torch

    torch.set_num_threads(1)                         # as every recorded run trained
    job = json.loads(job_path.read_text())
    RunConfig = api["config"].RunConfig
    out, data_cache = {}, {}
    for key, d in zip(job["keys"], job["configs"]):
        cfg = RunConfig.from_dict(d)
        if job["mode"] == "fingerprints":
            out[key] = (api["runner"].run_fingerprint(cfg) if "runner" in api
                        else api["provenance"].code_fingerprint(cfg))
        else:
            try:
                out[key] = train_probe(api, cfg, job["epochs"][key], data_cache)
            except Exception as e:                   # reported, so that one config cannot hide the rest
                out[key] = {"error": f"{type(e).__name__}: {e}"}
        print(f"probe {tree.name}: {key} done", file=sys.stderr, flush=True)
    out_path.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
