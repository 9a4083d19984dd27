"""Where things live: the repository root, data/, the local cache, the expected results."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = REPO_ROOT / "data" / "cache"


def data_dir() -> Path:
    """The data/ folder (override with FGLIB_DATA_DIR)."""
    return Path(os.environ.get("FGLIB_DATA_DIR", REPO_ROOT / "data"))


def cache_dir() -> Path:
    """The local cache (generated benchmarks, run caches): $FGLIB_DATA_CACHE if set, else
    <repo>/data/cache."""
    return Path(os.environ.get("FGLIB_DATA_CACHE") or DEFAULT_CACHE_DIR)


def expected_dir() -> Path:
    """Where chapters keep the results they must reproduce: data/expected/<chapter>.csv."""
    return data_dir() / "expected"

