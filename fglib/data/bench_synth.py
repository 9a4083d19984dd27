"""Benchmark synthetic dataset generation: `python -m fglib.data.bench_synth [--images-per-class N]`.

Generates the dataset for the given config (default: SynthConfig()) into a temporary directory
and prints the total time and images per second (rendering + PNG encoding + annotation files).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from fglib.data.synth import SynthConfig, generate, render


def bench(cfg: SynthConfig) -> dict[str, float]:
    """Seconds for a full generate() and for rendering alone (no file writes) of the same images."""
    n = cfg.num_classes * cfg.images_per_class
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(cfg, Path(tmp) / "synth")
        total = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(min(n, 500)):  # rendering only, on a subset
        render(cfg, 1 + i % cfg.num_classes, i // cfg.num_classes)
    render_s = (time.perf_counter() - t0) / min(n, 500)
    return {"images": n, "total_s": total, "images_per_s": n / total, "render_ms": 1000 * render_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-classes", type=int, default=SynthConfig.num_classes)
    ap.add_argument("--images-per-class", type=int, default=SynthConfig.images_per_class)
    ap.add_argument("--image-size", type=int, default=SynthConfig.image_size)
    args = ap.parse_args()
    cfg = replace(SynthConfig(), num_classes=args.num_classes,
                  images_per_class=args.images_per_class, image_size=args.image_size)
    r = bench(cfg)
    print(f"config: {cfg}")
    print(f"generated {r['images']} images in {r['total_s']:.2f} s "
          f"({r['images_per_s']:.0f} images/s, render alone {r['render_ms']:.2f} ms/image)")


if __name__ == "__main__":
    main()
