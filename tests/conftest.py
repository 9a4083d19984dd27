"""Shared test settings: tests run single-threaded unless FGLIB_THREADS says otherwise."""
import os

import torch

torch.set_num_threads(int(os.environ.get("FGLIB_THREADS", "1")))

CHAPTER_BUDGET_S = 300        # each chapter should execute in 5 minutes on the 2-core CI machine


def pytest_terminal_summary(terminalreporter):
    """Print how long each chapter took under nbval (a measurement for the log, not a test)."""
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
