"""What turns a trained model into the book's numbers, against values worked out by hand:
top-1, family top-1, per-class accuracy and the in-family share of errors
(fglib.engine.train.metrics_from_logits), the learning-rate schedule of every run (lr_at),
and the 'mean ± sd (n)' and difference columns of the chapters' tables."""
import math

import pandas as pd
import pytest
import torch

from fglib.core.config import book_profile
from fglib.data.memory import ImageTensors
from fglib.engine.train import lr_at, metrics_from_logits
from fglib.experiments.runner import summarise, versus_baseline

# Five classes in three families: {0, 1}, {2, 3}, {4}. Seven test images, none of class 4.
FAMILIES = torch.tensor([0, 0, 1, 1, 2])
LABELS = torch.tensor([0, 0, 1, 2, 3, 3, 1])
# row i: the logits of image i; what they predict, and why, in the comment
LOGITS = torch.tensor([
    [5.0, 1.0, 0.0, 0.0, 0.0],   # y 0, predicts 0: right
    [1.0, 4.0, 0.0, 0.0, 0.0],   # y 0, predicts 1: wrong, inside the family {0, 1}
    [0.0, 3.0, 1.0, 0.0, 0.0],   # y 1, predicts 1: right
    [2.0, 0.0, 1.0, 0.0, 0.0],   # y 2, predicts 0: wrong, another family
    [0.0, 0.0, 0.0, 2.0, 1.0],   # y 3, predicts 3: right
    [0.0, 0.0, 3.0, 1.0, 0.0],   # y 3, predicts 2: wrong, inside the family {2, 3}
    [0.0, 2.0, 0.0, 2.0, 0.0],   # y 1, a tie of classes 1 and 3: the first (1) wins, right
])


def split(families=FAMILIES):
    n = len(LABELS)
    return ImageTensors(images=torch.zeros(n, 3, 2, 2, dtype=torch.uint8), labels=LABELS,
                        parts=None, families=families, num_classes=5, part_names=[])


def test_metrics_on_a_batch_worked_out_by_hand():
    # (the means are float32: 1e-6 is their rounding, a wrong count moves them by 1/7 or more)
    m = metrics_from_logits(LOGITS, split())
    assert m["top1"] == pytest.approx(4 / 7, rel=1e-6)             # images 0, 2, 4, 6
    # family top-1: the four right answers and the two in-family mistakes (1 and 5)
    assert m["family_top1"] == pytest.approx(6 / 7, rel=1e-6)
    # of the three mistakes (1, 3, 5), two stayed in the family
    assert m["within_family_errors"] == pytest.approx(2 / 3, rel=1e-6)
    # per class: 1 of 2, 2 of 2 (no error, one by the tie), 0 of 1, 1 of 2, no image
    assert m["per_class"][:4] == pytest.approx([1 / 2, 1.0, 0.0, 1 / 2], rel=1e-6)
    assert math.isnan(m["per_class"][4])


def test_metrics_without_families_and_without_errors():
    m = metrics_from_logits(LOGITS, split(families=None))
    assert set(m) == {"top1", "per_class"}
    right = torch.nn.functional.one_hot(LABELS, 5).float()          # every image right
    m = metrics_from_logits(right, split())
    assert m["top1"] == 1.0 and m["family_top1"] == 1.0
    assert m["within_family_errors"] == 0.0                         # no error: 0, not 0 / 0


def schedule(epochs=3, warmup=1.0, lr=0.2):
    return book_profile(**{"train.epochs": epochs, "train.warmup_epochs": warmup, "train.lr": lr})


@pytest.mark.parametrize("step,factor", [
    # warm-up, 10 steps: lr (step + 1) / 10, reaching lr on its last step
    (0, 0.1), (4, 0.5), (9, 1.0),
    # cosine over the remaining 20 steps: 0.5 (1 + cos(pi (step - 10) / 20))
    (10, 1.0),                                # starts at lr
    (15, 0.5 * (1 + math.sqrt(0.5))),         # a quarter: 0.853553..., a linear decay gives 0.75
    (20, 0.5),                                # half way
    (25, 0.5 * (1 - math.sqrt(0.5))),         # three quarters: 0.146446...
    (29, 0.5 * (1 + math.cos(math.pi * 19 / 20))),   # the last step: 0.006155...
    (30, 0.0),                                # one past the end
])
def test_lr_schedule_at_each_phase_and_boundary(step, factor):
    assert lr_at(step, 10, schedule()) == pytest.approx(0.2 * factor, rel=1e-12, abs=1e-15)


def test_lr_schedule_without_warm_up_and_with_a_fractional_one():
    assert lr_at(0, 10, schedule(warmup=0)) == pytest.approx(0.2, rel=1e-12)   # cosine from step 0
    assert lr_at(15, 10, schedule(warmup=0)) == pytest.approx(0.1, rel=1e-12)  # its half way
    # 0.25 of an epoch of 10 steps: int(2.5) = 2 warm-up steps, lr / 2 then lr
    assert [lr_at(s, 10, schedule(warmup=0.25)) for s in (0, 1, 2)] == pytest.approx(
        [0.1, 0.2, 0.2], rel=1e-12)


def runs_table():
    rows = []
    for variant, tops, seconds in (("base", (70.0, 72.0, 74.0), 10.0),
                                   ("new", (73.0, 74.0, 78.0), 15.0),
                                   ("once", (71.0,), 20.0)):
        rows += [{"variant": variant, "seed": s, "top1": t, "seconds": seconds}
                 for s, t in enumerate(tops)]
    return pd.DataFrame(rows)


def test_versus_baseline_by_hand():
    t = versus_baseline(runs_table(), "base")
    assert t.loc["once", "diff"] == pytest.approx(71.0 - 70.0)     # against the same seed's
    # base 72 ± 2 (sd of 70, 72, 74); new 75 ± sqrt(7) = 2.6458 (sd of 73, 74, 78)
    assert t.loc["base", "top1"] == "72.0 ± 2.0 (3)"
    assert t.loc["new", "top1"] == "75.0 ± 2.6 (3)"
    assert t.loc["new", "diff"] == pytest.approx(3.0, rel=1e-12)
    # paired by seed: d = 3, 2, 4, sd 1, se 1 / sqrt 3; the 95 % interval 3 +- t_.975,2 / sqrt 3
    assert t.loc["new", "se"] == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert t.loc["new", "low"] == pytest.approx(3 - 4.302652729749464 / math.sqrt(3), rel=1e-9)
    assert t.loc["new", "verdict"] == "inconclusive"     # 3 seeds: sign flips give p >= 0.25
    assert t.loc["new", "time ratio"] == pytest.approx(1.5, rel=1e-12)
    assert math.isnan(t.loc["once", "se"]) and t.loc["once", "top1"] == "71.0 (1)"
    assert t.loc["once", "verdict"] == "one seed: no verdict"


def test_summarise_writes_mean_sd_and_count():
    runs = runs_table()
    summary = runs.groupby("variant", sort=False).agg({"top1": ["mean", "std", "count"]})
    out = summarise(summary)
    assert out.loc["new", "top1"] == "75.0 ± 2.6 (3)" and out.loc["once", "top1"] == "71.0 (1)"
    assert summarise(summary, digits=2).loc["new", "top1"] == "75.00 ± 2.65 (3)"


def test_pointing_rates_and_their_chance_levels_by_hand(monkeypatch):
    """fglib.book.chapters.compare.points_at_parts, the closing chapter's pointing column, on
    two 32-pixel images with one discriminative part each, at (4, 4) and (28, 28), and 4 x 4
    maps (cell centres at 4, 12, 20, 28 pixels), radius 8."""
    from fglib.book.chapters import compare
    from fglib.book.evidence import FirstImages

    parts = torch.tensor([[[4.0, 4.0, 1.0]], [[28.0, 28.0, 1.0]]], dtype=torch.float64)
    ev = FirstImages(index=torch.arange(2), x=torch.zeros(2, 3, 32, 32, dtype=torch.float64),
                     labels=torch.tensor([0, 1]), parts=parts,
                     disc=torch.ones(2, 1, dtype=torch.bool), families=torch.tensor([0, 0]),
                     size=32)

    def peak_at(i, j):
        m = torch.zeros(4, 4, dtype=torch.float64)
        m[i, j] = 1.0
        return m

    class Cam(torch.nn.Module):
        has_cam = True

    class Osme(torch.nn.Module):
        def attention_maps(self, x):            # image 0: map 0 on its part; image 1: map 1
            return torch.stack([torch.stack([peak_at(0, 0), peak_at(1, 1)]),
                                torch.stack([peak_at(0, 0), peak_at(3, 3)])])

    class Rra(torch.nn.Module):
        patch = 0.25

        def candidates(self, x, fmap):
            return None

    monkeypatch.setattr(compare, "first_test_images", lambda cfg, per_class: ev)
    # image 0's peak on its part, image 1's at (4, 4), 34 pixels from its part
    monkeypatch.setattr(compare, "class_maps",
                        lambda model, x, labels: torch.stack([peak_at(0, 0), peak_at(0, 0)]))
    # an 8-pixel window at the top left: holds image 0's part, not image 1's
    monkeypatch.setattr(compare, "proposals", lambda model, x: torch.tensor(
        [[[0.0, 0.0, 8.0, 8.0]], [[0.0, 0.0, 8.0, 8.0]]], dtype=torch.float64))
    got = {}
    for name, model in (("cam", Cam()), ("osme", Osme()), ("rra", Rra())):
        monkeypatch.setattr(compare, "load_model", lambda cfg, m=model: (m, None))
        got[name] = compare.points_at_parts({"model": None}, per_class=1, radius=8.0)
    # within 8 pixels of a part: its own cell and the two next to it, not the diagonal (11.3)
    assert got["cam"]["rate"] == pytest.approx(50.0, rel=1e-12)
    assert got["cam"]["chance"] == pytest.approx(100 * 3 / 16, rel=1e-12)
    # either of two maps on a part: both images hit; chance 1 - (1 - 3/16)^2 = 87/256
    assert got["osme"]["rate"] == pytest.approx(100.0, rel=1e-12)
    assert got["osme"]["chance"] == pytest.approx(100 * 87 / 256, rel=1e-12)
    assert got["rra"]["rate"] == pytest.approx(50.0, rel=1e-12)
    assert got["rra"]["chance"] in (0.0, 50.0, 100.0)               # two random windows
    assert [g["what"] for g in got.values()] == [
        "peak of the true class's map", "peak of either attention map",
        "its frozen baseline's best window"]
