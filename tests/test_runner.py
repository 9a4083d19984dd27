"""The results cache: identical configs are reused, changed configs retrain."""
import pytest

import fglib.experiments.runner as runner
from fglib.core.config import book_profile

TINY = {"data.image_size": 32, "data.synth": {"num_classes": 4, "images_per_class": 8, "families": 2},
        "model.widths": (8, 16), "model.blocks": (1, 1), "train.epochs": 1, "train.batch_size": 8}


def test_grid_reuses_identical_runs_and_retrains_changed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path))
    monkeypatch.setenv("FGLIB_WORKERS", "1")                 # in-process, so the spy below sees every run
    calls = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: calls.append(cfg.key()) or real_train(cfg, **kw))
    base = book_profile(**TINY)
    variants = {"gap": {}, "bilinear": {"model.method": "bilinear", "model.bilinear_dim": 4}}
    runs, summary = runner.grid(base, variants, seeds=[0, 1], progress=False)
    assert len(calls) == 4 and len(runs) == 4
    assert list(summary.index) == ["gap", "bilinear"]
    assert summary.loc["gap", ("top1", "count")] == 2
    assert summary.loc["gap", ("top1", "mean")] == pytest.approx(runs[runs.variant == "gap"].top1.mean())
    again, _ = runner.grid(base, variants, seeds=[0, 1], progress=False)
    assert len(calls) == 4 and again.top1.tolist() == runs.top1.tolist()      # all four reused
    runner.grid(base.override(**{"train.lr": 0.05}), {"gap": {}}, seeds=[0], progress=False)
    assert len(calls) == 5                                                      # a changed config retrains
    model, result = runner.load_model(base.override(**{"train.seed": 1}))
    assert result.key == runs.key[1] and sum(p.numel() for p in model.parameters()) > 0


def test_grids_trained_in_one_pool_are_read_back_by_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path))
    monkeypatch.setenv("FGLIB_WORKERS", "1")
    trained = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: trained.append(cfg) or real_train(cfg, **kw))
    base = book_profile(**TINY)
    main, sweep = {"gap": {}}, {"wide": {"model.widths": (8, 24)}}
    cfgs = runner.grid_configs(base, main, [0, 1]) + runner.grid_configs(base, sweep, [0])
    assert [c.train.seed for c in cfgs] == [0, 1, 0] and cfgs[2].model.widths == (8, 24)
    runner.run_many(cfgs, progress=False)
    assert trained[0].model.widths == (8, 24)                   # the costliest run starts first
    runs, _ = runner.grid(base, main, seeds=[0, 1], progress=False)
    sweep_runs, _ = runner.grid(base, sweep, seeds=[0], progress=False)
    assert len(trained) == 3 and runs.key.tolist() == [c.key() for c in cfgs[:2]]
    assert sweep_runs.key.tolist() == [cfgs[2].key()]


def test_results_do_not_depend_on_threads_or_workers(tmp_path, monkeypatch):
    """Every run trains on one thread, so 2 worker processes give the numbers of 1 in-process run."""
    import torch

    variants = {"gap": {}, "bilinear": {"model.method": "bilinear", "model.bilinear_dim": 4}}
    base = book_profile(**{**TINY, "train.epochs": 2})
    tops = []
    for workers, threads in [(1, 2), (2, 1)]:
        monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path / f"w{workers}"))
        monkeypatch.setenv("FGLIB_WORKERS", str(workers))
        torch.set_num_threads(threads)
        runs, _ = runner.grid(base, variants, seeds=[0, 1], progress=False)
        tops.append(runs.top1.tolist())
    assert tops[0] == tops[1]


def test_summarise_and_histories(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path))
    monkeypatch.setenv("FGLIB_WORKERS", "1")
    runs, summary = runner.grid(book_profile(**TINY), {"gap": {}}, seeds=[0, 1], progress=False)
    text = runner.summarise(summary, ["top1"]).loc["gap", "top1"]
    mean, std = runs.top1.mean(), runs.top1.std()
    assert text == f"{mean:.1f} ± {std:.1f} (2)"
    h = runner.histories(runs)
    assert set(h.term) == {"loss", "ce"} and set(h.seed) == {0, 1}
    assert len(h) == 2 * 2 * len(h[(h.seed == 0) & (h.term == "ce")])


def test_versus_baseline_against_hand_computation():
    import pandas as pd

    from fglib.experiments.runner import versus_baseline

    base = [70.0, 72.0, 74.0, 71.0, 73.0, 75.0]
    d = [10.0, 9.0, 8.0, 9.0, 10.0, 8.0]                   # all positive: sign-flip p = 2 / 64
    runs = pd.DataFrame({"variant": ["b"] * 6 + ["m"] * 6 + ["one"],
                         "seed": list(range(6)) * 2 + [2],
                         "top1": base + [x + y for x, y in zip(base, d)] + [75.0],
                         "seconds": [10.0] * 6 + [15.0] * 6 + [30.0]})
    t = versus_baseline(runs, "b")
    assert t.loc["b", "top1"] == "72.5 ± 1.9 (6)"
    assert t.loc["m", "diff"] == pytest.approx(9.0)
    assert t.loc["m", "se"] == pytest.approx((0.8 / 6) ** 0.5)       # sd of d over sqrt n
    assert t.loc["m", "p (Holm)"] == pytest.approx(2 / 64)           # a family of one
    assert t.loc["m", "verdict"] == "a gain"
    assert t.loc["m", "time ratio"] == pytest.approx(1.5)
    assert t.loc["one", "top1"] == "75.0 (1)" and t.loc["one", "diff"] == pytest.approx(1.0)
    assert t.loc["one", "verdict"] == "one seed: no verdict"
    with pytest.raises(ValueError, match="no runs with variant 'nope'"):
        versus_baseline(runs, "nope")


def test_between_is_the_mean_paired_difference_with_its_standard_error():
    import math

    import pandas as pd

    from fglib.experiments.runner import between
    runs = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3 + ["c"],
                         "seed": [0, 1, 2, 2, 1, 0, 0],
                         "top1": [1.0, 2.0, 3.0, 9.0, 7.0, 5.0, 0.0]})
    d, se = between(runs, "a", "b")                     # d = 4, 5, 6 by seed
    assert d == pytest.approx(5.0) and se == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ValueError, match="no runs with variant"):
        between(runs, "a", "zzz")
    with pytest.raises(ValueError, match=r"seeds \[1, 2\] are on one side only"):
        between(runs, "a", "c")
