"""Benchmark of the book-scale training step: python -m fglib.book.bench [--image-size 64] [--threads 2].

Prints the time of one training step, images per second, and the share of the step spent outside the
model (batch assembly, augmentation, normalisation), for the book's backbone and batch size, for every
registered method (or --method ...), each with the batch it declares (fglib.models.heads.BatchNeeds:
MAMC's N classes x 2 images, the pair-based methods' classes x images per class).

The timings the chapters print are recorded, not measured while a chapter runs (a timing differs
from run to run, and an executed chapter must not change when nothing else did): an author runs
`python -m fglib.book.bench --record NAME` (NAME in RECORDED), which measures on one thread and
writes the figures with their provenance (CPU, torch, threads, date) to data/bench/NAME.json; the
chapter reads them with `recorded(NAME)`. A reader calls the measuring function (RECORDED[NAME])
for this machine's figures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from fglib.book.closing import NAMES
from fglib.book.evidence import normalised_images
from fglib.core.config import book_profile
from fglib.core.hardware import cpu_kind, resolve_precision
from fglib.data.memory import augment, normalise
from fglib.engine.train import build, load_data
from fglib.experiments import regimes
from fglib.experiments.runner import load_model
from fglib.models import MODEL_CLASSES

BENCH_DIR = Path(__file__).resolve().parents[2] / "data" / "bench"


def bench(image_size: int = 40, method: str = "baseline", batch_size: int = 64, steps: int = 30,
          widths: tuple[int, ...] = (16, 32, 64, 128), num_classes: int = 24, n_images: int = 1536,
          amp: bool = True, settings: dict | None = None, warmup: int = 5) -> dict:
    """One configuration's step time over `steps` steps after `warmup` uncounted ones; amp=True is
    bfloat16 autocast, False float32. `settings` are further dotted config fields, e.g.
    {"model.options": {"contrastive": "none"}}."""
    cfg = book_profile(**{"data.image_size": image_size, "model.method": method, "train.batch_size": batch_size,
                          "model.widths": widths, "model.blocks": (1,) * len(widths), **(settings or {})})
    model = build(cfg, num_classes).train().to(memory_format=torch.channels_last)   # as fglib.engine.train does
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n_images,))
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    g = torch.Generator().manual_seed(0)
    needs = MODEL_CLASSES[method].needs
    if needs.balanced:                                 # the batch the method declares: classes x per class
        per = needs.images_per_class
        classes = min(num_classes, max(needs.classes, batch_size // per))
        batch_size = classes * per
    t_data = t_model = 0.0
    for step in range(steps + warmup):                 # the first `warmup` steps are not counted
        t0 = time.perf_counter()
        idx = torch.randint(0, n_images, (batch_size,), generator=g)
        x = normalise(augment(images[idx], 4, True, g), mean, std).contiguous(memory_format=torch.channels_last)
        # class-balanced labels (classes x the images per class the method needs) for pair-based methods
        y = labels[idx] if not needs.balanced else torch.arange(batch_size) // needs.images_per_class
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            _, losses = model(x, y)
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if step >= warmup:
            t_data, t_model = t_data + t1 - t0, t_model + t2 - t1
    step_s = (t_data + t_model) / steps
    return {"image_size": image_size, "method": method, "amp": amp, "batch": batch_size,
            "threads": torch.get_num_threads(),
            "step_ms": 1000 * step_s, "images_per_s": batch_size / step_s,
            "outside_model_pct": 100 * t_data / (t_data + t_model)}


# -- the timings the chapters print, recorded once with their provenance ---------------

def cin_step_times(steps: int = 10, warmup: int = 2, batch_size: int = 64,
                   rounds: int = 3) -> dict[str, float]:
    """Milliseconds per training step of each row of the CIN chapter's table, paper
    regime (48 px, output stride 4), float32: the best of `rounds` rounds taken in
    turn over the rows, so that a busy moment of the machine falls on no row alone."""
    best = dict.fromkeys(regimes.CIN_ROWS, math.inf)
    for _ in range(rounds):
        for row, opts in regimes.CIN_ROWS.items():
            settings = {"model.output_stride": 4,
                        **({} if opts is None else {"model.options": opts})}
            r = bench(image_size=48, method="baseline" if opts is None else "cin",
                      steps=steps, warmup=warmup, batch_size=batch_size, amp=False,
                      settings=settings)
            best[row] = min(best[row], r["step_ms"])
    return best


def inference_speed(configs: Mapping[str, object], images: int = 64,
                    passes: int = 20) -> dict[str, float]:
    """Test images per second of each stored model (float32, `images` test images in one
    batch): the best of `passes` timed passes taken in turn over the models, each right
    after an untimed pass of the same model (which warms it up after the others)."""
    train_set, test_set = load_data(next(iter(configs.values())))
    xs = normalised_images(train_set, test_set, dtype=torch.float32)[:images]
    models = {n: load_model(c, dtype=torch.float32)[0] for n, c in configs.items()}
    best = dict.fromkeys(models, math.inf)
    with torch.no_grad():
        for _ in range(passes):
            for n, m in models.items():
                m(xs)
                tic = time.perf_counter()
                m(xs)
                best[n] = min(best[n], time.perf_counter() - tic)
    return {n: len(xs) / t for n, t in best.items()}


def compare_inference_speed() -> dict[str, float]:
    """inference_speed of the closing comparison's paper-regime models of seed 0."""
    return inference_speed(
        {"baseline": regimes.compare_config("rra", "paper", 0, baseline=True),
         **{NAMES[m]: regimes.compare_config(m, "paper", 0) for m in NAMES}})


RECORDED: dict[str, Callable[[], dict[str, float]]] = {
    "cin_step_times": cin_step_times,
    "compare_inference_speed": compare_inference_speed,
}


def record(name: str, threads: int = 1) -> dict:
    """Measure RECORDED[name] on `threads` threads and write its figures and their
    provenance to data/bench/<name>.json: `python -m fglib.book.bench --record NAME`."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        figures = RECORDED[name]()
    finally:
        torch.set_num_threads(before)
    kind = cpu_kind()
    rec = {"name": name, "measures": " ".join(RECORDED[name].__doc__.split()),
           "figures": figures,
           "provenance": {"cpu": kind["cpu"], "torch": kind["torch"],
                          "torch_capability": kind["torch_capability"],
                          "threads": threads, "cpus": os.cpu_count(),
                          "load_average": round(os.getloadavg()[0], 1),
                          "date": datetime.date.today().isoformat(),
                          "command": f"python -m fglib.book.bench --record {name}"}}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def recorded(name: str) -> dict:
    """The figures and provenance `record(name)` stored."""
    path = BENCH_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: `python -m fglib.book.bench --record {name}`")
    return json.loads(path.read_text())


def provenance(rec: dict) -> str:
    """Where and when a recorded benchmark was measured, in one Markdown sentence."""
    p = rec["provenance"]
    threads = f"{p['threads']} thread{'s' if p['threads'] != 1 else ''}"
    return (f"Recorded on {p['date']} on {p['cpu']} ({p['torch_capability']}), "
            f"torch {p['torch']}, {threads} (load average {p['load_average']} on "
            f"{p['cpus']} CPUs), by `{p['command']}`.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", choices=sorted(RECORDED),
                   help="measure a chapter's timing, one thread, into data/bench/NAME.json")
    p.add_argument("--image-size", type=int, nargs="+", default=[40])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--method", nargs="+", default=sorted(MODEL_CLASSES), choices=sorted(MODEL_CLASSES),
                   help="methods to time (default: every registered method)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--precision", nargs="+", choices=["float32", "bfloat16", "auto"],
                   default=["float32", "bfloat16"],
                   help="auto: what train.amp='auto' picks on this CPU (bfloat16 only with native BF16)")
    args = p.parse_args(argv)
    if args.record:
        rec = record(args.record)
        print(json.dumps(rec, indent=1))
        return
    kind = cpu_kind()
    print(f"CPU {kind['cpu']}: torch {kind['torch_capability']}, oneDNN ISA {kind['onednn_max_isa']}, "
          f"train.amp='auto' -> {resolve_precision('auto', 'cpu')}")
    print(f"{'size':>5} {'method':>9} {'batch':>5} {'precision':>9} {'threads':>7} {'step ms':>8} "
          f"{'img/s':>7} {'outside model':>13}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.image_size:
            for method in args.method:
                for precision in args.precision:
                    if precision == "auto":
                        precision = resolve_precision("auto", "cpu")
                    amp = precision == "bfloat16"
                    r = bench(size, method, steps=args.steps, amp=amp)
                    print(f"{size:>5} {method:>9} {r['batch']:>5} {'bf16' if amp else 'fp32':>9} {threads:>7} "
                          f"{r['step_ms']:>8.1f} {r['images_per_s']:>7.0f} {r['outside_model_pct']:>12.1f}%")


if __name__ == "__main__":
    main()
