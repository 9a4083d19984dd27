"""The closing comparison's runs (fglib.experiments.regimes.comparison): every method at its main
setting against the baseline trained on the same batches, in each regime and benchmark."""
import pytest
import torch

from fglib.engine.train import epoch_batches
from fglib.experiments import regimes


def flat(cfg):
    return {f"{part}.{k}": v for part, fields in cfg.to_dict().items() for k, v in fields.items()}


@pytest.mark.parametrize("regime,synth", [("paper", None), ("from scratch", None),
                                          ("paper", regimes.HELD_OUT)])
def test_each_method_meets_the_baseline_of_its_own_batches(regime, synth):
    """Method and baseline differ in the model only, so they see the same images in the same
    batches in the same order; the regime decides the start, the benchmark the classes."""
    jobs = regimes.comparison(regime, (0, 3), synth)
    assert {(m, k) for m, k, _, _ in jobs} == {(m, k) for m in regimes.COMPARED
                                               for k in ("baseline", "method")}
    pairs = {(m, s): {} for m, _, s, _ in jobs}
    for m, kind, seed, cfg in jobs:
        pairs[m, seed][kind] = cfg
    for (m, seed), pair in pairs.items():
        base, method = flat(pair["baseline"]), flat(pair["method"])
        differ = {k for k in base if base[k] != method[k]}
        assert differ <= {"model.method", "model.options"}, (m, differ)
        assert (base["model.method"], method["model.method"]) == ("baseline", m)
        assert base["train.seed"] == method["train.seed"] == seed
        assert base["model.pretrained"] is method["model.pretrained"] is (regime == "paper")
        classes = (base["data.synth"] or {}).get("num_classes", 24)
        assert classes == (32 if synth is not None else 24)
        labels = torch.arange(classes).repeat_interleave(25)
        for epoch in (0, 1):
            assert all(torch.equal(a, b) for a, b in zip(
                *(epoch_batches(labels, pair[k], epoch) for k in ("baseline", "method"))))
        if m == "rra":                             # the proposals: the same seed's baseline
            assert method["model.options"]["cam_run"] == pair["baseline"].key()
    # the methods that train on the same batches share one set of baseline runs
    keys = {m: pair["baseline"].key() for (m, s), pair in pairs.items() if s == 0}
    assert keys["apinet"] == keys["cin"] and keys["mcloss"] == keys["rra"]
    assert keys["apinet"] != keys["mcloss"]


def test_the_paper_regime_reuses_the_chapters_runs():
    keys = {c.key() for _, _, _, c in regimes.comparison("paper", regimes.SEEDS)}
    for row, jobs in [("+CIN (SCI + CCI)", regimes.cin_ablation("paper")),
                      ("+MAMC", regimes.mamc_ablation("paper")),
                      ("T = 4", regimes.rra_ablation())]:
        assert {c.key() for r, _, c in jobs if r == row} <= keys, row
