"""Which runs and measurements a chapter uses, noted while `make record` executes it.

`note_usage` appends one JSON line per run a chapter asks for (with the runs it starts from: the
pretraining run, RRA's proposal network) to $FGLIB_RECORD_DIR/usage.jsonl; fglib.experiments.record
reads the lines back and writes those runs into the results store. Outside a recording it does nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fglib.core.config import RunConfig
from fglib.experiments import store
from fglib.experiments.pretraining import pretraining_config


def note_usage(cfg: RunConfig, variant: str | None = None, seed: int | None = None, weights: bool = False) -> None:
    """While a chapter is being recorded, note that it uses cfg's run (one JSON line per call)."""
    folder = os.environ.get("FGLIB_RECORD_DIR")
    if not folder:
        return
    line = {"key": cfg.key(), "variant": variant, "seed": seed if seed is not None else cfg.train.seed,
            "weights": weights, "config": cfg.to_dict()}
    with open(Path(folder) / "usage.jsonl", "a") as f:
        f.write(json.dumps(line, default=list) + "\n")
    m = cfg.model
    if m.backbone == "small_resnet" and m.pretrained and m.weights_path is None:   # a fine-tuned run
        note_usage(pretraining_config(m.widths, m.blocks), variant="pretraining run", seed=0, weights=True)
    cam_run = (m.options or {}).get("cam_run")
    if cam_run:                                  # RRA's frozen proposal network: that run's weights
        note_usage(RunConfig.from_dict(store.config_of(cam_run)), weights=True)


def read_usage(folder: Path) -> list[dict[str, Any]]:
    """The runs a recording noted, merged by key in order of first use: variant, seed, weights."""
    path = folder / "usage.jsonl"
    merged: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        u = json.loads(line)
        entry = merged.setdefault(u["key"], {"key": u["key"], "variant": None, "seed": u["seed"],
                                             "weights": False, "config": u["config"]})
        if entry["variant"] is None and u["variant"] is not None:
            entry["variant"], entry["seed"] = u["variant"], u["seed"]
        entry["weights"] = entry["weights"] or u["weights"]
    return list(merged.values())


def read_evidence_usage(folder: Path) -> list[dict[str, Any]]:
    """The measurements a recording noted (fglib.experiments.measured.note), in order of first use."""
    path = folder / "evidence.jsonl"
    if not path.exists():
        return []
    merged: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        merged.setdefault(e["file"], e)
    return list(merged.values())
