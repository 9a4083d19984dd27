"""Your own images: each method against its baseline on a folder, in the paper regime.

The settings are those of the closing chapter's paper regime
(fglib.experiments.regimes): the small ResNet fine-tuned from the book's pretraining run
with the recipe FINETUNE, 48-pixel images at output stride 4 (12 x 12 final maps), each
method at its main setting on the batches its paper needs, and its baseline on the same
batches, so that a seed gives both the same data order and initial weights. Only the data
differ: the folder that `data` names (fglib.data.folder.folder_data).
"""
from __future__ import annotations

from typing import Any

from fglib.core.config import RunConfig, book_profile
from fglib.data.folder import class_counts, folder_dataset
from fglib.engine.train import ConfigError
from fglib.experiments import regimes


def train_counts(data: dict[str, Any]) -> dict[str, int]:
    """Class name -> training images of the folder that `data` (folder_data's) names."""
    counts = class_counts(folder_dataset(0, data["data.synth"]))
    return {c: n_train for c, (n_train, _) in counts.items()}


def folder_config(data: dict[str, Any], method: str, seed: int,
                  baseline: bool = False) -> RunConfig:
    """One run on the folder: `method` at its main setting (or, baseline=True, its
    baseline on the same batches), seed `seed`."""
    if method not in regimes.COMPARED:
        raise ConfigError(f"unknown method {method!r}: use one of "
                          f"{sorted(regimes.COMPARED)}")
    counts = train_counts(data)
    k = len(counts)
    s: dict[str, Any] = {**data, "train.seed": seed, **regimes.LARGE,
                         **regimes.finetune_settings()}
    if method in regimes.PAIRED:                       # pairs: class-balanced batches
        s.update(regimes.APINET_BATCHES)
    if method == "mamc":                               # N classes x 2 images, lr halved
        s.update(regimes.MAMC_BATCHES)
    if "train.classes_per_batch" in s:                 # at most the folder's classes
        s["train.classes_per_batch"] = min(s["train.classes_per_batch"], k)
        need = s["train.images_per_class"]
        short = sorted(c for c, n in counts.items() if n < need)
        if short:
            raise ConfigError(f"{method} needs {need} training images of a class in a "
                              f"batch; {len(short)} class(es) have fewer, e.g. "
                              f"{short[:3]}: add images or choose another method")
    else:                                              # at most the folder's images
        s["train.batch_size"] = min(book_profile().train.batch_size,
                                    sum(counts.values()))
    channels = book_profile().model.widths[-1]
    if method == "mcloss" and k > channels:
        raise ConfigError(f"MC-Loss gives each class at least one of the small "
                          f"ResNet's {channels} channels; the folder has {k} classes")
    if baseline:
        return book_profile(**s)
    options = dict(regimes.COMPARED[method] or {})
    if method == "mcloss":                             # official fine-tuning weights
        options = regimes.mcloss_options(pretrained=True, num_classes=k)
    if method == "rra":                                # peaks: the seed's baseline
        options["cam_run"] = folder_config(data, method, seed, baseline=True).key()
    return book_profile(**s, **{"model.method": method, "model.options": options})


def folder_jobs(data: dict[str, Any], method: str, seeds
                ) -> list[tuple[str, int, RunConfig]]:
    """(variant, seed, config) of the baseline and the method with every seed, for
    fglib.experiments.runner.collect; the baseline is the variant "baseline"."""
    return [(name, s, folder_config(data, method, s, baseline=name == "baseline"))
            for name in ("baseline", method) for s in seeds]
