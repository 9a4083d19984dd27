"""How each registered model is wired, beyond its formulas: loss weights applied, images that do not
see each other, per-part modules that are distinct, structure as configured, and the model
consuming what its builders produce (checked through hooks)."""
import pytest
import torch
import torch.nn.functional as F

from fglib.core.config import ModelConfig, book_profile
from fglib.engine.train import train
from fglib.models import MODEL_CLASSES, MODELS, build_model
from fglib.models.apinet import pair_indices
from fglib.models.backbones import SmallResNet
from fglib.models.patches import cut, ranked_peaks
from tests.conftest import TINY

# The settings that change what the forward pass does, beside each method's defaults.
VARIANTS = {
    "baseline": [{}], "bilinear": [{}], "mcloss": [{}], "apinet": [{}], "cin": [{}],
    "mamc": [{}, {"pooling": "gap"}],
    "rra": [{}, {"source": "peaks", "proposals": 3}, {"source": "peaks", "sequence": "distinct"},
            {"source": "peaks", "evaluation": "mean", "proposals": 3}, {"lstm": False}],
}
# (method, weight option, its value, the loss terms it multiplies)
WEIGHTS = [
    ("mcloss", "mu", 1.5, {"dis", "div"}),
    ("mcloss", "lam", 2.5, {"div"}),
    ("apinet", "lam", 1.0, {"rank"}),
    ("cin", "alpha", 2.0, {"cont"}),
    ("mamc", "lam", 0.5, {"sasc", "sadc", "dasc"}),
    ("rra", "lam", 1.0, {"ce_local"}),
]


def model_of(method, options=None, num_classes=4, widths=(6, 10), seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(method=method, widths=widths, blocks=(1,) * len(widths), bilinear_dim=3,
                      options=dict(options or {}))
    return build_model(method, SmallResNet(widths, (1,) * len(widths)), num_classes, cfg).double()


def batch(method, num_classes=4, size=24, seed=1):
    needs = MODEL_CLASSES[method].needs
    per = max(2, needs.images_per_class)
    y = torch.arange(num_classes).repeat_interleave(per)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(y), 3, size, size, generator=g, dtype=torch.float64), y


@pytest.mark.parametrize("method,options", [(m, o) for m in sorted(MODELS) for o in VARIANTS[m]])
def test_every_image_alone_gives_what_it_gives_inside_the_batch(method, options):
    """Evaluation: each image's logits do not depend on the other images of its batch (a wrong
    batch layout, e.g. an LSTM reading the batch as time, mixes them)."""
    model = model_of(method, options).eval()
    x, _ = batch(method)
    with torch.no_grad():
        together, _ = model(x)
        for i in range(len(x)):
            alone, _ = model(x[i:i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method,option,value,terms", WEIGHTS)
def test_a_doubled_loss_weight_doubles_its_terms_and_nothing_else(method, option, value, terms):
    x, y = batch(method)
    out = {}
    for w in (value, 2 * value):
        model = model_of(method, {option: w}).train()
        torch.manual_seed(7)                          # the same draws (RRA's training patches)
        out[w] = {k: v.item() for k, v in model(x, y)[1].items()}
    assert terms <= set(out[value]), (terms, set(out[value]))
    for k, v in out[value].items():
        expected = 2 * v if k in terms else v
        assert out[2 * value][k] == pytest.approx(expected, rel=1e-9, abs=1e-12), k


def test_the_engine_minimises_the_sum_of_the_terms_it_logs(isolated_data):
    cfg = book_profile(**{**TINY, "model.method": "mcloss", "model.options": {"xi": 4}})
    history = train(cfg, progress=False).history
    assert history and all({"ce", "dis", "div"} <= set(row) for row in history)
    for row in history:
        terms = sum(v for k, v in row.items() if k in ("ce", "dis", "div"))
        assert row["loss"] == pytest.approx(terms, rel=1e-6)


def test_per_part_and_per_stream_modules_are_distinct():
    mamc = model_of("mamc", {"parts": 3})
    excite, w3 = mamc.osme.excite, mamc.osme.w3
    assert len(excite) == len(w3) == 3                    # P excitations, P embeddings
    for modules in (excite, w3):
        ids = [{id(p) for p in m.parameters()} for m in modules]
        assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    rra = model_of("rra")
    assert rra.local is not rra.backbone                  # F_l and F_g: own weights
    assert not {id(p) for p in rra.local.parameters()} & {id(p) for p in rra.backbone.parameters()}
    assert rra.local_head is not rra.head


@pytest.mark.parametrize("steps,hidden", [(3, None), (5, 7)])
def test_rra_structure_follows_the_configuration_and_the_paper(steps, hidden):
    model = model_of("rra", {"steps": steps, "hidden": hidden, "source": "peaks",
                             "sequence": "distinct", "proposals": steps})
    lstm = model.lstm
    assert lstm.num_layers == 2 and lstm.batch_first       # the paper's stacked LSTM, (B, T, c)
    assert lstm.hidden_size == (hidden or model.backbone.out_channels)
    x, _ = batch("rra")
    with torch.no_grad():
        v = model.sequences(x, model.features(x))
    assert v.shape == (len(x), 1, steps, model.backbone.out_channels)   # one sequence of T steps


def test_rra_reads_the_patches_its_proposals_name():
    """The local stream consumes cut(x, boxes) of the ranked proposals, in rank order."""
    model = model_of("rra", {"source": "peaks", "sequence": "distinct", "proposals": 3,
                             "steps": 3}).eval()
    x, _ = batch("rra")
    seen = []
    handle = model.local.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
        boxes = model.candidates(x, model.features(x))               # (B, 3, 4) ranked
    handle.remove()
    side = max(1, round(model.patch * x.shape[-1]))
    expected = cut(x, boxes, side).flatten(0, 1)                     # (B * 3, C, side, side)
    assert torch.equal(torch.cat(seen), expected)


def test_apinet_pairs_each_image_with_the_builders_partners():
    model = model_of("apinet").train()
    x, y = batch("apinet")
    out = model.pair_forward(x, y)
    intra, inter = pair_indices(out["features"], y)
    i = torch.arange(len(y))
    assert torch.equal(out["i1"], torch.cat([i, i]))
    assert torch.equal(out["i2"], torch.cat([intra, inter]))


def test_peak_suppression_keeps_a_cell_at_exactly_the_minimum_distance():
    """RRA's setting: 48 px images, stride 4 (12 x 12 cells of 4 px), patch 0.5, so the minimum
    distance is 12 px: exactly three cells. A cell 3 cells away is kept, one 2 cells away is not."""
    m = torch.zeros(1, 12, 12)
    m[0, 5, 5], m[0, 5, 8], m[0, 5, 7] = 3.0, 2.0, 2.5    # best; 3 cells right; 2 cells right
    got = ranked_peaks(m, 2, 48, min_distance=12.0)
    assert got[0].tolist() == [[22.0, 22.0], [34.0, 22.0]]   # the cell at 12 px, not the one at 8
    just_inside = ranked_peaks(m, 2, 48, min_distance=12.01)
    assert just_inside[0, 1].tolist() != [34.0, 22.0]


def test_rra_reads_the_attention_weighted_sum_of_its_steps_not_the_last_one():
    """z_l = W_l h + b_l with h = sum_t a_t o_t (the paper), checked on what the local head is fed."""
    model = model_of("rra", {"source": "peaks", "sequence": "distinct", "proposals": 4,
                             "steps": 4}).eval()
    x, _ = batch("rra")
    fed, outs = [], []
    hooks = [model.local_head.register_forward_pre_hook(lambda m, args: fed.append(args[0])),
             model.lstm.register_forward_hook(lambda m, args, out: outs.append(out[0]))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    o = outs[0]                                                        # (B, T, H)
    a = torch.softmax(model.attend.w(o).squeeze(-1), 1)                # a_t = softmax_t(w^T o_t)
    torch.testing.assert_close(fed[0], (a[..., None] * o).sum(1))
    assert not torch.allclose(fed[0], o[:, -1])


CLASSIFICATION_TERMS = {"ce", "ce_local", "ce_global"}


@pytest.mark.parametrize("method", sorted(MODELS))
def test_label_smoothing_reaches_every_classification_term_and_only_those(method):
    """train.label_smoothing, handed to build_model, smooths each classification term: a term is
    (1 - eps) CE(one-hot) + eps CE(uniform), linear in eps, so its values at eps = 0, 0.1, 0.2
    are equally spaced and not all equal; the auxiliary terms (L_dis, rank, contrastive, N-pair)
    do not move."""
    x, y = batch(method)
    out = {}
    for eps in (0.0, 0.1, 0.2):
        torch.manual_seed(0)
        cfg = ModelConfig(method=method, widths=(6, 10), blocks=(1, 1), bilinear_dim=3)
        model = build_model(method, SmallResNet((6, 10), (1, 1)), 4, cfg,
                            label_smoothing=eps).double().train()
        assert model.label_smoothing == eps
        torch.manual_seed(7)
        out[eps] = {k: v.item() for k, v in model(x, y)[1].items()}
    smoothed = CLASSIFICATION_TERMS & set(out[0.0])
    assert smoothed, f"{method} logs none of {sorted(CLASSIFICATION_TERMS)}"
    for k in out[0.0]:
        a, b, c = out[0.0][k], out[0.1][k], out[0.2][k]
        if k in smoothed:
            assert b != pytest.approx(a, rel=1e-6), k
            assert c - b == pytest.approx(b - a, rel=1e-9, abs=1e-12), k
        else:
            assert a == b == c, k


def test_classifier_ce_is_the_smoothed_cross_entropy_of_its_equation():
    """Classifier.ce against a loop over images and classes: -sum_k q_k log p_k with
    q = (1 - eps) one-hot(y) + eps / K."""
    model = model_of("baseline")
    model.label_smoothing = 0.3
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    total = 0.0
    for i in range(5):
        z = logits[i].tolist()
        log_norm = torch.logsumexp(logits[i], 0).item()
        for k in range(4):
            q = (1 - 0.3) * (k == int(y[i])) + 0.3 / 4
            total -= q * (z[k] - log_norm)
    assert model.ce(logits, y).item() == pytest.approx(total / 5, rel=1e-12)
