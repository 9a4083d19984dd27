"""Shared test settings: tests run single-threaded unless FGLIB_THREADS says otherwise."""
import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("FGLIB_THREADS", "1")))

CHAPTER_BUDGET_S = 30         # each chapter should execute from the store in 30 s on the 2-core CI machine


# A store-sized run that trains in a second: the tiny stores of test_store.py and test_measured.py.
TINY = {"data.image_size": 32, "data.synth": {"num_classes": 4, "images_per_class": 8, "families": 2},
        "model.widths": (8, 16), "model.blocks": (1, 1), "train.epochs": 1, "train.batch_size": 8}


@pytest.fixture
def isolated_data(tmp_path, monkeypatch):
    """A store (tmp/data) and a cache (tmp/cache) of the test's own, trained on one worker."""
    monkeypatch.setenv("FGLIB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FGLIB_WORKERS", "1")
    return tmp_path


# Filled by tests/test_store.py's verification of the results store; printed at the end of the run.
VERIFIED: list = []


@pytest.fixture(autouse=True)
def _unit_tests_may_train(monkeypatch):
    """`make test` sets FGLIB_STORE_ONLY=1 for the chapters; unit tests train tiny runs of their own."""
    for name in ("FGLIB_STORE_ONLY", "FGLIB_RECORD_DIR", "FGLIB_CHAPTER"):
        monkeypatch.delenv(name, raising=False)


def pytest_terminal_summary(terminalreporter):
    """Print what the store verification re-trained, and each chapter's time (measurements, not tests)."""
    import pandas as pd

    for table in VERIFIED:
        terminalreporter.section(table.attrs.get("title", "results store: runs re-trained and compared"))
        for line in table.attrs.get("header", []):
            terminalreporter.write_line(line)
        with pd.option_context("display.width", 250, "display.max_colwidth", 90):
            terminalreporter.write_line(table.drop(columns=["key"], errors="ignore").to_string(index=False))
    _chapter_times(terminalreporter)


def _chapter_times(terminalreporter):
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for r in reports:
            path = getattr(r, "nodeid", "").split("::")[0]
            if path.endswith(".ipynb"):
                seconds[path] = seconds.get(path, 0.0) + getattr(r, "duration", 0.0)
    if not seconds:
        return
    terminalreporter.section("chapter execution times")
    for path, s in sorted(seconds.items()):
        note = f"  over the {CHAPTER_BUDGET_S} s budget" if s > CHAPTER_BUDGET_S else ""
        terminalreporter.write_line(f"{s:7.1f} s  {path}{note}")
    terminalreporter.write_line(f"{sum(seconds.values()):7.1f} s  all chapters")
