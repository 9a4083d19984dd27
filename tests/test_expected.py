"""fglib.book.expected: the check that turns a moved result into a red test."""
import pandas as pd
import pytest

from fglib.book import expected
from fglib.book.expected import ResultMismatch, check


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FGLIB_UPDATE_EXPECTED", raising=False)
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "expected").mkdir()
    pd.DataFrame({"method": ["ce", "mc"], "metric": ["top1", "top1"], "value": [0.50, 0.60]}).to_csv(
        tmp_path / "expected" / "demo.csv", index=False)
    return tmp_path


def results(ce=0.50, mc=0.60):
    return pd.DataFrame({"method": ["ce", "mc"], "metric": ["top1", "top1"], "value": [ce, mc]})


def test_within_tolerance_passes(store):
    report = check("demo", results(0.504, 0.597), keys=["method", "metric"], tol=0.005)
    assert report.table["ok"].all()
    assert "all 2 values match" in repr(report)


def test_beyond_tolerance_fails_and_names_the_row(store):
    with pytest.raises(ResultMismatch, match="1 value") as err:
        check("demo", results(0.50, 0.62), keys=["method", "metric"], tol=0.005)
    assert "mc" in str(err.value)


def test_missing_and_new_rows_fail(store):
    extra = pd.concat([results(), pd.DataFrame({"method": ["api"], "metric": ["top1"], "value": [0.7]})])
    with pytest.raises(ResultMismatch, match="new"):
        check("demo", extra, keys=["method", "metric"], tol=0.1)
    with pytest.raises(ResultMismatch, match="missing"):
        check("demo", results().iloc[:1], keys=["method", "metric"], tol=0.1)


def test_per_metric_tolerance(store):
    check("demo", results(0.55, 0.60), keys=["method", "metric"], tol={"top1": 0.06})
    with pytest.raises(KeyError, match="no tolerance"):
        check("demo", results(), keys=["method", "metric"], tol={"top5": 0.06})


def test_missing_file_says_how_to_record_it(store):
    with pytest.raises(FileNotFoundError, match="FGLIB_UPDATE_EXPECTED=1"):
        check("nochapter", results(), keys=["method", "metric"], tol=0.1)


def test_duplicate_keys_are_refused(store):
    dup = pd.DataFrame({"method": ["ce", "ce"], "metric": ["top1", "top1"], "value": [0.5, 0.5]})
    with pytest.raises(ValueError, match="share the keys"):
        check("demo", dup, keys=["method", "metric"], tol=0.1)


def test_update_writes_and_is_refused_under_ci(store, monkeypatch):
    monkeypatch.setenv("FGLIB_UPDATE_EXPECTED", "1")
    report = check("demo", results(0.7, 0.8), keys=["method", "metric"], tol=0.005)
    assert report.updated
    assert pd.read_csv(expected.expected_path("demo"))["value"].tolist() == [0.7, 0.8]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="refused under CI"):
        check("demo", results(), keys=["method", "metric"], tol=0.005)
