"""OSME + MAMC against a loop reference written from the paper's four sets, closed forms
at f = 0, the N-pair special case, invariances and the batch check."""

import itertools
import math

import pytest
import torch

from fglib.models.backbones import SmallResNet
from fglib.models.mamc import OSME, OSMEClassifier, mamc_loss, relation_masks


def loop_sets(labels, parts):
    """The four sets of every anchor (i, p), written from their definitions."""
    feats = [(i, p) for i in range(len(labels)) for p in range(parts)]
    sets = {}
    for a, (i, p) in enumerate(feats):
        out = {"sasc": [], "sadc": [], "dasc": [], "dadc": []}
        for j, (k, q) in enumerate(feats):
            if j == a:
                continue
            same_a = "sa" if q == p else "da"
            same_c = "sc" if labels[k] == labels[i] else "dc"
            out[same_a + same_c].append(j)
        sets[a] = out
    return feats, sets


def loop_mamc(f, labels, self_positive=False, divisor="N", normalize=False):
    b, parts, _ = f.shape
    feats, sets = loop_sets(labels.tolist(), parts)
    flat = [f[i, p] / (f[i, p].norm() if normalize else 1.0) for i, p in feats]
    n = len(set(labels.tolist())) if divisor == "N" else b * parts
    total = {"sasc": 0.0, "sadc": 0.0, "dasc": 0.0}
    pairs = {"sasc": ("sasc", ("sadc", "dasc", "dadc")), "sadc": ("sadc", ("dadc",)),
             "dasc": ("dasc", ("dadc",))}
    for a in range(len(flat)):
        for name, (pos_set, neg_sets) in pairs.items():
            pos = sets[a][pos_set] + ([a] if self_positive and name == "sasc" else [])
            neg = [j for s in neg_sets for j in sets[a][s]]
            for jp in pos:
                inner = sum(math.exp(float(flat[a] @ flat[jn] - flat[a] @ flat[jp]))
                            for jn in neg)
                total[name] += math.log(1 + inner)
    return {k: v / n for k, v in total.items()}


def test_set_sizes_partition_the_other_features():
    n_cls, parts = 4, 3
    labels = torch.arange(n_cls).repeat_interleave(2)
    masks = relation_masks(labels, parts)
    size = {k: m.sum(1) for k, m in masks.items()}
    expect = {"sasc": 1, "sadc": 2 * (n_cls - 1), "dasc": 2 * (parts - 1),
              "dadc": 2 * (n_cls - 1) * (parts - 1)}
    for k, v in expect.items():
        assert (size[k] == v).all(), k
    union = sum(m.int() for m in masks.values())
    assert (union == 1 - torch.eye(len(union), dtype=torch.int)).all()   # a partition


def test_masks_match_the_loop_sets():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    masks = relation_masks(labels, 2)
    _, sets = loop_sets(labels.tolist(), 2)
    for a, s in sets.items():
        for k in masks:
            assert torch.nonzero(masks[k][a]).flatten().tolist() == s[k]


@pytest.mark.parametrize("self_positive", [False, True])
@pytest.mark.parametrize("divisor", ["N", "2NP"])
@pytest.mark.parametrize("normalize", [False, True])
def test_loss_matches_loop_reference(self_positive, divisor, normalize):
    torch.manual_seed(0)
    labels = torch.tensor([2, 2, 0, 0, 5, 5])
    f = torch.randn(6, 2, 4, dtype=torch.float64) * 0.5
    got = mamc_loss(f, labels, self_positive=self_positive, divisor=divisor,
                    normalize=normalize)
    want = loop_mamc(f, labels, self_positive, divisor, normalize)
    for k in want:
        assert got[k].item() == pytest.approx(want[k], rel=1e-10), k


def test_closed_forms_at_zero():
    """f = 0: every exponent is 0, so each positive adds log(1 + |negatives|)."""
    n_cls, parts = 3, 2
    labels = torch.arange(n_cls).repeat_interleave(2)
    got = mamc_loss(torch.zeros(2 * n_cls, parts, 5, dtype=torch.float64), labels)
    anchors = 2 * n_cls * parts
    assert got["sasc"].item() == pytest.approx(anchors * math.log(anchors - 1) / n_cls)
    dadc = 2 * (n_cls - 1) * (parts - 1)
    assert got["sadc"].item() == pytest.approx(
        anchors * 2 * (n_cls - 1) * math.log(1 + dadc) / n_cls)
    assert got["dasc"].item() == pytest.approx(
        anchors * 2 * (parts - 1) * math.log(1 + dadc) / n_cls)


def test_one_attention_is_the_n_pair_loss():
    """P = 1: sasc is Sohn's N-pair loss, the other two terms vanish."""
    torch.manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    f = torch.randn(6, 1, 3, dtype=torch.float64)
    got = mamc_loss(f, labels)
    x = f[:, 0]
    npair = 0.0
    for i in range(6):
        pos = [j for j in range(6) if j != i and labels[j] == labels[i]][0]
        npair += math.log(1 + sum(math.exp(float(x[i] @ x[k] - x[i] @ x[pos]))
                                  for k in range(6) if labels[k] != labels[i]))
    assert got["sasc"].item() == pytest.approx(npair / 3)
    assert got["sadc"].item() == 0 and got["dasc"].item() == 0


def test_invariant_to_batch_order_and_attention_relabelling():
    torch.manual_seed(2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    f = torch.randn(8, 3, 4, dtype=torch.float64)
    base = mamc_loss(f, labels)
    perm = torch.randperm(8)
    for k, v in mamc_loss(f[perm], labels[perm]).items():
        torch.testing.assert_close(v, base[k])
    for order in itertools.permutations(range(3)):
        for k, v in mamc_loss(f[:, list(order)], labels).items():
            torch.testing.assert_close(v, base[k])


def test_stable_for_large_features_and_empty_sets():
    labels = torch.tensor([0, 0, 1, 1])
    f = (torch.randn(4, 2, 8) * 1e3).requires_grad_()
    losses = mamc_loss(f, labels)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(f.grad).all()
    one = torch.randn(4, 1, 8, requires_grad=True)          # P = 1: dasc, dadc empty
    sum(mamc_loss(one, labels).values()).backward()
    assert torch.isfinite(one.grad).all()


def test_float32_under_autocast():
    torch.manual_seed(5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    f = torch.randn(6, 2, 16) * 3
    plain = mamc_loss(f, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mamc_loss(f.bfloat16(), labels)
    for k, v in auto.items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, mamc_loss(f.bfloat16(), labels)[k])
        assert v.item() == pytest.approx(plain[k].item(), rel=0.05)


def test_batch_that_is_not_n_by_two_is_refused():
    f = torch.zeros(6, 2, 3)
    with pytest.raises(ValueError, match="N classes x 2 images"):
        mamc_loss(f, torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="images_per_class=2"):
        mamc_loss(f[:2], torch.tensor([0, 0]))


def test_osme_excitations_and_pooling():
    torch.manual_seed(3)
    osme = OSME(32, parts=2, dim=6, pooling="vec", grid=3).double()
    fmap = torch.randn(2, 32, 3, 3, dtype=torch.float64)
    m = osme.excitations(fmap)
    assert m.shape == (2, 2, 32) and ((m > 0) & (m < 1)).all()
    z = fmap.mean((2, 3))
    for p in range(2):     # m^p = sigmoid(W_2^p relu(W_1^p z)), f^p = W_3^p Vec(m^p * U)
        se = osme.excite[p]
        mp = torch.sigmoid(se.w2(torch.relu(se.w1(z))))
        torch.testing.assert_close(m[:, p], mp)
        fp = osme.w3[p]((mp[:, :, None, None] * fmap).flatten(1))
        torch.testing.assert_close(osme(fmap)[:, p], fp)
    gap_osme = OSME(32, parts=2, dim=6, pooling="gap").double()
    assert gap_osme(torch.randn(1, 32, 7, 5, dtype=torch.float64)).shape == (1, 2, 6)
    big = torch.randn(2, 32, 6, 6, dtype=torch.float64)        # a 6 x 6 map on a 3 x 3 grid
    m = osme.excitations(big)
    s0 = m[:, 0, :, None, None] * big
    pooled = s0.reshape(2, 32, 3, 2, 3, 2).mean((3, 5)).flatten(1)   # 2 x 2 cell means
    torch.testing.assert_close(osme(big)[:, 0], osme.w3[0](pooled))


def _model(**options):
    return OSMEClassifier(SmallResNet((6, 10), (1, 1)), 3, **options).double()


def test_loss_terms_and_evaluation_at_batch_size_one():
    torch.manual_seed(4)
    x = torch.randn(6, 3, 13, 11, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    model = _model().train()
    logits, losses = model(x, y)
    assert set(losses) == {"ce", "sasc", "sadc", "dasc"} and logits.shape == (6, 3)
    sum(losses.values()).backward()
    assert set(_model(terms="sasc")(x, y)[1]) == {"ce", "sasc"}
    model.eval()
    with torch.no_grad():
        batch = model(x)[0]
        single = torch.cat([model(x[i:i + 1])[0] for i in range(6)])
    torch.testing.assert_close(batch, single)
    assert model.attention_maps(x).shape[:2] == (6, 2)


def test_the_ablation_trains_every_row_on_the_same_pairs_of_two():
    """Every row of the MAMC ablation, the baseline included, trains on 16 classes x 2 images
    at the halved learning rate; the main setting is one the search tried."""
    from fglib.experiments import regimes

    for regime in regimes.MAMC_REGIMES:
        jobs = regimes.mamc_ablation(regime)
        assert len(jobs) == len(regimes.MAMC_ROWS) * len(regimes.SEEDS)
        for row, _, cfg in jobs:
            t = cfg.train
            assert (t.sampler, t.classes_per_batch, t.images_per_class, t.lr) == (
                "balanced", 16, 2, 0.05), row
            assert cfg.model.method == ("baseline" if row == "baseline" else "mamc")
            assert cfg.model.pretrained == (regime == "paper")
    assert regimes.MAMC_MAIN in regimes.MAMC_SEARCH.values()
    assert regimes.MAMC_ROWS["+MAMC"] == regimes.MAMC_MAIN
