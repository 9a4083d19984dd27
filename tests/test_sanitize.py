"""tests/nbval_sanitize.cfg, read and applied as nbval applies it (its own parser, re.sub per
pattern in file order): what must be masked is, and nothing else, in particular no number of a
result table."""
import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

CFG = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
PATTERNS = get_sanitize_patterns(CFG.read_text())
BAR = " 45%|████▌     | 9/20 [00:12<00:30,  1.5s/it]"


def sanitize(s: str) -> str:
    for regex, replace in PATTERNS:
        s = re.sub(regex, replace, s)
    return s


def test_every_pattern_of_the_file_is_read():
    assert [r for _, r in PATTERNS] == ["0xADDRESS", "DURATION", "THROUGHPUT", "PROGRESS",
                                        "WARNING"]


@pytest.mark.parametrize("text,masked", [
    ("trained in 12.3 s", "trained in DURATION"),
    ("1.5s/it", "DURATION"),
    ("a step takes 250 ms, a run 3 min", "a step takes DURATION, a run DURATION"),
    ("it took 12.3 s.", "it took DURATION."),
    ("(30 s)", "(DURATION)"),
    ("300 img/s and 4.5it/s", "THROUGHPUT and THROUGHPUT"),
    ("<object at 0x7f3a2b1c9d80>", "<object at 0xADDRESS>"),
    (BAR, " PROGRESS"),
    ("train: 100%|##########| 20/20 [00:03<00:00,  6.02it/s]", "train: PROGRESS"),
    ("  7%|▋         | 1.4k/20.0k [00:01<00:18, 1.02kit/s]", "  PROGRESS"),
    ("x.py:3: UserWarning: 2 threads\n  warn()", "WARNING\n  warn()"),
])
def test_what_varies_between_machines_is_masked(text, masked):
    assert sanitize(text) == masked


@pytest.mark.parametrize("text", [
    # a pandas describe() table: a number, a line break, the next row's label "min"
    "count  5.00000\nmean   81.0400\nstd    0.65192\nmin   80.2000\n25%   80.6000",
    "the difference is 1.2 ± 0.3 (5 s.e. of the baseline)",          # not "5 s"
    "5 seeds, 3 steps, 2 samples per class",                          # units inside words
    "row      | 81.0%| 70.2 | 3/4",                                   # a table cell, not a bar
    "| CIN | 81.0%|   1.2 |",
    "resnet50s and 12 ms2",                                            # inside words
])
def test_results_are_never_masked(text):
    assert sanitize(text) == text
