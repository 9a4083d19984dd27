"""The closing comparison's runs (fglib.experiments.regimes.comparison): every method at its main
setting against the baseline trained on the same batches, in each regime and benchmark."""
import pytest

from fglib.experiments import regimes


@pytest.mark.parametrize("regime,synth", [("paper", None), ("from scratch", None),
                                          ("paper", regimes.HELD_OUT)])
def test_each_method_meets_the_baseline_of_its_own_batches(regime, synth):
    jobs = regimes.comparison(regime, (0, 3), synth)
    assert {(m, k) for m, k, _, _ in jobs} == {(m, k) for m in regimes.COMPARED
                                               for k in ("baseline", "method")}
    for m, kind, seed, cfg in jobs:
        base = regimes.compare_config(m, regime, seed, synth, baseline=True)
        assert cfg.train.seed == seed
        assert cfg.model.method == ("baseline" if kind == "baseline" else m)
        assert (cfg.train.sampler, cfg.train.classes_per_batch, cfg.train.images_per_class,
                cfg.train.lr) == (base.train.sampler, base.train.classes_per_batch,
                                  base.train.images_per_class, base.train.lr)
        assert cfg.model.pretrained == (regime == "paper")
        assert cfg.data.synth == base.data.synth
        assert ((cfg.data.synth or {}).get("num_classes") == 32) == (synth is not None)
        if m == "rra" and kind == "method":        # the proposals: the same seed's baseline
            assert cfg.model.options["cam_run"] == base.key()
        if m == "mamc" and kind == "method":
            assert cfg.model.options == regimes.MAMC_MAIN


def test_the_paper_regime_reuses_the_chapters_runs():
    keys = {c.key() for _, _, _, c in regimes.comparison("paper", regimes.SEEDS)}
    for row, jobs in [("+CIN (SCI + CCI)", regimes.cin_ablation("paper")),
                      ("+MAMC", regimes.mamc_ablation("paper")),
                      ("T = 4", regimes.rra_ablation())]:
        assert {c.key() for r, _, c in jobs if r == row} <= keys, row
