"""Data layer: a procedurally rendered fine-grained benchmark and CUB-format loaders.

Names are imported lazily so that `import fglib.data.synth` does not pull in torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SynthConfig": "fglib.data.synth",
    "generate": "fglib.data.synth",
    "render": "fglib.data.synth",
    "synthetic_benchmark": "fglib.data.synth",
    "CUBDataset": "fglib.data.cub",
    "NABirdsDataset": "fglib.data.cub",
    "CorruptImageError": "fglib.data.cub",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # import the defining module on first access (PEP 562)
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fglib.data' has no attribute {name!r}")
