"""One call at the top of every chapter: threads, seeds and plotting defaults.

Results must not depend on how many cores the machine has beyond the tolerance a chapter states,
so the number of torch threads is set explicitly (FGLIB_THREADS, default: all cores, at most 2 on CI).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Runtime:
    threads: int
    seed: int
    torch_version: str
    device: str

    def __str__(self) -> str:  # shown at the top of each chapter
        return f"fglib runtime: torch {self.torch_version}, device={self.device}, seed={self.seed}"


def _threads_from_env() -> int:
    raw = os.environ.get("FGLIB_THREADS", "").strip()
    if not raw:
        return max(1, min(os.cpu_count() or 1, 2 if os.environ.get("CI") else 64))
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"FGLIB_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"FGLIB_THREADS must be a positive integer, got {n}")
    return n


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_CHAPTER: str | None = None


def current_chapter() -> str | None:
    """The chapter being executed (set by setup(chapter=...)), for the store's messages and indexes."""
    return _CHAPTER or os.environ.get("FGLIB_CHAPTER") or None


def setup(seed: int = 0, threads: int | None = None, plots: bool = True, chapter: str | None = None) -> Runtime:
    """Set torch threads (argument, else FGLIB_THREADS), seed everything, style the plots.

    chapter names the chapter that is running: the results store lists the runs it uses under that
    name, and a missing run's error message names the command that records that chapter.
    """
    global _CHAPTER
    if chapter is not None:
        _CHAPTER = chapter
    n = threads if threads is not None else _threads_from_env()
    torch.set_num_threads(n)
    seed_everything(seed)
    if plots:
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # the thread count is not part of the printed line: outputs must not depend on the machine
    return Runtime(threads=n, seed=seed, torch_version=torch.__version__.split("+")[0], device=device)


def progress_enabled(progress: bool | None = None) -> bool:
    """Progress bars: on by default, off under CI or with FGLIB_PROGRESS=0 (as under `make test`)."""
    if progress is not None:
        return progress
    return not os.environ.get("CI") and os.environ.get("FGLIB_PROGRESS", "1") != "0"


def progress_bar(enabled: bool | None = None, **kwargs):
    """A tqdm bar (a widget in JupyterLab, text elsewhere), or a silent one when disabled."""
    if not progress_enabled(enabled):
        from tqdm.std import tqdm

        return tqdm(disable=True, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(**kwargs)
