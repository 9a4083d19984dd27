"""MC-Loss against loop references written from the paper's equations."""
import math

import pytest
import torch
import torch.nn.functional as F

from fglib.models.backbones import SmallResNet
from fglib.models.mcloss import MCLoss, MCLossClassifier, channel_groups


def ref_groups(groups):
    out, start = [], 0
    for g in groups:
        out.append(list(range(start, start + g)))
        start += g
    return out


def ref_dis(fmap, y, groups, keep):
    """g(F_i) = (1/WH) sum_k max_j [M_i F_ij,k]; keep[i] lists the unmasked channels of group i."""
    b, n, h, w = fmap.shape
    logits = torch.zeros(b, len(groups), dtype=fmap.dtype)
    for s in range(b):
        for i, chans in enumerate(ref_groups(groups)):
            total = 0.0
            for k in range(h * w):
                vals = [fmap[s, j].flatten()[k] * (1.0 if j in keep[i] else 0.0) for j in chans]
                total += max(vals)
            logits[s, i] = total / (h * w)
    return F.cross_entropy(logits, y)


def ref_div(fmap, groups):
    """L_div = (1/c) sum_i sum_k max_j softmax_k(F_ij,k), averaged over the batch."""
    b, n, h, w = fmap.shape
    total = 0.0
    for s in range(b):
        for chans in ref_groups(groups):
            soft = [torch.softmax(fmap[s, j].flatten(), 0) for j in chans]
            total += sum(max(sm[k] for sm in soft) for k in range(h * w))
    return total / (b * len(groups))


@pytest.mark.parametrize("groups", [[3, 3, 3], [2, 2, 3, 3], [1, 4]])
def test_components_match_loops(groups):
    g = torch.Generator().manual_seed(sum(groups))
    fmap = torch.rand(2, sum(groups), 3, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, len(groups) - 1])
    mc = MCLoss(groups, mask="none").double()
    all_kept = [set(c) for c in ref_groups(groups)]
    assert mc.discriminality(fmap, y).item() == pytest.approx(ref_dis(fmap, y, groups, all_kept).item(), rel=1e-9)
    assert mc.diversity(fmap).item() == pytest.approx(float(ref_div(fmap, groups)), rel=1e-9)


@pytest.mark.parametrize("groups", [[2, 3, 3], [1, 4]])
def test_class_channels_are_the_groups_channels(groups):
    """class_channels(F, y)[b, j] = F[b, channel j of group y_b]; the rest is -inf."""
    fmap = torch.randn(3, sum(groups), 2, 5, dtype=torch.float64)
    y = torch.tensor([len(groups) - 1, 0, 0])
    out = MCLoss(groups).class_channels(fmap, y)
    assert out.shape == (3, max(groups), 2, 5)
    for b in range(3):
        chans = ref_groups(groups)[y[b]]
        for j in range(max(groups)):
            if j < len(chans):
                assert torch.equal(out[b, j], fmap[b, chans[j]])
            else:
                assert torch.isinf(out[b, j]).all() and (out[b, j] < 0).all()


def test_mask_drops_floor_half_of_each_group_and_matches_loops():
    groups = [3, 4, 5, 1]
    mc = MCLoss(groups, mask="batch")
    torch.manual_seed(0)
    m = mc.channel_mask(1, torch.device("cpu"))[0]
    for i, g in enumerate(groups):
        assert m[i, :g].sum().item() == g - g // 2 and m[i, g:].sum().item() == 0
    # the masked discriminality equals the loop reference with the same mask
    fmap = torch.rand(2, sum(groups), 2, 2, dtype=torch.float64)
    y = torch.tensor([1, 2])
    torch.manual_seed(5)
    ours = mc.double().train().discriminality(fmap, y)
    torch.manual_seed(5)
    mask = mc.channel_mask(1, torch.device("cpu"))[0]
    keep = [{c for j, c in enumerate(chans) if mask[i, j] > 0} for i, chans in enumerate(ref_groups(groups))]
    assert ours.item() == pytest.approx(ref_dis(fmap, y, groups, keep).item(), rel=1e-9)


def test_sample_masks_differ_between_images():
    mc = MCLoss([4] * 6, mask="sample")
    m = mc.channel_mask(8, torch.device("cpu"))
    assert m.shape == (8, 6, 4) and not all(torch.equal(m[0], m[s]) for s in range(1, 8))


def test_diversity_range_and_extremes():
    xi = 4
    mc = MCLoss([xi, xi])
    same = torch.randn(1, 1, 5, 5).repeat(1, 2 * xi, 1, 1)
    assert mc.diversity(same).item() == pytest.approx(1.0)            # identical channels: 1
    onehot = torch.full((1, 2 * xi, 5, 5), -1e4)
    for j in range(2 * xi):
        onehot[0, j].view(-1)[j] = 1e4                                 # each channel peaks somewhere else
    assert mc.diversity(onehot).item() == pytest.approx(xi)           # disjoint one-hot channels: xi
    rnd = mc.diversity(torch.randn(3, 2 * xi, 4, 4) * 3).item()
    assert 1.0 <= rnd <= xi


def test_gradients():
    mc = MCLoss([2, 3], mask="none").double()
    fmap = torch.rand(2, 5, 2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    assert torch.autograd.gradcheck(lambda f: mc.diversity(f), (fmap,))
    # max is not differentiable at ties; random inputs have none
    assert torch.autograd.gradcheck(lambda f: mc.discriminality(f, y), (fmap,))


def test_channel_groups():
    assert channel_groups(2048, 200) == [10] * 152 + [11] * 48           # the paper's ResNet-50 recipe
    assert channel_groups(600, 200, xi=3) == [3] * 200
    with pytest.raises(ValueError, match=r"c x xi = 200 x 3 = 600 channels, but the features have 512"):
        channel_groups(512, 200, xi=3)
    with pytest.raises(ValueError, match="cannot give"):
        channel_groups(5, 6)


def test_classifier_terms_and_weights():
    model = MCLossClassifier(SmallResNet((4, 9), (1, 1)), num_classes=3, xi=3, mu=2.0, lam=0.5)
    x, y = torch.randn(4, 3, 17, 19), torch.tensor([0, 1, 2, 0])
    logits, losses = model(x, y)
    assert logits.shape == (4, 3) and set(losses) == {"ce", "dis", "div"}
    model.eval()                                                       # no mask in eval mode
    fmap = model.features(x)
    _, ev = model(x, y)
    assert ev["div"].item() == pytest.approx(-2.0 * 0.5 * model.mc.diversity(fmap).item(), rel=1e-5)
    assert ev["dis"].item() == pytest.approx(2.0 * model.mc.discriminality(fmap, y).item(), rel=1e-5)
    only_div = MCLossClassifier(SmallResNet((4, 9), (1, 1)), 3, xi=3, use_dis=False)
    assert set(only_div(x, y)[1]) == {"ce", "div"}
    with pytest.raises(ValueError, match="channels"):
        MCLossClassifier(SmallResNet((4, 8), (1, 1)), num_classes=3, xi=3)
    assert math.isfinite(sum(losses.values()).item())
