"""Where things live: the repository root, data/, the expected results."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The data/ folder (override with FGLIB_DATA_DIR)."""
    return Path(os.environ.get("FGLIB_DATA_DIR", REPO_ROOT / "data"))


def expected_dir() -> Path:
    """Where chapters keep the results they must reproduce: data/expected/<chapter>.csv."""
    return data_dir() / "expected"
