"""The step-time benchmark runs every registered method with the batch that method declares."""
import pytest

from fglib.book.bench import bench, main
from fglib.models import MODEL_CLASSES


@pytest.mark.parametrize("method", sorted(MODEL_CLASSES))
def test_bench_runs_every_method_with_its_declared_batch(method):
    r = bench(image_size=24, method=method, batch_size=16, steps=1, widths=(8, 16), num_classes=6,
              n_images=64, amp=False)
    needs = MODEL_CLASSES[method].needs
    assert r["step_ms"] > 0 and r["images_per_s"] > 0
    if needs.balanced:                     # whole classes of the size the method asks for
        assert r["batch"] % needs.images_per_class == 0 and r["batch"] // needs.images_per_class >= needs.classes
    else:
        assert r["batch"] == 16


def test_bench_command_line_prints_a_row_per_method(capsys):
    main(["--image-size", "24", "--threads", "1", "--steps", "1", "--precision", "float32",
          "--method", "mamc", "baseline"])
    out = capsys.readouterr().out
    assert " mamc " in out and " baseline " in out


def test_a_recorded_timing_round_trips_with_its_provenance(tmp_path, monkeypatch):
    """record() writes what the function measured and where; recorded() reads it back;
    a missing record names the command that writes it. (A chapter prints stored timings,
    so a reader's Run All leaves the repository clean.)"""
    import fglib.book.bench as b

    def toy():
        """Two made-up figures."""
        return {"a": 2.0, "b": 3.0}

    monkeypatch.setattr(b, "BENCH_DIR", tmp_path)
    monkeypatch.setitem(b.RECORDED, "toy", toy)
    rec = b.record("toy", threads=1)
    assert b.recorded("toy") == rec and rec["figures"] == {"a": 2.0, "b": 3.0}
    assert rec["provenance"]["threads"] == 1 and rec["measures"] == "Two made-up figures."
    assert "by `python -m fglib.book.bench --record toy`" in b.provenance(rec)
    with pytest.raises(FileNotFoundError, match="--record nothing"):
        b.recorded("nothing")


def test_the_chapters_timings_are_recorded():
    import fglib.book.bench as b

    for name in b.RECORDED:
        rec = b.recorded(name)
        assert rec["figures"] and rec["provenance"]["threads"] == 1, name
