"""The paper-scale path on a GPU: python -m fglib.book.paperscale [--epochs 8] [--image-size 224].

Trains every method with a torchvision ResNet on the generated benchmark rendered at paper-like
resolution, on CUDA with float16 autocast (train.amp resolves to float16 there), and prints per
method: top-1 after the given epochs, seconds per epoch, training images per second, peak GPU
memory and the resolved precision. A check that the paper-scale path runs and what it costs, not a
result: the ResNet starts from scratch (no ImageNet weights offline) and trains for a few epochs.
"""
from __future__ import annotations

import argparse
import time

import torch

from fglib.core.config import RunConfig, book_profile
from fglib.models import MODEL_CLASSES
from fglib.experiments.regimes import MAMC_MAIN, RRA_MAIN
from fglib.engine.train import load_data
from fglib.experiments.runner import train_run


METHODS = ["baseline", "bilinear", "mcloss", "apinet", "cin", "mamc", "rra"]


def paper_scale_configs(methods=tuple(METHODS), epochs: int = 8, image_size: int = 224,
                        backbone: str = "resnet50", batch_size: int = 32) -> dict[str, RunConfig]:
    """Method -> its paper-scale run (CUDA, autocast): the shared settings, then the method's."""
    base = {"data.image_size": image_size, "data.crop_padding": image_size // 14, "model.backbone": backbone,
            "model.pretrained": False, "train.epochs": epochs, "train.batch_size": batch_size,
            "train.lr": 0.05, "train.device": "cuda", "train.amp": "auto", "train.classes_per_batch": 8,
            "train.images_per_class": batch_size // 8}
    cfgs = {}
    for method in methods:
        extra = {"train.sampler": "balanced"} if MODEL_CLASSES[method].needs.balanced else {}
        if method == "mamc":     # N classes x exactly 2 images; the book's lambda and normalised f
            extra.update({"train.classes_per_batch": batch_size // 2, "train.images_per_class": 2,
                          "model.options": dict(MAMC_MAIN)})
        if method == "rra":      # no stored proposal network at this scale: the global stream's own map
            extra["model.options"] = dict(RRA_MAIN)
        cfgs[method] = book_profile(**{**base, **extra, "model.method": method})   # extra wins
    return cfgs


def paper_scale(methods=tuple(METHODS), epochs: int = 8, image_size: int = 224,
                backbone: str = "resnet50", batch_size: int = 32) -> list[dict]:
    rows = []
    cfgs = paper_scale_configs(methods, epochs, image_size, backbone, batch_size)
    data = load_data(next(iter(cfgs.values())))
    for method, cfg in cfgs.items():
        torch.cuda.reset_peak_memory_stats()
        tic = time.perf_counter()
        r = train_run(cfg, data=data, progress=False)
        rows.append({"method": method, "top1": 100 * r.metrics["top1"], "s_per_epoch": r.seconds / epochs,
                     "images_per_s": r.images_per_second, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                     "precision": r.precision, "wall_s": time.perf_counter() - tic})
        print(f"{method:>9} top-1 {rows[-1]['top1']:5.1f} %  {rows[-1]['s_per_epoch']:6.2f} s/epoch  "
              f"{rows[-1]['images_per_s']:7.0f} img/s  peak {rows[-1]['peak_gib']:.2f} GiB  {r.precision}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--method", nargs="+", default=METHODS)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: the paper-scale check needs a CUDA GPU (torch.cuda.is_available() is False)")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.backbone} at {args.image_size} px, "
          f"batch {args.batch_size}, {args.epochs} epochs from scratch", flush=True)
    paper_scale(args.method, args.epochs, args.image_size, args.backbone, args.batch_size)


if __name__ == "__main__":
    main()
