"""Pretraining: the generated "ImageNet", pre-trained and dilated small ResNets, freezing, the
regime study's configs, and how fine-tuned runs are fingerprinted."""
import os

import numpy as np
import pytest
import torch

from fglib.experiments import provenance, regimes, runner
from fglib.models.backbones import SmallResNet, build_backbone, load_small_resnet
from fglib.core.config import ADDED_FIELDS, RunConfig, book_profile
from fglib.data import pretrainset as P
from fglib.data import synth
from fglib.experiments.pretraining import PretrainedWeightsMissing, linear_probe, pretraining_config
from fglib.engine.train import ConfigError, build, check_config, load_data, train

TINY_SET = {"object_classes": 2, "bird_classes": 4, "images_per_class": 4}
TINY = {"data.name": "pretrain", "data.image_size": 32, "data.synth": TINY_SET,
        "model.widths": (8, 16), "model.blocks": (1, 1), "train.epochs": 2, "train.batch_size": 4}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FGLIB_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


# -- the pretraining set ----------------------------------------------------------------------

@pytest.mark.parametrize("bench", [{}, regimes.SECOND, regimes.TUNING])
def test_pretraining_birds_are_none_of_the_benchmarks_classes(bench):
    seen = {bc.attrs for bc in synth.make_classes(synth.SynthConfig(**bench))}
    birds = [bc for _, bc in P.bird_classes(P.PretrainConfig())]
    assert len(birds) == P.PretrainConfig().bird_classes
    assert not [bc.name for bc in birds if bc.attrs in seen]


def test_object_classes_are_distinct_and_use_every_kind():
    objs = P.object_classes(P.PretrainConfig())
    assert len({o.name for o in objs}) == len(objs) == P.PretrainConfig().object_classes
    assert {o.shape for o in objs} == set(P.SHAPES) and {o.pattern for o in objs} == set(P.PATTERNS)


def test_rendering_is_deterministic_and_varies_between_images():
    cfg = P.PretrainConfig(image_size=32)
    c = P.object_classes(cfg)[0]
    a, xy = P.render_object(cfg, c, 1, 0)
    b, _ = P.render_object(cfg, c, 1, 0)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 0 <= xy[0] < 32 and 0 <= xy[1] < 32
    assert not np.array_equal(a, P.render_object(cfg, c, 1, 1)[0])


def test_pretraining_set_loads_as_a_dataset(cache):
    cfg = book_profile(**TINY)
    train_set, test_set = load_data(cfg)
    assert train_set.num_classes == 6 and len(train_set) == 6 * 3 and len(test_set) == 6 * 1
    assert train_set.images.shape[1:] == (3, 32, 32)
    again, _ = load_data(cfg)                                          # from the cache
    assert torch.equal(again.images, train_set.images)


def test_a_pretrained_run_depends_on_the_generator_module():
    cfg = pretraining_config()
    assert "fglib.data.pretrainset" in provenance.result_modules(cfg)
    assert "fglib.data.pretrainset" not in provenance.result_modules(book_profile())
    for method in ("baseline", "mcloss"):                    # a plain config: the method's fingerprint
        plain = book_profile(**{"model.method": method})
        assert provenance.code_fingerprint(plain) == provenance.code_fingerprint(method)


# -- backbones ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size,output_stride,side", [(40, None, 5), (48, 4, 12), (40, 2, 20), (33, 4, 9)])
def test_output_stride_dilates_with_the_same_weights(size, output_stride, side):
    torch.manual_seed(0)
    plain = SmallResNet()
    torch.manual_seed(0)
    net = SmallResNet(output_stride=output_stride)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), net.state_dict().values()))
    assert net(torch.zeros(2, 3, size, size)).shape == (2, 128, side, side)
    assert net.stride == (output_stride or 8)


def test_bad_output_stride_says_what_is_possible():
    with pytest.raises(ValueError, match="power of 2 from 1 to 8"):
        SmallResNet(output_stride=3)
    with pytest.raises(ValueError, match="only supported by small_resnet"):
        build_backbone("resnet18", output_stride=8)


def test_weights_load_from_a_whole_model_or_a_backbone(tmp_path):
    torch.manual_seed(0)
    src = SmallResNet((8, 16), (1, 1))
    torch.save({f"backbone.{k}": v.half() for k, v in src.state_dict().items()} | {"head.fc.weight": torch.ones(3, 16)},
               tmp_path / "model.pt")
    net = build_backbone("small_resnet", (8, 16), (1, 1), weights_path=str(tmp_path / "model.pt"))
    for k, v in src.state_dict().items():
        assert torch.allclose(net.state_dict()[k].float(), v.float(), atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="widths and blocks must match"):
        build_backbone("small_resnet", (8, 32), (1, 1), weights_path=str(tmp_path / "model.pt"))


def test_missing_pretrained_weights_say_how_to_make_them(cache):
    with pytest.raises(ValueError, match="starts from a weights file, and none was given"):
        build_backbone("small_resnet", (8, 16), (1, 1), pretrained=True)   # models read no store
    cfg = book_profile(**{**TINY, "model.pretrained": True})
    with pytest.raises(PretrainedWeightsMissing, match=r"python -m fglib pretrain --set 'model.widths=\[8,16\]'"):
        runner.run_files(cfg)                                             # the experiment layer finds them
    with pytest.raises(ConfigError, match="model.pretrained=true needs the pre-trained small_resnet"):
        train(cfg, progress=False)                                        # the engine is handed them


def test_initial_weights_are_part_of_the_fingerprint(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(SmallResNet((8, 16), (1, 1)).state_dict(), path)
    cfg = book_profile(**{"model.weights_path": str(path), "model.widths": (8, 16), "model.blocks": (1, 1)})
    before = provenance.code_fingerprint(cfg)
    assert before != provenance.code_fingerprint("baseline")
    torch.manual_seed(1)
    torch.save(SmallResNet((8, 16), (1, 1)).state_dict(), path)
    os.utime(path, ns=(1, 1))                                 # another state, as the cache keys by it
    assert provenance.code_fingerprint(cfg) != before


# -- fine-tuning --------------------------------------------------------------------------------

def test_a_frozen_backbone_keeps_its_weights_and_the_head_learns(cache, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "init.pt"
    torch.save(SmallResNet((8, 16), (1, 1)).state_dict(), path)
    cfg = book_profile(**{**TINY, "model.weights_path": str(path), "train.freeze_backbone_epochs": 1})
    frozen = train(cfg, run_dir=tmp_path / "run", stop_after_epochs=1, progress=False).model
    init = torch.load(path)
    for k, v in frozen.backbone.state_dict().items():
        if "running" not in k and "num_batches" not in k:          # batch-norm statistics still adapt
            assert torch.equal(v, init[k]), k
    torch.manual_seed(cfg.train.seed)                          # the engine's initialisation
    start = build(cfg, 6)
    assert not torch.equal(frozen.head.fc.weight, start.head.fc.weight)   # the head learns
    assert all(h["lr"] > 0 for h in train(cfg, progress=False).history)   # the head's lr is logged
    moved = train(cfg, progress=False).model                               # epoch 2: the backbone moves
    assert not torch.equal(moved.backbone.stem[0].weight, init["stem.0.weight"])


@pytest.mark.parametrize("overrides,message", [
    ({"train.freeze_backbone_epochs": 2}, "never fine-tuned"),
    ({"train.freeze_backbone_epochs": 1}, "only makes sense for a pre-trained backbone"),
])
def test_bad_freezes_fail_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(book_profile(**{**TINY, **overrides}))


def test_added_fields_keep_old_keys_until_they_are_set():
    cfg = book_profile()
    d = cfg.to_dict()
    assert "output_stride" in d["model"] and "freeze_backbone_epochs" in d["train"]
    assert set(ADDED_FIELDS) == {"model.output_stride", "train.freeze_backbone_epochs",
                                 "train.head_lr_scale"}
    assert cfg.key() == "7e5e5c200786"                   # the book's baseline, seed 0, as stored before
    assert cfg.override(**{"model.output_stride": 4}).key() != cfg.key()
    assert RunConfig.from_dict(cfg.override(**{"model.output_stride": 4}).to_dict()).model.output_stride == 4
    # what older code can read: the added fields gone while at their defaults, kept once set
    portable = cfg.portable_dict()
    assert "head_lr_scale" not in portable["train"] and "output_stride" not in portable["model"]
    assert RunConfig.from_dict(portable) == cfg
    assert cfg.override(**{"train.head_lr_scale": 10.0}).portable_dict()["train"]["head_lr_scale"] == 10.0


# -- the regime study ---------------------------------------------------------------------------

@pytest.mark.parametrize("pretrained", [False, True])
def test_mcloss_weights_rebuild_the_official_losses(pretrained):
    """Each official script's loss, rebuilt from the two terms, equals the book's
    CE + mu (L_dis - lambda L_div) plus a constant: from scratch (VGG-16)
    CE + 1.5 L_dis + 20 (1 - L_div / xi); fine-tuning (ResNet-50)
    CE + 5e-4 (L_dis + 10 (1 - L_div / xi)). 32 classes of 4 channels: even groups."""
    from fglib.models.mcloss import MCLoss, channel_groups

    classes, channels = 32, 128
    xi = channels // classes
    o = regimes.mcloss_options(pretrained, classes, channels)
    torch.manual_seed(0)
    fmap = torch.randn(6, channels, 3, 3, dtype=torch.float64)
    y = torch.randint(0, classes, (6,))
    mc = MCLoss(channel_groups(channels, classes, None), mask="none")
    dis, div = mc.discriminality(fmap, y), mc.diversity(fmap)
    ours = o["mu"] * (dis - o["lam"] * div)
    official = (1.5 * dis + 20 * (1 - div / xi) if not pretrained
                else 5e-4 * (dis + 10 * (1 - div / xi)))
    constant = 20.0 if not pretrained else 5e-4 * 10
    assert official.item() == pytest.approx(ours.item() + constant, rel=1e-12)


def test_regime_cells_change_one_factor_at_a_time():
    cells = regimes.regime_cells()
    book = cells[("mcloss", "book")]["baseline"][0]
    assert book.key() == book_profile().key()
    few = cells[("mcloss", "few images")]["baseline"][0]
    cfg = synth.SynthConfig(**few.data.synth)
    assert round(cfg.train_fraction * cfg.images_per_class) == 25 and cfg.images_per_class - 25 == 60
    large = cells[("apinet", "large maps")]["method"][1]
    assert (large.data.image_size, large.model.output_stride, large.train.sampler) == (48, 4, "balanced")
    api_book = cells[("apinet", "book")]
    assert api_book["baseline"][0].key() == "5e5487ed02d3" and api_book["method"][0].key() == "b254173a614b"
    pre = cells[("mcloss", "pretrained")]["method"][2]
    assert pre.model.pretrained and pre.model.options["mu"] == 5e-4 and pre.train.seed == 2
    paper = cells[("apinet", "paper")]["method"][0]
    assert paper.model.pretrained and paper.model.output_stride == 4 and paper.data.synth == regimes.FEW
    assert all(len(runs) == len(regimes.SEEDS) for cell in cells.values() for runs in cell.values())
    second = regimes.regime_cells(second=True)[("apinet", "book")]["baseline"][0]
    assert second.data.synth["num_classes"] == 32


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.randn(200, 8, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 8).float() * 3
    assert linear_probe(x[:100], y[:100], x[100:], y[100:]) == 1.0
    noise = torch.randn(200, 8, generator=g)
    assert linear_probe(noise[:100], y[:100], noise[100:], y[100:]) < 0.5


def test_paper_scale_check_needs_cuda(monkeypatch, capsys):
    from fglib.book import paperscale

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        paperscale.main(["--epochs", "1"])


def test_cli_pretrain_takes_only_the_backbone_shape(capsys):
    from fglib.__main__ import main

    assert main(["pretrain", "--set", "train.lr=1"]) == 2
    assert "only model.widths and model.blocks" in capsys.readouterr().err


@pytest.mark.parametrize("output_stride,dilations", [(None, (1, 1, 1, 1)), (4, (1, 1, 1, 2)), (2, (1, 1, 2, 4))])
def test_each_stage_past_the_output_stride_doubles_the_dilation(output_stride, dilations):
    net = SmallResNet(output_stride=output_stride)
    got = tuple(stage[0].conv1.dilation[0] for stage in net.stages)
    assert got == dilations
    assert all(stage[0].conv2.padding[0] == d for stage, d in zip(net.stages, dilations))   # same size


def test_paper_scale_builds_every_methods_config():
    """The GPU check's configs build for every method (MAMC's batch settings once collided with the
    shared ones: a TypeError found only on the GPU machine)."""
    from fglib.book import paperscale

    cfgs = paperscale.paper_scale_configs(epochs=1, image_size=64, batch_size=16)
    assert set(cfgs) == set(paperscale.METHODS)
    assert (cfgs["mamc"].train.classes_per_batch, cfgs["mamc"].train.images_per_class) == (8, 2)
    assert cfgs["baseline"].train.classes_per_batch == 8
    assert {c.data.image_size for c in cfgs.values()} == {64}
