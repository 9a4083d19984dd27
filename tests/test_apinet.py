"""API-Net against loop references and hand-computed values written from the paper's equations."""
import pytest
import torch
import torch.nn.functional as F

from fglib.models.backbones import SmallResNet
from fglib.core.config import ModelConfig
from fglib.models import MODELS, build_model
from fglib.models.apinet import APIModule, APINet, check_batch, pair_indices, random_pair_indices, rank_loss


def ref_pairs(f, y):
    """Double loop over squared distances; strict '<' keeps the first (lowest-index) minimum on ties."""
    intra, inter = [], []
    for i in range(len(y)):
        best = {True: (float("inf"), -1), False: (float("inf"), -1)}
        for j in range(len(y)):
            if j == i:
                continue
            d = sum((float(a) - float(b)) ** 2 for a, b in zip(f[i], f[j]))
            same = bool(y[i] == y[j])
            if d < best[same][0]:
                best[same] = (d, j)
        intra.append(best[True][1])
        inter.append(best[False][1])
    return torch.tensor(intra), torch.tensor(inter)


@pytest.mark.parametrize("b,k,seed", [(7, 3, 0), (9, 2, 1), (11, 4, 2), (15, 5, 3)])
def test_pair_indices_match_loops(b, k, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.arange(k), torch.arange(k), torch.randint(0, k, (b - 2 * k,), generator=g)])
    y = y[torch.randperm(b, generator=g)]
    f = torch.randn(b, 6, generator=g, dtype=torch.float64)
    intra, inter = pair_indices(f, y)
    r_intra, r_inter = ref_pairs(f, y)
    assert torch.equal(intra, r_intra) and torch.equal(inter, r_inter)
    assert (y[intra] == y).all() and (y[inter] != y).all() and (intra != torch.arange(b)).all()


@pytest.mark.parametrize("seed", range(4))
def test_pair_indices_ties_go_to_the_lowest_index(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1, 2])
    f = torch.randint(0, 3, (9, 2), generator=g).float()          # small integers: exact distances, many ties
    f[5] = f[2]                                                     # duplicate rows: exact ties (same class)
    f[7] = f[3]                                                     # and across classes
    intra, inter = pair_indices(f, y)
    r_intra, r_inter = ref_pairs(f, y)
    assert torch.equal(intra, r_intra) and torch.equal(inter, r_inter)


def test_pair_indices_explicit_tie():
    y = torch.tensor([0, 0, 0, 1, 1])
    f = torch.tensor([[0.0], [1.0], [-1.0], [1.0], [-1.0]])        # image 0: 1 and 2 tie (intra), 3 and 4 (inter)
    intra, inter = pair_indices(f, y)
    assert intra[0] == 1 and inter[0] == 3
    assert intra[1] == 0 and inter[1] == 3                         # itself (distance 0) is never chosen
    assert intra[3] == 4 and inter[3] == 1


def test_single_image_class_and_single_class_batches_raise():
    f = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have a single image.*train.sampler=\"balanced\".*"
                                         r"images_per_class >= 2"):
        pair_indices(f, torch.tensor([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match=r"only class \[3\].*no inter-class partner.*train.sampler=\"balanced\""):
        pair_indices(f, torch.tensor([3, 3, 3, 3, 3]))
    with pytest.raises(ValueError, match="single image"):
        random_pair_indices(torch.tensor([0, 1, 1]))
    check_batch(torch.tensor([0, 1, 1, 0]))


def test_random_pairs_are_valid_and_follow_the_global_seed():
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    torch.manual_seed(0)
    a = random_pair_indices(y)
    torch.manual_seed(0)
    b = random_pair_indices(y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    intra, inter = a
    assert (y[intra] == y).all() and (y[inter] != y).all() and (intra != torch.arange(7)).all()
    seen = {int(random_pair_indices(y)[0][2]) for _ in range(50)}  # image 2 has two possible intra partners
    assert seen == {3, 4}


def test_api_module_matches_equations():
    torch.manual_seed(0)
    d = 5
    api = APIModule(d).double().eval()
    assert api.map1.in_features == 2 * d and api.map1.out_features == 10 and api.map2.out_features == d
    assert APIModule(2048).map1.out_features == 512 and APIModule(8, hidden=3).map1.out_features == 3
    x1, x2 = torch.randn(3, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    (x1_self, x1_other, x2_self, x2_other), (g1, g2), got_x_m = api(x1, x2)
    W1, b1, W2, b2 = api.map1.weight, api.map1.bias, api.map2.weight, api.map2.bias
    x_m = (torch.cat([x1, x2], 1) @ W1.T + b1) @ W2.T + b2         # no non-linearity between the two layers
    torch.testing.assert_close(got_x_m, x_m)
    torch.testing.assert_close(api.mutual(x1, x2), x_m)
    e_g1, e_g2 = 1 / (1 + torch.exp(-x_m * x1)), 1 / (1 + torch.exp(-x_m * x2))
    torch.testing.assert_close(g1, e_g1)
    torch.testing.assert_close(g2, e_g2)
    torch.testing.assert_close(x1_self, x1 + x1 * e_g1)
    torch.testing.assert_close(x1_other, x1 + x1 * e_g2)
    torch.testing.assert_close(x2_self, x2 + x2 * e_g2)
    torch.testing.assert_close(x2_other, x2 + x2 * e_g1)


def test_rank_loss_hand_example():
    p_self = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    p_other = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.12, 0.78]])
    labels = torch.tensor([0, 1, 2])
    # max(0, .6 - .7 + .05) = 0;  max(0, .5 - .3 + .05) = .25;  max(0, .78 - .8 + .05) = .03
    assert rank_loss(p_self, p_other, labels).item() == pytest.approx((0 + 0.25 + 0.03) / 3, abs=1e-6)
    assert rank_loss(p_self, p_other, labels, margin=0.0).item() == pytest.approx(0.2 / 3, abs=1e-6)


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 19, 23, generator=g)
    y = torch.tensor([2, 2, 0, 0, 1, 1])                           # balanced: 3 classes x 2 images
    return x, y


def tiny_model(**kw):
    torch.manual_seed(0)
    return APINet(SmallResNet((4, 8), (1, 1)), 3, **kw)


@pytest.mark.parametrize("pairs,num_pairs", [("nearest", 12), ("random", 12), ("intra", 6), ("inter", 6)])
def test_apinet_shapes_losses_and_pair_counts(pairs, num_pairs):
    x, y = tiny_batch()
    model = tiny_model(pairs=pairs)
    logits, losses = model(x, y)
    assert logits.shape == (6, 3) and set(losses) == {"ce", "rank"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    out = model.pair_forward(x, y)
    assert out["features"].shape == (6, 8)
    assert out["i1"].shape == out["i2"].shape == (num_pairs,)
    assert out["g1"].shape == out["g2"].shape == (num_pairs, 8)
    assert all(v.shape == (num_pairs, 8) for v in out["attentive"].values())
    assert all(v.shape == (num_pairs, 3) for v in out["logits"].values())
    same = out["y1"] == out["y2"]
    assert {"intra": same.all(), "inter": (~same).all()}.get(pairs, same[:6].all() and (~same[6:]).all())
    _, losses = tiny_model(pairs=pairs, use_rank=False)(x, y)
    assert set(losses) == {"ce"}


def test_apinet_losses_match_pair_outputs():
    x, y = tiny_batch(1)
    model = tiny_model(lam=0.7, margin=0.3).eval()                 # eval: dropout off, so both calls agree
    with torch.no_grad():
        _, losses = model(x, y)
        out = model.pair_forward(x, y)
    z, y1, y2 = out["logits"], out["y1"], out["y2"]
    intra, inter = pair_indices(out["features"], y)
    assert torch.equal(out["i2"], torch.cat([intra, inter])) and torch.equal(out["y2"], y[out["i2"]])
    ce = sum(F.cross_entropy(z[k], t, reduction="sum") for k, t in
             [("x1_self", y1), ("x1_other", y1), ("x2_self", y2), ("x2_other", y2)]) / (4 * 12)
    torch.testing.assert_close(losses["ce"], ce)
    rk = 0.0
    for s, o, t in [("x1_self", "x1_other", y1), ("x2_self", "x2_other", y2)]:
        ps, po = z[s].softmax(1), z[o].softmax(1)
        rk += sum(max(0.0, float(po[p, t[p]] - ps[p, t[p]]) + 0.3) for p in range(12))
    assert losses["rank"].item() == pytest.approx(0.7 * rk / 24, abs=1e-6)


def test_apinet_eval_is_the_plain_classifier():
    x, y = tiny_batch()
    model = tiny_model().eval()
    logits, losses = model(x)
    assert losses == {}
    with torch.no_grad():
        expected = model.head.fc(model.backbone(x).mean((2, 3)))
    torch.testing.assert_close(logits, expected)
    with torch.no_grad():
        cam = model.cam(x, y)                                       # stride 2: 19 x 23 -> 10 x 12
    assert cam.shape == (6, 10, 12)
    torch.testing.assert_close(cam.mean((1, 2)) + model.head.fc.bias[y], logits[torch.arange(6), y])  # GAP of M_c


def test_gradient_reaches_backbone_and_api_mlp():
    x, y = tiny_batch()
    model = tiny_model()
    _, losses = model(x, y)
    sum(losses.values()).backward()
    for p in [model.backbone.stem[0].weight, model.api.map1.weight, model.api.map2.weight, model.head.fc.weight]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_apinet_rejects_unbalanced_batches_and_unknown_pairs():
    x, _ = tiny_batch()
    with pytest.raises(ValueError, match="single image"):
        tiny_model()(x, torch.tensor([0, 0, 1, 1, 1, 2]))
    with pytest.raises(ValueError, match="pairs must be one of"):
        tiny_model(pairs="farthest")


@pytest.mark.skipif("apinet" not in MODELS, reason="not registered in fglib.models yet")
def test_registry_builds_apinet_with_options():
    cfg = ModelConfig(method="apinet", dropout=0.5, options={"lam": 0.5, "pairs": "random", "hidden": 16})
    model = build_model("apinet", SmallResNet((4, 8), (1, 1)), 3, cfg)
    assert isinstance(model, APINet) and model.lam == 0.5 and model.pairs == "random"
    assert model.api.map1.out_features == 16 and model.head.dropout.p == 0.5
    with pytest.raises(ValueError, match="not settings of 'apinet'"):
        build_model("apinet", SmallResNet((4, 8), (1, 1)), 3, ModelConfig(method="apinet", options={"mu": 1}))
