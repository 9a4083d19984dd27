"""CIN: SCI, CCI, the contrastive loss and the pairs, against references written from the
equations (loops), hand examples and limits."""

import math

import pytest
import torch
import torch.nn.functional as F

from fglib.models.backbones import SmallResNet
from fglib.core.config import book_profile
from fglib.models.blocks import NonLocal, SqueezeExcite
from fglib.models.cin import (
                              SCI,
                              ChannelInteractionNet,
                              cci_weights,
                              contrastive_loss,
                              pair_indices,
                              port_pair_indices,
                              sci_weights,
                              )


def loop_sci_weights(x, sign=-1.0, tau=1.0):
    """W_ij = exp(sign E_ij / tau) / sum_k exp(sign E_ik / tau), E_ij = sum_l X_il X_jl."""
    b, c, l = x.shape
    w = torch.zeros(b, c, c, dtype=x.dtype)
    for n in range(b):
        e = [[sum(float(x[n, i, m] * x[n, j, m]) for m in range(l)) for j in range(c)]
             for i in range(c)]
        for i in range(c):
            top = max(sign * e[i][k] / tau for k in range(c))     # for stability only
            den = sum(math.exp(sign * e[i][k] / tau - top) for k in range(c))
            for j in range(c):
                w[n, i, j] = math.exp(sign * e[i][j] / tau - top) / den
    return w


def loop_conv3x3(conv, y):
    """phi(Y) written as the sum over the 3 x 3 window (zero padding)."""
    b, c, h, w = y.shape
    out = torch.zeros(b, conv.out_channels, h, w, dtype=y.dtype)
    conv = conv.requires_grad_(False)
    for n in range(b):
        for o in range(conv.out_channels):
            for r in range(h):
                for s in range(w):
                    acc = 0.0 if conv.bias is None else float(conv.bias[o])
                    for i in range(c):
                        for dr in (-1, 0, 1):
                            for ds in (-1, 0, 1):
                                if 0 <= r + dr < h and 0 <= s + ds < w:
                                    acc += float(conv.weight[o, i, dr + 1, ds + 1]
                                                 * y[n, i, r + dr, s + ds])
                    out[n, o, r, s] = acc
    return out


def random_phi(sci, seed=0):
    """phi with random weights and a batch norm that is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sci.phi.weight.copy_(torch.randn(sci.phi.weight.shape, generator=g) * 0.3)
        for t in (sci.bn.weight, sci.bn.bias, sci.bn.running_mean):
            t.copy_(torch.randn(t.shape, generator=g) * 0.5)
        sci.bn.running_var.copy_(torch.rand(sci.bn.running_var.shape, generator=g) + 0.5)
    return sci


def bn_reference(bn, u, mean=None, var=None):
    """gamma (u - mean) / sqrt(var + eps) + beta, per channel; the running statistics
    unless mean and var are given."""
    mean = bn.running_mean if mean is None else mean
    var = bn.running_var if var is None else var
    out = torch.empty_like(u)
    for k in range(u.shape[1]):
        out[:, k] = (bn.weight[k] * (u[:, k] - mean[k]) / math.sqrt(float(var[k]) + bn.eps)
                     + bn.bias[k])
    return out


def test_rows_are_distributions():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 11, dtype=torch.float64)
    for attention in ("sci", "pos", "identity", "uniform"):
        w = sci_weights(x, attention)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(2), torch.ones(3, 7, dtype=torch.float64))


def test_hand_example_identity_features():
    """X = I_2: E = I, so each row is softmax(-1, 0) = (0.2689, 0.7311), mirrored."""
    w = sci_weights(torch.eye(2, dtype=torch.float64)[None])
    expected = torch.tensor([[0.2689, 0.7311], [0.7311, 0.2689]], dtype=torch.float64)
    torch.testing.assert_close(w[0], expected, atol=1e-4, rtol=0)


def test_softmax_of_minus_e_is_softmax_of_max_minus_e():
    """SCI is DANet's channel attention: softmax(-E) = softmax(max_k E_ik - E)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, dtype=torch.float64)
    e = x @ x.transpose(1, 2)
    danet = torch.softmax(e.amax(2, keepdim=True) - e, dim=2)
    torch.testing.assert_close(sci_weights(x), danet)


@pytest.mark.parametrize("attention,sign", [("sci", -1.0), ("pos", 1.0)])
@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_weights_match_loop_reference(attention, sign, tau):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(sci_weights(x, attention, tau),
                               loop_sci_weights(x, sign, tau))


def test_temperature_limits():
    """tau -> 0: one-hot on the least correlated channel; tau -> inf: uniform rows."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    e = x @ x.transpose(1, 2)
    gaps = e.sort(2).values.diff(dim=2)
    assert gaps[..., 0].min() > 0.01 and gaps[..., -1].min() > 0.01   # a clear winner
    sharp = sci_weights(x, "sci", tau=1e-4)
    one_hot = F.one_hot(e.argmin(2), 5).to(torch.float64)
    torch.testing.assert_close(sharp, one_hot, atol=1e-6, rtol=0)
    flat = sci_weights(x, "sci", tau=1e8)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 5), atol=1e-6, rtol=0)
    pos = sci_weights(x, "pos", tau=1e-4)        # Pos-SCI picks the most correlated
    torch.testing.assert_close(pos, F.one_hot(e.argmax(2), 5).to(torch.float64),
                               atol=1e-6, rtol=0)


def test_sci_matches_loop_reference():
    """Z = phi(W X) + X with W, Y and phi written out as loops."""
    torch.manual_seed(0)
    sci = random_phi(SCI(3)).double().eval()
    fmap = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    w = loop_sci_weights(fmap.flatten(2))
    y = torch.einsum("bij,bjl->bil", w, fmap.flatten(2)).view(fmap.shape)
    for n in range(2):                               # Y_i = sum_j W_ij X_j, as a loop
        for i in range(3):
            yi = sum(w[n, i, j] * fmap[n, j] for j in range(3))
            torch.testing.assert_close(y[n, i], yi)
    z, w_got, y_got, _ = sci.relations(fmap)
    torch.testing.assert_close(w_got, w)
    torch.testing.assert_close(y_got, y)
    with torch.no_grad():
        torch.testing.assert_close(z, bn_reference(sci.bn, loop_conv3x3(sci.phi, y)) + fmap)


def test_temperature_l_divides_by_locations():
    sci = SCI(4, temperature="l").double()
    fmap = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(sci.weights(fmap), loop_sci_weights(fmap.flatten(2), tau=15))


def test_controls():
    """W = I gives Z = phi(X) + X; W uniform gives Y = the channel mean everywhere."""
    fmap = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    ident = random_phi(SCI(4, "identity")).double().eval()
    z, w, y, _ = ident.relations(fmap)
    torch.testing.assert_close(y, fmap)
    torch.testing.assert_close(z, ident.bn(ident.phi(fmap)) + fmap)
    _, w, y, _ = SCI(4, "uniform").double().relations(fmap)
    torch.testing.assert_close(y, fmap.mean(1, keepdim=True).expand_as(fmap))


def test_phi_starts_at_zero():
    fmap = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(SCI(6)(fmap), fmap)


def loop_cci(w_a, w_b, eta):
    out = torch.zeros_like(w_a)
    for p in range(w_a.shape[0]):
        for i in range(w_a.shape[1]):
            for j in range(w_a.shape[2]):
                out[p, i, j] = abs(float(w_a[p, i, j] - eta[p] * w_b[p, i, j]))
    return out


def test_cci_weights_loop_reference_and_limits():
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    w = sci_weights(x)
    eta = torch.tensor([0.0, 0.5, 1.0, -2.0], dtype=torch.float64)
    w_ab = cci_weights(w[:2].repeat(2, 1, 1), w[2:].repeat(2, 1, 1), eta)
    torch.testing.assert_close(w_ab, loop_cci(w[:2].repeat(2, 1, 1), w[2:].repeat(2, 1, 1), eta))
    torch.testing.assert_close(w_ab[0], w[0])                   # eta = 0: W_AB = W_A
    same = cci_weights(w[:1], w[:1], torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(same, torch.zeros_like(same))    # W_AA with eta = 1: 0


def test_cci_with_eta_zero_gives_sci_features():
    """eta = 0: Z'_A = phi(W_A X_A) + X_A = Z_A."""
    model = _model(contrastive="cci").double()
    random_phi(model.block)
    with torch.no_grad():
        model.psi.weight.zero_()
        model.psi.bias.zero_()
    x, y = _batch()
    model.train()
    out = model.pair_forward(model.backbone(x), y)
    torch.testing.assert_close(out["eta"], torch.zeros_like(out["eta"]))
    torch.testing.assert_close(out["z_a"], out["z"][out["a"]])
    torch.testing.assert_close(out["z_b"], out["z"][out["b"]])


def test_contrastive_loss_hand_example():
    """d = ||(0, 0) - (3, 4)|| = 5: same class 25; other class (6 - 5)^2 = 1, or 0 at
    beta = 4 (already beyond the margin)."""
    h_a = torch.zeros(3, 2, dtype=torch.float64)
    h_b = torch.tensor([[3.0, 4.0]] * 3, dtype=torch.float64)
    same = torch.tensor([True, False, False])
    assert contrastive_loss(h_a[:1], h_b[:1], same[:1], beta=6.0).item() == pytest.approx(25)
    assert contrastive_loss(h_a[1:2], h_b[1:2], same[1:2], 6.0).item() == pytest.approx(1)
    assert contrastive_loss(h_a[1:2], h_b[1:2], same[1:2], 4.0).item() == 0
    assert contrastive_loss(h_a, h_b, same, 6.0).item() == pytest.approx((25 + 1 + 1) / 3)


def loop_contrastive(h_a, h_b, same, beta):
    total = 0.0
    for p in range(len(same)):
        d = math.sqrt(sum(float(u - v) ** 2 for u, v in zip(h_a[p], h_b[p])))
        total += d ** 2 if same[p] else max(0.0, beta - d) ** 2
    return total / len(same)


def test_contrastive_loss_loop_reference_and_gradient():
    h_a = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    h_b = torch.randn(8, 5, dtype=torch.float64)
    same = torch.tensor([True, False] * 4)
    loss = contrastive_loss(h_a, h_b, same, 3.0)
    assert loss.item() == pytest.approx(loop_contrastive(h_a.detach(), h_b, same, 3.0))
    assert torch.autograd.gradcheck(lambda a: contrastive_loss(a, h_b, same, 3.0), (h_a,))


def _balanced_batches(classes=8, per_class=8, k=4, m=4, epochs=2):
    cfg = book_profile(**{"train.sampler": "balanced", "train.classes_per_batch": k,
                          "train.images_per_class": m})
    from fglib.engine.train import epoch_batches

    labels = torch.arange(classes).repeat_interleave(per_class)
    return [labels[b] for e in range(epochs) for b in epoch_batches(labels, cfg, e)]


def test_pairs_hold_positives_and_negatives_where_the_port_has_none():
    """On the class-balanced sampler's batches (class-blocked, k classes x m images),
    the book's pairs are disjoint (N pairs of 2N images, as in the paper), half of them
    positive; the port's (i, i + B/2) pairing has no positive pair at all, which is why
    its contrastive loss never trains CCI."""
    for labels in _balanced_batches():
        a, b, same = pair_indices(labels)
        assert len(a) == len(labels) // 2
        assert int(same.sum()) == len(a) // 2 and int((~same).sum()) == len(a) - len(a) // 2
        used = a.tolist() + b.tolist()
        assert len(set(used)) == len(used)                      # every image at most once
        torch.testing.assert_close(same, labels[a] == labels[b])
        pa, pb, port_same = port_pair_indices(labels)
        assert len(pa) == len(labels) // 2 and (pb - pa == len(labels) // 2).all()
        assert not port_same.any()


# Not the public port's (Hawkeye's) code, which the book neither vendors nor runs: the test's
# own restatement of it, written from its source. The CIN chapter's claim that the port's CCI
# loss is zero on every batch of the book's sampler (book/cin.md, the paragraph "The public port
# (Hawkeye) pairs image i with image i + B/2") rests on this reading, and says so.
def port_contrastive_loss(h, labels, beta):
    """The port's loss as its code computes it (restated): pairs (i, i + B/2); a pair is
    called positive when y_i equals the single label y_{B/2}; the sum of the positives'
    squared distances S; the hinge term of the negatives is computed, then replaced by
    S^2; loss = S + S^2."""
    half = len(labels) // 2
    called_positive = labels[:half] == labels[half]
    d = (h[:half] - h[half:]).norm(dim=1)
    s = (d[called_positive] ** 2).sum()
    _ = F.relu(beta - d[~called_positive])                    # computed, then overwritten
    return s + s ** 2


def test_port_loss_is_zero_on_class_blocked_batches():
    """With an even number of classes per class-blocked batch (the book's 16 x 4), the
    halves share no class, so no pair is called positive and the loss is 0 + 0^2."""
    torch.manual_seed(0)
    for labels in _balanced_batches():
        h = torch.randn(len(labels), 8)
        assert port_contrastive_loss(h, labels, 0.5).item() == 0
        a, b, same = pair_indices(labels)
        assert contrastive_loss(h[a], h[b], same, 0.5).item() > 0


def test_pairs_refuse_a_batch_without_partners():
    with pytest.raises(ValueError, match="balanced"):
        pair_indices(torch.tensor([0, 0, 0, 0]))
    with pytest.raises(ValueError, match="images_per_class >= 4"):
        pair_indices(torch.tensor([0, 0, 1, 1, 1, 1]))


def _model(**options):
    return ChannelInteractionNet(SmallResNet((6, 10), (1, 1)), 3, **options)


def _batch(size=(9, 11)):
    torch.manual_seed(1)
    y = torch.arange(3).repeat_interleave(4)
    return torch.randn(12, 3, *size, dtype=torch.float64), y


@pytest.mark.parametrize("options,terms", [
    ({}, {"ce", "cont"}),
    ({"contrastive": "sci"}, {"ce", "cont"}),
    ({"contrastive": "none"}, {"ce"}),
    ({"attention": "pos", "contrastive": "none"}, {"ce"}),
    ({"block": "se", "contrastive": "none"}, {"ce"}),
    ({"block": "nonlocal", "contrastive": "none"}, {"ce"}),
])
def test_loss_terms_and_backward(options, terms):
    model = _model(**options).double().train()
    if isinstance(model.block, SCI):
        random_phi(model.block)                   # phi = 0 would block psi's gradient
    x, y = _batch()
    logits, losses = model(x, y)
    assert logits.shape == (12, 3) and set(losses) == terms
    for name, loss in losses.items():             # every term reaches the parts it trains
        model.zero_grad()
        loss.backward(retain_graph=True)
        grads = {n: p.grad for n, p in model.named_parameters()}
        # every term trains the backbone's first layer, and the parts it is made of: the
        # contrastive term h, and with CCI's pairs (the default) also psi and phi
        cci = options.get("contrastive", "cci") == "cci"
        trained = {"ce": ["backbone.stem.0.weight", "head.fc.weight"],
                   "cont": ["backbone.stem.0.weight", "h.weight"]
                   + (["psi.weight", "block.phi.weight"] if cci else [])}[name]
        assert ("psi.weight" in grads) == cci
        for n in trained:
            assert grads[n] is not None and grads[n].abs().sum() > 0, (name, n)


@pytest.mark.parametrize("options", [{}, {"block": "se", "contrastive": "none"},
                                     {"block": "nonlocal", "contrastive": "none"}])
def test_evaluation_at_batch_size_one(options):
    model = _model(**options).double()
    if isinstance(model.block, SCI):
        random_phi(model.block)
    if isinstance(model.block, NonLocal):
        with torch.no_grad():
            model.block.bn.weight.normal_()
    model.eval()
    x, _ = _batch(size=(13, 7))
    with torch.no_grad():
        batch, losses = model(x)
        single = torch.cat([model(x[i:i + 1])[0] for i in range(len(x))])
    assert losses == {}
    torch.testing.assert_close(batch, single)


def test_test_time_logits_ignore_cci():
    """At test time the logits are W_fc GAP(Z) + b from SCI alone."""
    model = _model().double().eval()
    random_phi(model.block)
    x, _ = _batch()
    with torch.no_grad():
        z = model.block(model.backbone(x))
        torch.testing.assert_close(model(x)[0], model.head.fc(z.mean((2, 3))))


def test_bad_options_say_what_to_do():
    with pytest.raises(ValueError, match="contrastive='none'"):
        _model(block="se")
    with pytest.raises(ValueError, match="attention must be"):
        _model(attention="negative")
    with pytest.raises(ValueError, match="temperature"):
        _model(temperature=0)


def test_weights_in_float32_under_autocast():
    sci = SCI(8)
    fmap = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = sci.weights(fmap.bfloat16())
    assert w.dtype == torch.float32


def test_squeeze_excite_reference():
    se = SqueezeExcite(32, reduction=16).double()
    fmap = torch.randn(2, 32, 3, 5, dtype=torch.float64)
    z = fmap.mean((2, 3))
    s = torch.sigmoid(se.w2.weight @ torch.relu(se.w1.weight @ z[0] + se.w1.bias)
                      + se.w2.bias)
    torch.testing.assert_close(se(fmap)[0], s[:, None, None] * fmap[0])
    assert se.w1.out_features == 2


def test_non_local_loop_reference():
    nl = NonLocal(4).double().eval()
    with torch.no_grad():
        nl.w_z.weight.normal_()
        nl.bn.weight.normal_()
        nl.bn.bias.normal_()
    fmap = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    t, p, g = (m(fmap).flatten(2)[0] for m in (nl.theta, nl.phi, nl.g))   # (2, 6) each
    l = 6
    y = torch.zeros(2, l, dtype=torch.float64)
    for j in range(l):
        scores = [float((t[:, j] @ p[:, k]).detach()) for k in range(l)]
        den = sum(math.exp(s) for s in scores)
        for k in range(l):
            y[:, j] += math.exp(scores[k]) / den * g[:, k]
    with torch.no_grad():
        expected = bn_reference(nl.bn, nl.w_z(y.view(1, 2, 2, 3))) + fmap
        torch.testing.assert_close(nl(fmap), expected)
    torch.testing.assert_close(NonLocal(4).double()(fmap), fmap)   # BN scale 0 at start


def test_cci_forward_matches_hand_computation():
    """With random phi and psi, in training: eta = psi([GAP Y_A, GAP Y_B]), gamma =
    psi([GAP Y_B, GAP Y_A]), Z'_A = BN(conv(|W_A - eta W_B| X_A)) + X_A and Z'_B
    likewise with W_BA, where BN uses the mean and variance of the SCI pass's conv
    outputs over the batch; pair by pair, from the loop references."""
    model = _model().double().train()
    random_phi(model.block)
    with torch.no_grad():
        model.psi.weight.normal_(0, 0.5)
        model.psi.bias.fill_(0.3)
    x, y = _batch(size=(5, 6))
    fmap = model.backbone(x).detach()
    out = model.pair_forward(fmap, y)
    conv, bn = model.block.phi, model.block.bn
    w_all = loop_sci_weights(fmap.flatten(2))
    y_all = torch.einsum("bij,bjl->bil", w_all, fmap.flatten(2)).view(fmap.shape)
    with torch.no_grad():
        u_all = loop_conv3x3(conv, y_all)                  # the SCI pass's conv outputs
        mean, var = u_all.mean((0, 2, 3)), u_all.var((0, 2, 3), unbiased=False)
        torch.testing.assert_close(out["z"], bn_reference(bn, u_all, mean, var) + fmap)
        for p, (i, j) in enumerate(zip(out["a"].tolist(), out["b"].tolist())):
            y_i, y_j = y_all[i].mean((1, 2)), y_all[j].mean((1, 2))      # GAP(Y)
            psi = lambda u, v: float(model.psi.weight[0] @ torch.cat([u, v])
                                     + model.psi.bias[0])
            eta, gamma = psi(y_i, y_j), psi(y_j, y_i)
            assert out["eta"][p].item() == pytest.approx(eta)
            assert out["gamma"][p].item() == pytest.approx(gamma)
            for own, other, coef, img, key in ((i, j, eta, i, "z_a"),
                                               (j, i, gamma, j, "z_b")):
                w_cci = loop_cci(w_all[own][None], w_all[other][None],
                                 torch.tensor([coef]))[0]
                y_cci = (w_cci @ fmap[img].flatten(1)).view(1, *fmap.shape[1:])
                u = loop_conv3x3(conv, y_cci)
                expected = bn_reference(bn, u, mean, var)[0] + fmap[img]
                torch.testing.assert_close(out[key][p], expected)


def test_full_model_under_autocast():
    model = _model().train()
    random_phi(model.block)
    x, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, losses = model(x.float(), y)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
