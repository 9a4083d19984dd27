"""Measurements stored like runs (fglib.experiments.measured): keys, fingerprints, the store, stale and edited
values, verification by re-computing; and the committed store's measurements."""
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from fglib.experiments import measured, record, store, verify
from fglib.book.chapters.common import stored_weights_top1
from fglib.book.chapters.pretraining import linear_probe_top1
from fglib.core.config import book_profile
from fglib.experiments.measured import measure

from conftest import TINY, VERIFIED



@pytest.fixture
def measured_store(isolated_data, monkeypatch):
    """A store with chapter 'demo': two tiny runs with weights and one measurement on them."""
    tmp_path = isolated_data
    base = book_profile(**TINY)
    runs = {"seed 0": base, "seed 1": base.override(**{"train.seed": 1})}
    folder = tmp_path / "recording"
    folder.mkdir()
    monkeypatch.setenv("FGLIB_RECORD_DIR", str(folder))
    value = measure(stored_weights_top1, runs)
    monkeypatch.delenv("FGLIB_RECORD_DIR")
    counts = record.commit("demo", record.read_usage(folder), record.read_evidence_usage(folder))
    assert counts["evidence"] == 1 and counts["weights"] == 2
    shutil.rmtree(tmp_path / "cache" / "runs")                   # a fresh clone: only the store
    shutil.rmtree(tmp_path / "cache" / "evidence")
    return runs, value


def rewrite(path, rec):
    """Write an altered record as the record command would (checksums updated): a plausible file."""
    rec = {**rec, "value_sha256": measured.value_checksum(rec["value"])}
    store.write_text_atomic(path, store.dumps({**rec, "sha256": store.checksum(rec)}, sort_keys=False))


def only_file():
    files = list(store.evidence_dir().glob("*.json"))
    assert len(files) == 1
    return files[0]


# -- values -----------------------------------------------------------------------------------------------

def test_values_round_trip_exactly():
    value = {"a": 1.0 / 3, "n": 7, "s": "text", "nan": math.nan, "list": [1, 2.5, None, True],
             "f32": torch.randn(3, 4), "f64": torch.randn(2, dtype=torch.float64),
             "i": torch.arange(5), "frame": pd.DataFrame({"x": ["p", "q"], "y": [0.1, math.nan]})}
    back = measured.decode(json.loads(json.dumps(measured.encode(value))))
    assert back["a"] == value["a"] and back["n"] == 7 and back["list"] == [1, 2.5, None, True]
    assert math.isnan(back["nan"])
    for k in ("f32", "f64", "i"):
        assert back[k].dtype == value[k].dtype and torch.equal(back[k], value[k])
    pd.testing.assert_frame_equal(back["frame"], value["frame"])


def test_a_stored_value_keeps_the_order_of_its_dicts(measured_store):
    path = only_file()
    rec = store.read_record(path)
    rec["value"] = measured.encode({"zeta": 1, "alpha": {"y": 2, "b": 3}})
    rewrite(path, rec)
    value = measured.decode(measured.read(path)["value"])
    assert list(value) == ["zeta", "alpha"] and list(value["alpha"]) == ["y", "b"]
    rec = measured.read(path)
    rec["value"] = {"alpha": rec["value"]["alpha"], "zeta": 1}          # reordered by hand
    store.write_text_atomic(path, store.dumps({**rec, "sha256": store.checksum(rec)}, sort_keys=False))
    with pytest.raises(store.StoreError, match="order of its value"):
        measured.read(path)


def test_values_that_cannot_be_stored_say_what_to_do():
    with pytest.raises(TypeError, match="flat frames"):
        measured.encode(pd.DataFrame({"x": [1]}).set_index("x", append=True))
    with pytest.raises(TypeError, match="cannot store a set"):
        measured.encode({"s": {1, 2}})


def test_only_decorated_fglib_functions_are_measurements():
    def local(runs):
        return 1
    with pytest.raises(TypeError, match="not a measurement"):
        measure(local, book_profile())
    local.measurement = measured.Spec(0.0, "test")
    with pytest.raises(TypeError, match="outside fglib"):
        measure(local, book_profile())
    with pytest.raises(TypeError, match="plain JSON"):
        measure(linear_probe_top1, book_profile(), kappa=object())
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        measure(stored_weights_top1, book_profile(), x=1)


def test_the_key_covers_function_runs_and_arguments():
    base = book_profile()
    m = measured.Measurement(stored_weights_top1, {"r": base}, {})
    assert m.key != measured.Measurement(stored_weights_top1, {"r": base.override(**{"train.seed": 1})}, {}).key
    assert m.key != measured.Measurement(stored_weights_top1, {"other label": base}, {}).key
    assert m.key != measured.Measurement(stored_weights_top1, {"r": base}, {"x": 1}).key
    assert m.key == measured.Measurement(stored_weights_top1, {"r": book_profile()}, {}).key
    defaults = measured.bound_args(linear_probe_top1, {})                  # defaults are part of the key
    assert defaults == measured.bound_args(linear_probe_top1, {"kappa": 1e-4}) == {"kappa": 1e-4, "steps": 2000}
    assert defaults != measured.bound_args(linear_probe_top1, {"steps": 100})


def test_the_fingerprint_covers_the_measurement_code_but_not_the_plumbing():
    mods = measured.code_modules("fglib.book.chapters.common")
    assert {"fglib.book.chapters.common", "fglib.book.evidence", "fglib.engine.train"} <= set(mods)
    assert not {"fglib.experiments.runner", "fglib.experiments.store", "fglib.experiments.record", "fglib.experiments.measured"} & set(mods)


# -- the store ----------------------------------------------------------------------------------------------

def test_a_stored_measurement_is_read_without_computing(measured_store, monkeypatch):
    runs, value = measured_store
    monkeypatch.setenv("FGLIB_STORE_ONLY", "1")
    monkeypatch.setattr(measured, "compute", lambda m: pytest.fail("computed a stored measurement"))
    assert measure(stored_weights_top1, runs) == value
    assert all(0 <= v <= 100 for v in value.values()) and set(value) == {"seed 0", "seed 1"}
    assert store.read_evidence_index("demo")[0]["file"] == only_file().name


def test_a_measurement_is_computed_once_then_read_from_the_cache(measured_store, monkeypatch):
    runs, value = measured_store
    calls = []
    real = measured.compute
    monkeypatch.setattr(measured, "compute", lambda m: calls.append(1) or real(m))
    other = {"seed 1": runs["seed 1"]}                            # not in the store
    first = measure(stored_weights_top1, other)
    assert measure(stored_weights_top1, other) == first and len(calls) == 1
    assert first["seed 1"] == value["seed 1"]                      # the same computation, same number


def test_a_stale_measurement_is_an_error_naming_the_change_and_the_command(measured_store, monkeypatch):
    runs, _ = measured_store
    monkeypatch.setenv("FGLIB_STORE_ONLY", "1")
    real = measured.code_modules
    monkeypatch.setattr(measured, "code_modules", lambda m: {**real(m), "fglib.book.evidence": "edited"})
    from fglib.core import runtime
    monkeypatch.setattr(runtime, "_CHAPTER", "demo")
    with pytest.raises(measured.StaleEvidenceError) as err:
        measure(stored_weights_top1, runs)
    msg = str(err.value)
    assert "fglib.book.evidence" in msg and "make record CH=demo" in msg and "stored_weights_top1" in msg


def test_a_missing_measurement_under_store_only_names_the_command(measured_store, monkeypatch):
    runs, _ = measured_store
    monkeypatch.setenv("FGLIB_STORE_ONLY", "1")
    with pytest.raises(measured.StaleEvidenceError, match="not in the store.*make record"):
        measure(stored_weights_top1, {"only seed 1": runs["seed 1"]})


def test_a_hand_edited_measurement_is_refused(measured_store):
    runs, value = measured_store
    path = only_file()
    rec = json.loads(path.read_text())
    rec["value"]["seed 0"] = 99.9
    path.write_text(json.dumps(rec))
    with pytest.raises(store.StoreError, match="edited by hand or is corrupted.*git checkout"):
        measure(stored_weights_top1, runs)
    path.write_text("{ not json")
    with pytest.raises(store.StoreError, match="not a readable"):
        measure(stored_weights_top1, runs)


def test_unused_measurements_are_collected_when_the_index_changes(measured_store):
    runs, _ = measured_store
    entries = store.read_index("demo")
    record.commit("demo", [{**e, "config": runs["seed 0" if e["seed"] == 0 else "seed 1"].to_dict()}
                           for e in entries], evidence=[])
    assert not list(store.evidence_dir().glob("*.json"))


# -- verification ---------------------------------------------------------------------------------------

def test_verification_on_the_same_kind_is_exact_and_catches_an_altered_value(measured_store):
    table = measured.verify([("demo", only_file().name)])
    assert table.ok.all() and table["max |diff|"].iloc[0] == 0.0
    path = only_file()
    rec = store.read_record(path)
    rec["value"]["seed 0"] += 1e-9                                  # re-checksummed: a plausible record
    rewrite(path, rec)
    assert not measured.verify([("demo", path.name)]).ok.any()


def test_verification_on_another_kind_uses_the_stated_tolerance(measured_store, monkeypatch):
    path = only_file()
    rec = store.read_record(path)
    rec["provenance"]["cpu_kind"] = "another kind"
    rec["value"]["seed 0"] += 0.5 * rec["tolerance"]["abs"]
    rewrite(path, rec)
    row = measured.verify([("demo", path.name)]).iloc[0]
    assert row.ok and "other CPU kind" in row.rule and row.tol == rec["tolerance"]["abs"]
    rec["value"]["seed 0"] += 2 * rec["tolerance"]["abs"]
    rewrite(path, rec)
    assert not measured.verify([("demo", path.name)]).ok.any()


def test_the_sample_rotates_and_keeps_to_its_budget(monkeypatch):
    index = {"a": [{"file": f"a{i}.json"} for i in range(4)], "b": [{"file": "b0.json"}],
             "c": [{"file": "c0.json"}]}
    monkeypatch.setattr(store, "read_evidence_index", lambda ch: index[ch])
    monkeypatch.setattr(measured, "_seconds", lambda f: 10.0)
    picks = {tuple(measured.sample(index, salt=str(s), budget=25.0)) for s in range(30)}
    assert all(len(p) == 2 for p in picks)                          # 2 x 10 s fit in 25 s, 3 do not
    assert {f for p in picks for _, f in p if f.startswith("a")} == {f"a{i}.json" for i in range(4)}
    assert len(measured.sample(index, salt="x", budget=None)) == 3
    assert measured.sample(index, salt="x", budget=0.0) == []        # longer ones: `store verify --all`


# -- the committed store ----------------------------------------------------------------------------------

COMMITTED = store.indexed_chapters()
EVIDENCE_BUDGET_BYTES = 5e6


def test_stored_measurements_fit_their_budget(capsys):
    size = store.size_bytes(store.evidence_dir()) if store.evidence_dir().exists() else 0
    with capsys.disabled():
        print(f"\nstored measurements: {size / 1e6:.2f} MB in {store.evidence_dir()}")
    assert size <= EVIDENCE_BUDGET_BYTES


@pytest.mark.parametrize("chapter", COMMITTED)
def test_every_measurement_a_chapter_reads_is_fresh(chapter):
    stale = []
    for e in store.read_evidence_index(chapter):
        path = measured.stored_path(e["file"])
        rec = measured.read(path, chapter)                         # readable, intact checksum
        m = measured.from_record(rec)
        assert m.key == rec["key"] == e["key"], f"{path} holds another measurement than its name"
        if rec["fingerprint"] != m.fingerprint():
            stale.append(f"  {e['file']}: {measured.why_not_stored(m)}")
    assert not stale, (f"{len(stale)} measurement(s) of chapter {chapter} were recorded with other code:\n"
                       + "\n".join(stale) + f"\nRefresh them with `make record CH={chapter}`")


def test_ci_verification_sample_of_measurements():
    """Re-compute one stored measurement per chapter within the budget (rotating with the commit)."""
    entries = measured.sample(COMMITTED, verify.commit_id(), measured.SAMPLE_BUDGET_SECONDS)
    if not entries:
        pytest.skip("no chapter reads a stored measurement")
    table = measured.verify(entries)
    table.attrs["title"] = "results store: measurements re-computed and compared"
    VERIFIED.append(table)
    bad = table[~table.ok]
    assert bad.empty, f"stored measurements do not re-compute to their values:\n{bad.to_string(index=False)}"


def test_compare_treats_equal_infinities_and_nans_as_equal_and_counts_numbers():
    def rec(value, kind="k"):
        return {"name": "m", "key": "0", "seconds": 1.0, "value": measured.encode(value),
                "provenance": {"cpu_kind": kind}, "tolerance": {"abs": 0.1, "why": "test"}}
    a = {"x": torch.tensor([1.0, -math.inf, math.nan]), "y": 2.0}
    assert measured.compare("c", rec(a), rec(a))["ok"]
    b = {"x": torch.tensor([1.05, -math.inf, math.nan]), "y": 2.0}
    assert not measured.compare("c", rec(a), rec(b))["ok"]                 # same kind: identical
    row = measured.compare("c", rec(a), rec(b, kind="other"))
    assert row["ok"] and row["numbers"] == 5 and row["at"] == ".x[0]"       # the shape, 3 values, y
    c = {"x": torch.tensor([1.0, math.inf, math.nan]), "y": 2.0}
    assert not measured.compare("c", rec(a), rec(c, kind="other"))["ok"]
    d = {"x": torch.tensor([[1.0, -math.inf, math.nan]]), "y": 2.0}      # another shape
    row = measured.compare("c", rec(a), rec(d, kind="other"))
    assert not row["ok"] and row["at"] == ".x.shape"


def test_a_record_of_an_older_layout_is_stale_not_corrupt(measured_store, monkeypatch):
    runs, value = measured_store
    path = only_file()
    rec = measured.read(path)
    rewrite(path, {**rec, "evidence_format": measured.FORMAT - 1})
    monkeypatch.setenv("FGLIB_STORE_ONLY", "1")
    with pytest.raises(measured.StaleEvidenceError, match="older fglib"):
        measure(stored_weights_top1, runs)
    monkeypatch.delenv("FGLIB_STORE_ONLY")
    assert measure(stored_weights_top1, runs) == value                 # computed again
