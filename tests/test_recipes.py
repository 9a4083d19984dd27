"""The papers' recipes (fglib.experiments.recipes): every setting sourced, every config valid."""
import os

import pytest
import torch

from fglib.engine.train import build
from fglib.experiments.recipes import COMMON_SOURCES, RECIPES, recipe


@pytest.mark.parametrize("name", RECIPES)
def test_every_setting_of_a_recipe_has_a_source(name):
    r = RECIPES[name]
    unsourced = [k for k in r.settings if k not in r.sources and k not in COMMON_SOURCES]
    assert not unsourced, f"{name}: settings without a source {unsourced}"
    assert all(r.source(k) for k in r.settings)


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_builds_its_model_on_the_papers_backbone(name):
    cfg = recipe(name).config(root="/nowhere", **{"model.pretrained": False})
    assert cfg.data.image_size == 448 and cfg.data.root == "/nowhere"
    model = build(cfg.override(**{"data.image_size": 64}), num_classes=5).eval()
    with torch.no_grad():
        logits, terms = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)


def test_unknown_recipes_and_deviations_say_what_there_is():
    with pytest.raises(ValueError, match="no recipe 'nope'; the recipes are apinet, mamc"):
        recipe("nope")
    with pytest.raises(ValueError, match="has no deviation 'x'"):
        recipe("mcloss").config(deviation="x")
    cfg = recipe("cin").config(deviation="Hawkeye label smoothing")
    assert cfg.train.label_smoothing == 0.1


@pytest.fixture(scope="module")
def cub_folder(tmp_path_factory):
    """The generated benchmark written in CUB-200-2011's layout (files on disk, the real
    loader): 4 classes, 4 training and 2 test images each."""
    from fglib.data.synth import SynthConfig, synthetic_benchmark

    cfg = SynthConfig(num_classes=4, images_per_class=6, train_fraction=4 / 6, families=2,
                      image_size=64)
    return synthetic_benchmark(cfg, cache_dir=tmp_path_factory.mktemp("cub"))


# The batch of each recipe scaled down so that 16 training images make two optimiser steps.
SMALL = {"apinet": {"train.classes_per_batch": 2, "train.images_per_class": 4},
         "mamc": {"train.classes_per_batch": 4, "train.images_per_class": 2},
         "cin": {"train.classes_per_batch": 2, "train.images_per_class": 4}}


@pytest.mark.skipif(not os.environ.get("FGLIB_SLOW"), reason="about 4 minutes on 2 cores "
                    "(CIN 92 s, API-Net 60 s, RRA 42 s, MAMC 37 s, MC-Loss 25 s): FGLIB_SLOW=1")
@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_trains_two_steps_at_448_pixels_on_cub_files(name, cub_folder):
    """Every recipe end to end on the CPU: CUB files through the real loader, 448-pixel crops,
    its real backbone (random weights: none can be fetched here), two steps and one
    evaluation pass."""
    from fglib.engine.train import train

    cfg = recipe(name).config("cub", str(cub_folder), **{
        "model.pretrained": False, "train.epochs": 1, "train.freeze_backbone_epochs": 0,
        "train.batch_size": 8, "train.device": "cpu", "train.amp": False,
        "data.workers": 0, **SMALL.get(name, {})})
    result = train(cfg, progress=False)
    assert len(result.history) == 2                     # one row per optimiser step
    assert 0.0 <= result.metrics["top1"] <= 1.0 and result.images_per_second > 0
