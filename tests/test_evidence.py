"""The shared evidence helpers and the comparison sentence, against direct computations."""
import pandas as pd
import pytest
import torch

from fglib.models.backbones import SmallResNet
from fglib.data.memory import ImageTensors
from fglib.book.evidence import (class_maps, feature_maps, in_batches, normalised_images,
                                 predictions, smoothed_terms, upsample)
from fglib.models.baseline import GAPClassifier
from fglib.core.verdict import compare_sentence


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 9, 9), generator=g, dtype=torch.uint8)
    return ImageTensors(images=images, labels=torch.arange(n) % 3, parts=None, families=None,
                        num_classes=3, part_names=[])


def test_normalised_images_use_the_training_statistics():
    train, test = _split(7, 0), _split(5, 1)
    x = normalised_images(train, test)
    assert x.dtype == torch.float64 and x.shape == test.images.shape
    for c in range(3):
        vals = train.images[:, c].double() / 255
        expected = (test.images[:, c].double() / 255 - vals.mean()) / vals.std()
        torch.testing.assert_close(x[:, c], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 3, 100])
def test_batched_helpers_equal_one_big_batch(batch):
    torch.manual_seed(0)
    model = GAPClassifier(SmallResNet((4, 6), (1, 1)), 3).double().eval()
    x, cls = torch.randn(7, 3, 11, 13, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 2])
    with torch.no_grad():
        torch.testing.assert_close(feature_maps(model, x, batch), model.features(x))
        torch.testing.assert_close(class_maps(model, x, cls, batch), model.cam(x, cls))
        assert torch.equal(predictions(model, x, batch), model(x)[0].argmax(1))
    model.train()
    before = model.backbone.stem[1].running_mean.clone()
    for helper in (lambda: predictions(model, x, batch), lambda: feature_maps(model, x, batch),
                   lambda: class_maps(model, x, cls, batch)):
        helper()
        assert model.training                               # the mode is restored
    assert torch.equal(model.backbone.stem[1].running_mean, before)   # evaluated, not trained
    with pytest.raises(ValueError, match="one length"):
        in_batches(model.cam, x, cls[:3])


def test_upsample_keeps_a_constant_map_constant():
    out = upsample(torch.full((3, 4), 2.5), 10)
    assert out.shape == (10, 10) and torch.allclose(out, torch.full((10, 10), 2.5, dtype=out.dtype))


def test_smoothed_terms_names_missing_terms():
    h = pd.DataFrame({"seed": [0] * 4, "step": range(4), "term": ["ce"] * 4, "value": [4.0, 2, 0, 2]})
    out = smoothed_terms(h, ["ce"], window=2)
    assert out.smoothed.tolist() == [4.0, 3.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"no loss term\(s\) \['rank'\].*\['ce'\]"):
        smoothed_terms(h, ["ce", "rank"])


def test_compare_sentence_pairs_by_seed_and_says_what_the_verdict_rests_on():
    a = {s: 78.0 + s % 3 for s in range(6)}
    gain = compare_sentence(a, {s: v + 6.0 + 0.1 * s for s, v in a.items()}, "X", "the baseline")
    assert gain.startswith("X changes top-1 by **+6.2 points** (95 % interval [")
    assert gain.endswith("over the baseline (6 paired seeds): a gain (Holm p = 0.031).")
    loss = compare_sentence(a, {s: v - 3.0 for s, v in a.items()}, "X", "Y")
    assert "a loss (Holm p = 0.031)" in loss
    same = compare_sentence(a, {s: v + (0.1 if s % 2 else -0.1) for s, v in a.items()}, "X", "Y")
    assert "no effect (equivalent within ±1 point, Holm p = 0.016)" in same
    few = compare_sentence({0: 1.0, 1: 2.0, 2: 3.0}, {0: 5.0, 1: 6.0, 2: 9.0}, "X", "Y")
    assert few.endswith("inconclusive (3 seeds: sign flips cannot reach the family's level, "
                        "p ≥ 0.250).")
    with pytest.raises(ValueError, match=r"seeds \[2\] are on one side only"):
        compare_sentence({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0}, "X", "Y")


def test_smoothing_never_mixes_two_variants_of_one_seed():
    h = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3, "seed": 0, "step": [0, 1, 2] * 2,
                      "epoch": 0, "term": "ce", "value": [10.0, 10.0, 10.0, 1.0, 1.0, 1.0]})
    out = smoothed_terms(h, ["ce"], window=20)
    assert out[out.variant == "b"].smoothed.tolist() == [1.0, 1.0, 1.0]


def test_multiply_adds_by_hand():
    from torch import nn

    from fglib.book.evidence import multiply_adds

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1, groups=2),
                          nn.Flatten(), nn.Linear(4 * 5 * 6, 7))
    macs = multiply_adds(model, torch.zeros(2, 3, 5, 6))
    assert macs == {"0": 2 * 4 * 5 * 6 * 3 * 9, "1": 2 * 4 * 5 * 6 * 2, "3": 2 * 7 * 120}


def test_relation_similarity_against_a_loop_over_the_paper_sets():
    from fglib.book.evidence import relation_similarity

    torch.manual_seed(0)
    labels = torch.tensor([3, 3, 0, 0, 5, 5])           # N = 3 classes x 2 images
    f = torch.randn(6, 2, 4, dtype=torch.float64)        # P = 2 attentions, d = 4
    sums = {k: [] for k in ("sasc", "sadc", "dasc", "dadc")}
    for i in range(6):
        for p in range(2):
            for j in range(6):
                for q in range(2):
                    if (i, p) == (j, q):
                        continue
                    kind = ("s" if p == q else "d") + "a" + (
                        "s" if labels[i] == labels[j] else "d") + "c"
                    cos = torch.nn.functional.cosine_similarity(f[i, p], f[j, q], 0)
                    sums[kind].append(cos.item())
    got = relation_similarity(f, labels)
    for k, v in sums.items():
        assert got[k] == pytest.approx(sum(v) / len(v), abs=1e-12), k


# -- RRA: oracle windows, boxes over parts, per-proposal logits, test protocols ------------------

def test_part_windows_prefer_a_visible_part_among_which_then_any_visible_then_the_centre():
    from fglib.book.evidence import part_windows
    parts = torch.tensor([[[10., 10., 1], [30., 20., 1], [5., 5., 0]],    # which: part 1
                          [[12., 14., 1], [30., 20., 0], [5., 5., 0]],    # none visible in which
                          [[12., 14., 0], [30., 20., 0], [5., 5., 0]]])   # none visible
    which = torch.tensor([[False, True, True], [False, True, False], [True, True, True]])
    boxes = part_windows(parts, which, 8, 40)
    assert boxes.shape == (3, 1, 4)
    assert boxes[:, 0].tolist() == [[26., 16., 34., 24.], [8., 10., 16., 18.],
                                    [16., 16., 24., 24.]]


def test_boxes_cover_matches_a_loop():
    from fglib.book.evidence import boxes_cover
    g = torch.Generator().manual_seed(0)
    parts = torch.cat([torch.rand(5, 6, 2, generator=g) * 40,
                       (torch.rand(5, 6, 1, generator=g) > 0.3).float()], 2)
    which = torch.rand(5, 6, generator=g) > 0.5
    x0y0 = torch.rand(5, 3, 2, generator=g) * 30
    boxes = torch.cat([x0y0, x0y0 + 10], 2)
    got = boxes_cover(boxes, parts, which)
    for b in range(5):
        for j in range(3):
            x0, y0, x1, y1 = boxes[b, j].tolist()
            want = any(which[b, p] and parts[b, p, 2] > 0
                       and x0 <= parts[b, p, 0] < x1 and y0 <= parts[b, p, 1] < y1
                       for p in range(6))
            assert bool(got[b, j]) == want


def test_protocols_on_a_hand_example():
    from fglib.book.evidence import protocols
    # 2 images, 2 proposals, 2 classes; labels 0, 1
    z = torch.tensor([[[2., 0.], [0., 1.]],       # image 0: top right, second wrong
                      [[1., 0.], [0., 3.]]])      # image 1: top wrong, second right
    got = protocols(z, torch.tensor([0, 1]), draws=50, seed=1)
    assert got["top"] == 50.0
    assert got["mean"] == 100.0                   # means (1, .5) and (.5, 1.5)
    assert set(got["random"]) <= {0.0, 50.0, 100.0} and len(got["random"]) == 50
    assert len(set(got["random"])) == 3           # every outcome over 50 draws
    assert got == protocols(z, torch.tensor([0, 1]), draws=50, seed=1)


def test_rra_readouts_match_the_models_own_evaluation():
    from fglib.book.evidence import local_readout, proposal_logits, proposals
    from fglib.models.rra import RRANet
    torch.manual_seed(0)
    model = RRANet(SmallResNet((4, 8), (1, 1)), 3, source="peaks").double().eval()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    boxes = proposals(model, x)
    z = proposal_logits(model, x, boxes)
    assert z.shape == (4, model.proposals, 3)
    read = local_readout(model, x, boxes)
    with torch.no_grad():
        assert torch.allclose(z[:, 0], model(x)[0])
        assert torch.allclose(read["a"], model.attention_over_time(x))
        assert torch.allclose(read["steps"], model.step_logits(x))
        model.evaluation = "mean"
        assert torch.allclose(z.mean(1), model(x)[0])
    torch.manual_seed(0)
    distinct = RRANet(SmallResNet((4, 8), (1, 1)), 3, source="peaks",
                      sequence="distinct").double().eval()
    read = local_readout(distinct, x, proposals(distinct, x))
    with torch.no_grad():
        assert torch.allclose(read["a"], distinct.attention_over_time(x))
        assert torch.allclose(read["steps"], distinct.step_logits(x))


def test_parameter_counts_leave_out_what_the_test_pass_never_calls():
    from torch import nn

    from fglib.book.evidence import parameter_counts

    class TwoHeads(nn.Module):                  # the second head is used in training only
        def __init__(self):
            super().__init__()
            self.body, self.head, self.train_only = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 5)

        def forward(self, x):
            h = self.body(x)
            return self.head(h) if not self.training else self.train_only(h), {}

    m = TwoHeads()
    got = parameter_counts(m, torch.randn(2, 3))
    assert got == {"training": 16 + 10 + 25, "test": 16 + 10}
    assert m.training                           # the mode is restored
