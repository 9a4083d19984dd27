"""tests/nbval_sanitize.cfg, read and applied as nbval applies it: nbval reads the file with its
own parser (nbval.plugin.get_sanitize_patterns: a "regex: " line followed by a "replace: "
line) and, on every string of a cell's outputs, calls re.sub(regex, replace, s) for each pattern
in file order (nbval.plugin.IPyNbCell.sanitize). What must be masked is, and nothing else, in
particular no number of a result table."""
import configparser
import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

CFG = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
PATTERNS = get_sanitize_patterns(CFG.read_text())
BAR = " 45%|████▌     | 9/20 [00:12<00:30,  1.5s/it]"


def sections() -> dict[str, tuple[str, str]]:
    """The file as an INI file (configparser, no interpolation): {section: (regex, replace)}."""
    parser = configparser.RawConfigParser()
    parser.read(CFG)
    assert all(set(parser[s]) == {"regex", "replace"} for s in parser.sections())
    return {s: (parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()}


SECTIONS = sections()
ADDRESS, DURATION, TIMES, THROUGHPUT, BARS, WARNINGS = SECTIONS


def sanitize(s: str) -> str:
    for regex, replace in PATTERNS:
        s = re.sub(regex, replace, s)
    return s


def only(section: str, s: str) -> str:
    regex, replace = SECTIONS[section]
    return re.sub(regex, replace, s)


def test_nbval_reads_every_section_of_the_file():
    """nbval's parser silently skips a section it cannot read (a value on two lines, no space
    after the colon): it must find exactly the sections configparser finds, in order."""
    assert PATTERNS == list(SECTIONS.values())
    assert [r for _, r in PATTERNS] == ["0xADDRESS", "DURATION", "DURATION", "THROUGHPUT",
                                        "PROGRESS", "WARNING"]


# One group per pattern: (text, what the pattern alone makes of it).
@pytest.mark.parametrize("section,text,masked", [
    (ADDRESS, "<object at 0x7f3a2b1c9d80>", "<object at 0xADDRESS>"),
    (DURATION, "trained in 12.3 s", "trained in DURATION"),
    (DURATION, "1.5s/it", "DURATION"),
    (DURATION, "a step takes 250 ms, a run 3 min", "a step takes DURATION, a run DURATION"),
    (DURATION, "it took 12.3 s.", "it took DURATION."),
    (DURATION, "(30 s)\n2s", "(DURATION)\nDURATION"),
    (TIMES, "00:12<00:30", "DURATION"),
    (TIMES, "[1:02:03<?, 2.1it/s]", "[DURATION, 2.1it/s]"),
    (THROUGHPUT, "300 img/s and 4.5it/s", "THROUGHPUT and THROUGHPUT"),
    (THROUGHPUT, "120 images/s", "THROUGHPUT"),
    (BARS, BAR, " PROGRESS"),
    (BARS, "train: 100%|##########| 20/20 [00:03<00:00,  6.02it/s]", "train: PROGRESS"),
    (BARS, " 45%|####5     | 9/20 [00:12<00:30]", " PROGRESS"),                  # ascii, no rate
    (BARS, "100%|██████████| 20/20 [00:03<00:00]\nnext", "PROGRESS\nnext"),
    (BARS, "  7%|▋         | 1.4k/20.0k [00:01<00:18, 1.02kit/s]", "  PROGRESS"),
    (WARNINGS, "x.py:3: UserWarning: 2 threads\n  warn()", "WARNING\n  warn()"),
])
def test_each_pattern_masks_what_it_must(section, text, masked):
    assert only(section, text) == masked


@pytest.mark.parametrize("text,masked", [
    ("trained in 12.3 s", "trained in DURATION"),
    ("it took 12.3 s.", "it took DURATION."),
    ("300 img/s and 4.5it/s", "THROUGHPUT and THROUGHPUT"),
    (BAR, " PROGRESS"),
    ("train: 100%|##########| 20/20 [00:03<00:00,  6.02it/s]", "train: PROGRESS"),
    (" 45%|####5     | 9/20 [00:12<00:30]", " PROGRESS"),
    ("elapsed 00:12<00:30 so far", "elapsed DURATION so far"),
])
def test_the_whole_file_masks_what_varies_between_machines(text, masked):
    assert sanitize(text) == masked


NEVER = [
    # a pandas describe() table: a number, a line break, the next row's label "min"
    "count  5.00000\nmean   81.0400\nstd    0.65192\nmin   80.2000\n25%   80.6000",
    "std 0.65192\nmin",
    "the difference is 1.2 ± 0.3 (5 s.e. of the baseline)",          # not "5 s"
    "5 s.e.",
    "5 seeds, 3 steps, 2 samples per class, 3 minutes",              # units inside words
    "row      | 81.0%| 70.2 | 3/4",                                   # a table cell, not a bar
    "| CIN | 81.0%|   1.2 |",
    "| MAMC | 81.0%| 9/20 [a] |",                                     # a cell with a fraction
    "| RRA | 100%| 70.2 | 3/4 [x] |",
    "resnet50s and 12 ms2 and 1.5sec",                                # inside words
    "0.5s.e. and 4.5 it/sec",
    "seed 12:30 and 1:2<3 and 00:12<00:30x",                          # not tqdm's times
]


@pytest.mark.parametrize("section", list(SECTIONS), ids=lambda s: s.split()[0].strip(",'"))
@pytest.mark.parametrize("text", NEVER)
def test_no_pattern_masks_a_result(section, text):
    assert only(section, text) == text


@pytest.mark.parametrize("text", NEVER)
def test_the_whole_file_keeps_results(text):
    assert sanitize(text) == text
