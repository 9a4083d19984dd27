"""RRA (fglib.models.rra) against the definitions: attention over time, the two losses and the
prediction, the patch sequences, deterministic evaluation and the frozen proposal network."""
import pytest
import torch
import torch.nn.functional as F

from fglib.core.config import book_profile
from fglib.experiments import regimes, runner, store, usage
from fglib.models.backbones import SmallResNet
from fglib.models.rra import RRANet, TemporalAttention


def small(**options):
    torch.manual_seed(0)
    return RRANet(SmallResNet((4, 8), (1, 1)), 3, **options).double()


def images(b=6, size=16):
    torch.manual_seed(1)
    return torch.randn(b, 3, size, size, dtype=torch.float64), torch.arange(b) % 3


def test_attention_weights_are_a_distribution_over_time():
    att = TemporalAttention(5).double()
    o = torch.randn(4, 7, 5, dtype=torch.float64)
    h, a = att(o)
    assert (a >= 0).all() and torch.allclose(a.sum(1), torch.ones(4, dtype=torch.float64))
    ref = torch.stack([sum(a[b, t] * o[b, t] for t in range(7)) for b in range(4)])
    assert torch.allclose(h, ref)                                  # h = sum_t a_t o_t


def test_one_step_has_weight_one_and_zero_scores_give_the_mean():
    att = TemporalAttention(5).double()
    o = torch.randn(3, 1, 5, dtype=torch.float64)
    h, a = att(o)
    assert torch.equal(a, torch.ones(3, 1, dtype=torch.float64)) and torch.allclose(h, o[:, 0])
    torch.nn.init.zeros_(att.w.weight)                             # w^T o_t = 0 for every t
    o = torch.randn(3, 6, 5, dtype=torch.float64)
    h, a = att(o)
    assert torch.allclose(a, torch.full((3, 6), 1 / 6, dtype=torch.float64))
    assert torch.allclose(h, o.mean(1))


@pytest.mark.parametrize("options", [{}, {"source": "peaks"},
                                     {"source": "peaks", "sequence": "distinct"},
                                     {"source": "peaks", "evaluation": "mean"},
                                     {"lstm": False}, {"local_input": "image"}])
def test_losses_are_named_and_the_prediction_sums_the_streams(options):
    model = small(lam=0.7, **options).eval()          # evaluation: the same patches twice
    x, y = images()
    logits, losses = model(x, y)
    assert set(losses) == {"ce_global", "ce_local"}
    z_g = model.head(model.features(x).mean((2, 3)))
    z_l, _ = model.local_stream(x, model.features(x))
    assert torch.allclose(logits, z_g + 0.7 * z_l)                 # z = z_g + lambda z_l
    assert torch.allclose(losses["ce_global"], F.cross_entropy(z_g, y))
    assert torch.allclose(losses["ce_local"], 0.7 * F.cross_entropy(z_l, y))


def test_the_local_stream_alone():
    model = small(streams="local").eval()
    x, y = images()
    logits, losses = model(x, y)
    assert set(losses) == {"ce_local"}
    assert torch.allclose(logits, model.local_stream(x, model.features(x))[0])


@pytest.mark.parametrize("options", [{"source": "peaks"}, {"source": "peaks", "evaluation": "mean"},
                                     {"source": "peaks", "sequence": "distinct"}, {}])
def test_evaluation_is_deterministic_and_leaves_the_rng_alone(options):
    model = small(**options).eval()
    x, _ = images()
    state = torch.get_rng_state()
    with torch.no_grad():
        first, _ = model(x)
        second, _ = model(x)
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_draws_one_proposal_per_image():
    """In training, each image's local stream sees one of its own ranked proposals, drawn for
    that image: over repeated steps every rank is drawn for every image, and images of one
    batch draw different ranks."""
    model = small(source="peaks", proposals=3).train()
    x, y = images(6, 32)
    seen = {}
    candidates, patch_features = model.candidates, model.patch_features

    def spy_candidates(*args):
        seen["candidates"] = candidates(*args)
        return seen["candidates"]

    def spy_patches(xb, boxes):
        seen["boxes"] = boxes
        return patch_features(xb, boxes)

    model.candidates, model.patch_features = spy_candidates, spy_patches
    picks = []
    for step in range(30):
        torch.manual_seed(100 + step)
        model(x, y)
        own, boxes = seen["candidates"], seen["boxes"]
        assert boxes.shape == (6, 1, 4)
        x0, y0, x1, y1 = boxes[:, 0].unbind(-1)                      # inside the 32 x 32 image
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 32).all() and (y1 <= 32).all()
        assert ((x1 - x0) > 0).all() and ((y1 - y0) > 0).all()
        ranks = [{j for j in range(3) if torch.equal(boxes[i, 0], own[i, j])} for i in range(6)]
        assert all(ranks), "a patch that is not one of the image's own proposals"
        assert len({tuple(own[i].flatten().tolist()) for i in range(6)}) == 6  # all differ
        picks.append(ranks)
    assert all(set().union(*(p[i] for p in picks)) == {0, 1, 2} for i in range(6))
    assert any(len(set().union(*p)) > 1 and not set.intersection(*p) for p in picks)


def test_distinct_patches_are_the_ranked_peaks_and_stay_in_the_frame():
    from fglib.models.patches import ranked_peaks, square_boxes

    model = small(source="peaks", sequence="distinct", steps=3, patch=0.5).eval()
    x, _ = images(size=20)
    fmap = model.features(x)
    boxes = model.candidates(x, fmap)                    # max(proposals 4, T 3) windows
    peaks = ranked_peaks(fmap.sum(1), 4, 20, min_distance=5.0)
    assert torch.equal(boxes, square_boxes(peaks, 10.0, 20))
    d = (peaks[:, :, None] - peaks[:, None]).norm(dim=3) + torch.eye(4) * 1e9
    assert (d >= 5.0).all()                              # suppressed neighbours
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= 20).all()
    assert torch.allclose(boxes[..., 2] - boxes[..., 0], torch.tensor(10.0, dtype=boxes.dtype))


def test_mean_evaluation_averages_the_proposals_logits():
    model = small(source="peaks", evaluation="mean", proposals=3).eval()
    x, _ = images()
    fmap = model.features(x)
    boxes = model.candidates(x, fmap)
    v = model.patch_features(x, boxes)
    by_hand = torch.stack([model.local_logits(v[:, i:i + 1].expand(-1, model.steps, -1))[0]
                           for i in range(3)]).mean(0)
    assert torch.allclose(model.local_stream(x, fmap)[0], by_hand)


def test_the_repeated_patch_feeds_the_same_input_at_every_step():
    model = small(steps=5).eval()
    x, _ = images()
    seen = []
    model.lstm.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model(x)
    v = seen[0]
    assert v.shape[1] == 5 and torch.equal(v, v[:, :1].expand_as(v))


def test_the_frozen_proposal_network_loads_weights_and_never_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_DIR", str(tmp_path))
    torch.manual_seed(5)
    baseline = SmallResNet((4, 8), (1, 1))
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "abc123.pt"                         # a stored run's weights
    torch.save({f"backbone.{k}": v.half() for k, v in baseline.state_dict().items()}, path)
    with pytest.raises(ValueError, match="cam_run='abc123' needs that run's weights file"):
        small(source="peaks", cam_run="abc123")                 # the model reads no store
    with pytest.raises(store.StoreError, match="no weights for run 'nosuchrun'"):
        store.weights_of("nosuchrun")
    assert store.weights_of("abc123") == path
    cfg = book_profile(**{"model.method": "rra", "model.options": {"source": "peaks",
                                                                   "cam_run": "abc123"}})
    assert runner.run_files(cfg).proposals == path                # what the engine hands down
    model = small(source="peaks", cam_run="abc123", cam_weights=path).train()
    for k, v in baseline.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(model.cam_net.state_dict()[k], v.half().double())
    assert not model.cam_net.training
    assert all(not p.requires_grad for p in model.cam_net.parameters())
    x, y = images()
    sum(model(x, y)[1].values()).backward()
    assert all(p.grad is None for p in model.cam_net.parameters())
    # neither trained nor saved: its weights are the stored run's
    assert not any(k.startswith("cam_net") for k in model.state_dict())
    frozen = {id(p) for p in model.cam_net.parameters()}
    assert not frozen & {id(p) for p in model.parameters()}
    assert next(model.cam_net.parameters()).dtype == torch.float64    # follows .double()
    again = small(source="peaks", cam_run="abc123", cam_weights=path)
    again.load_state_dict(model.state_dict())                          # strict round trip
    from fglib.book.evidence import parameter_counts                        # costs count it at test
    counts = parameter_counts(model, x)
    frozen_n = sum(p.numel() for p in model.cam_net.parameters())
    assert counts["training"] == sum(p.numel() for p in model.parameters())
    assert counts["test"] == counts["training"] + frozen_n


def lstm_by_hand(lstm, v):
    """nn.LSTM's equations written out, layer by layer and step by step: gates
    i, f, g, o = sigma, sigma, tanh, sigma (W_i v_t + b_i + W_h h_{t-1} + b_h),
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t); (B, T, c) -> the last layer's h_t (B, T, H)."""
    for layer in range(lstm.num_layers):
        w_i, w_h = (getattr(lstm, f"weight_{k}_l{layer}") for k in ("ih", "hh"))
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        h = c = torch.zeros(len(v), lstm.hidden_size, dtype=v.dtype)
        out = []
        for t in range(v.shape[1]):
            i, f, g, o = (v[:, t] @ w_i.T + h @ w_h.T + b).chunk(4, -1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            out.append(h)
        v = torch.stack(out, 1)
    return v


@pytest.mark.parametrize("options,sequences", [
    ({"steps": 4}, "top"),                                               # the centre, 4 times
    ({"source": "peaks", "sequence": "distinct", "steps": 3, "proposals": 3}, "distinct"),
    ({"source": "peaks", "evaluation": "mean", "steps": 4, "proposals": 3}, "each")])
def test_step_logits_read_out_every_step(options, sequences):
    """step_logits[:, t] is the local classifier W_l o_t + b_l on the LSTM's output after
    t + 1 steps, recomputed here from the LSTM's equations and W_l's weights, for the
    evaluation's sequences: the best patch repeated, the T best in rank order, or (evaluation
    "mean") each proposal repeated, the logits averaged over the sequences. With one sequence,
    the local logits z_l are their attention-weighted sum (W_l is linear, the a_t sum to one)."""
    model = small(**options).eval()
    T = options["steps"]
    x, _ = images(6, 32)
    with torch.no_grad():
        steps = model.step_logits(x)                                   # (B, T, K)
        fmap = model.features(x)
        boxes = model.candidates(x, fmap)                              # (B, n, 4), best first
        w, b = model.local_head.fc.weight, model.local_head.fc.bias
        if sequences == "distinct":
            seqs = [model.patch_features(x, boxes[:, :T])]               # T different patches
        else:
            n = 1 if sequences == "top" else boxes.shape[1]
            seqs = [model.patch_features(x, boxes[:, s:s + 1]).expand(-1, T, -1)
                    for s in range(n)]
        want = torch.stack([lstm_by_hand(model.lstm, v) @ w.T + b for v in seqs]).mean(0)
        z_l, a = model.local_stream(x, fmap)
    assert steps.shape == (6, T, 3)
    assert len(seqs) == {"top": 1, "distinct": 1, "each": 3}[sequences]
    torch.testing.assert_close(steps, want, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(steps[:, 0], steps[:, -1])               # the steps differ
    if len(seqs) == 1:
        torch.testing.assert_close(z_l, (a[..., None] * steps).sum(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options,match", [({"source": "boxes"}, "source must be"),
                                           ({"sequence": "distinct"}, "needs several patches"),
                                           ({"steps": 0}, "steps must be"),
                                           ({"evaluation": "random"}, "evaluation must be")])
def test_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        small(**options)


def test_given_boxes_replace_the_model_patches():
    model = small(source="peaks", evaluation="mean").eval()
    x, _ = images(3, 32)
    with torch.no_grad():
        fmap = model.features(x)
        own = model.candidates(x, fmap)
        assert torch.equal(model(x)[0], model(x, boxes=own)[0])      # "mean": every proposal
        top = model(x, boxes=own[:, :1])[0]
        model.evaluation = "top"
        assert torch.equal(model(x)[0], top)
        other = own.flip(1)[:, :1]                              # the worst proposal instead
        assert not torch.allclose(model(x, boxes=other)[0], top)


def test_random_proposals_follow_the_generator_and_stay_among_the_candidates():
    model = small(source="peaks").eval()
    x, _ = images(5, 32)
    with torch.no_grad():
        own = model.candidates(x, model.features(x))
        a = model.random_proposals(x, torch.Generator().manual_seed(3))
        b = model.random_proposals(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (5, 1, 4)
    for i in range(5):
        assert any(torch.equal(a[i, 0], own[i, j]) for j in range(own.shape[1]))


def test_ablation_rows_take_their_patches_from_the_same_seeds_baseline():
    """Written out by hand: each row's options (the main setting, the frozen baseline's peaks
    and one patch repeated for T = 4 steps, with what the row changes), the rows whose patches
    are the frozen baseline's peaks, and for each of them the baseline run of the same seed,
    trained in the same regime as the row (the configs differ in the model only)."""
    from fglib.experiments import regimes
    main = {"source": "peaks", "steps": 4, "sequence": "repeat"}
    changes = {"local only": {"streams": "local"}, "global + local, no LSTM": {"lstm": False},
               "T = 1": {"steps": 1}, "T = 4": {}, "T = 10": {"steps": 10},
               "T = 4, distinct patches": {"sequence": "distinct"},
               "T = 4, centre patch": {"source": "centre"},
               "whole image (control)": {"local_input": "image"},
               "T = 4, own map's peaks": {}}                   # the model's own map: no cam_run
    frozen_map = {"local only", "global + local, no LSTM", "T = 1", "T = 4", "T = 10",
                  "T = 4, distinct patches"}
    jobs = regimes.rra_ablation() + regimes.rra_ablation((0,), regimes.RRA_EXTRAS)
    baselines = {seed: cfg for row, seed, cfg in jobs if row == "global only (baseline)"}
    assert sorted(baselines) == list(regimes.SEEDS)
    assert all(cfg.model.method == "baseline" and cfg.train.seed == seed and not cfg.model.options
               for seed, cfg in baselines.items())
    assert {row for row, _, _ in jobs} - {"global only (baseline)"} == set(changes)
    assert len(jobs) == 9 * len(regimes.SEEDS) + 1                  # 9 rows, 1 extra

    def flat(cfg):
        return {f"{part}.{k}": v for part, fields in cfg.to_dict().items()
                for k, v in fields.items()}

    for row, seed, cfg in jobs:
        if row == "global only (baseline)":
            continue
        assert cfg.model.method == "rra" and cfg.train.seed == seed, row
        want = {**main, **changes[row]}
        if row in frozen_map:
            want["cam_run"] = baselines[seed].key()
        assert cfg.model.options == want, row
        base, this = flat(baselines[seed]), flat(cfg)
        assert {k for k in base if base[k] != this[k]} == {"model.method", "model.options"}, row
        assert cfg.model.pretrained and cfg.data.image_size == 48


def test_recording_an_rra_run_keeps_its_proposal_networks_weights(tmp_path, monkeypatch):
    base = regimes.rra_baseline(1)
    monkeypatch.setenv("FGLIB_RECORD_DIR", str(tmp_path))
    monkeypatch.setattr(store, "config_of",
                        lambda key: base.to_dict() if key == base.key() else None)
    (_, _, cfg), = [j for j in regimes.rra_ablation(seeds=(1,)) if j[0] == "T = 4"]
    usage.note_usage(cfg, variant="T = 4")
    used = {u["key"]: u for u in usage.read_usage(tmp_path)}
    assert used[cfg.key()]["weights"] is False
    assert used[base.key()]["weights"] is True          # the frozen network's weights
