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


# The recipe as book/compare.md states it ("The recipe"), written out by hand: images per batch
# as (classes, images per class) or 64 drawn at random, the learning rate, and each method's
# main setting of the chapter that derived it (MC-Loss: the official weights of its regime).
BATCHES = {"mcloss": (None, 64, 0.1), "rra": (None, 64, 0.1), "apinet": (16, 4, 0.1),
           "cin": (16, 4, 0.1), "mamc": (16, 2, 0.05)}
SETTINGS = {"apinet": {}, "cin": {}, "mamc": {"lam": 5e-4, "normalize": True},
            "rra": {"source": "peaks", "steps": 4, "sequence": "repeat"}}
REGIMES = {"paper": {"pretrained": True, "epochs": 15, "size": 48, "stride": 4, "train": 25},
           "from scratch": {"pretrained": False, "epochs": 25, "size": 40, "stride": None,
                            "train": None}}                  # None: the benchmark's own 60


@pytest.mark.parametrize("regime", ["paper", "from scratch"])
def test_the_recipe_is_the_one_the_chapter_states(regime):
    want = REGIMES[regime]
    labels = torch.arange(24).repeat_interleave(25)          # 25 images of each of 24 classes
    for m, kind, seed, cfg in regimes.comparison(regime, (0,)):
        assert cfg.model.pretrained is want["pretrained"] and cfg.train.epochs == want["epochs"]
        assert (cfg.data.image_size, cfg.model.output_stride) == (want["size"], want["stride"])
        synth = cfg.data.synth or {}
        train_images = (round(synth["images_per_class"] * synth["train_fraction"])
                        if "train_fraction" in synth else None)
        assert train_images == want["train"], (m, synth)
        classes, per_class, lr = BATCHES[m]
        assert cfg.train.lr == lr, (m, kind)
        for batch in epoch_batches(labels, cfg, 0):
            counts = torch.bincount(labels[batch], minlength=24)
            if classes is None:                              # 64 images drawn at random
                assert len(batch) == 64 and counts.max() > 0
            else:
                assert sorted(counts[counts > 0].tolist()) == [per_class] * classes, (m, kind)
        options = {k: v for k, v in (cfg.model.options or {}).items() if k != "cam_run"}
        if kind == "baseline":
            assert cfg.model.method == "baseline" and not options
        elif m == "mcloss":
            # the official weights at xi = 128 / 24 channels per class (book/mcloss.md):
            # fine-tuning mu = 5e-4, lambda = 10 / xi; from scratch mu = 1.5, lambda = 20 / (1.5 xi)
            want_w = (5e-4, 1.875) if regime == "paper" else (1.5, 2.5)
            assert (options["mu"], options["lam"]) == pytest.approx(want_w, rel=1e-12)
        else:
            assert options == SETTINGS[m], m


def test_the_paper_regime_reuses_the_chapters_runs():
    keys = {c.key() for _, _, _, c in regimes.comparison("paper", regimes.SEEDS)}
    for row, jobs in [("+CIN (SCI + CCI)", regimes.cin_ablation("paper")),
                      ("+MAMC", regimes.mamc_ablation("paper")),
                      ("T = 4", regimes.rra_ablation())]:
        assert {c.key() for r, _, c in jobs if r == row} <= keys, row
