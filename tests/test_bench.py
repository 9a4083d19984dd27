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
