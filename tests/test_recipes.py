"""The papers' recipes (fglib.experiments.recipes): every setting sourced, every config valid."""
import hashlib
import os

import pytest
import torch

from fglib.engine.train import build
from fglib.experiments.recipes import COMMON_SOURCES, RECIPES, recipe
from fglib.experiments.verify import commit_id


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
def cub_folders(tmp_path_factory):
    """The generated benchmark written in CUB-200-2011's layout (files on disk, the real
    loader): 4 classes of n training images and 1 test image each, by n."""
    from fglib.data.synth import SynthConfig, synthetic_benchmark

    def folder(n: int):
        cfg = SynthConfig(num_classes=4, images_per_class=n + 1, train_fraction=n / (n + 1),
                          families=2, image_size=64)
        return synthetic_benchmark(cfg, cache_dir=tmp_path_factory.mktemp("cub"))
    return folder


# Each recipe's batch scaled down so that its training images make two optimiser steps:
# 4 classes x 2 images in batches of 4; CIN pairs need 4 images of a class in a batch, so
# 4 classes x 4 images in batches of 2 x 4.
SMALL = {"apinet": {"train.classes_per_batch": 2, "train.images_per_class": 2},
         "mamc": {"train.classes_per_batch": 2, "train.images_per_class": 2},
         "cin": {"train.classes_per_batch": 2, "train.images_per_class": 4,
                 "train.batch_size": 8}}


def recipes_this_run() -> list[str]:
    """Every recipe with FGLIB_SLOW=1; otherwise one, rotating with the commit (as the
    store's verification sample does), so that every recipe comes round within a few
    commits at the cost of one."""
    if os.environ.get("FGLIB_SLOW"):
        return list(RECIPES)
    names = sorted(RECIPES)
    return [names[int(hashlib.sha256(commit_id().encode()).hexdigest(), 16) % len(names)]]


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_trains_two_steps_at_448_pixels_on_cub_files(name, cub_folders):
    """Every recipe end to end on the CPU: CUB files through the real loader, 448-pixel crops,
    its real backbone (random weights: none can be fetched here), two steps and one
    evaluation pass. One recipe per commit (recipes_this_run), all with FGLIB_SLOW=1."""
    from fglib.engine.train import train

    if name not in recipes_this_run():
        pytest.skip(f"this commit's recipe is {recipes_this_run()[0]} (FGLIB_SLOW=1: all)")
    small = SMALL.get(name, {})
    root = cub_folders(4 if small.get("train.batch_size") == 8 else 2)
    cfg = recipe(name).config("cub", str(root), **{
        "model.pretrained": False, "train.epochs": 1, "train.freeze_backbone_epochs": 0,
        "train.batch_size": 4, "train.device": "cpu", "train.amp": False,
        "data.workers": 0, **small})
    result = train(cfg, progress=False)
    assert len(result.history) == 2                     # one row per optimiser step
    assert 0.0 <= result.metrics["top1"] <= 1.0 and result.images_per_second > 0
