"""Run configuration as plain dataclasses: build one in a notebook, or from the CLI's flags.

A `RunConfig` fully determines a training run: its `key()` names the run in the results cache, so a
re-run with an identical config reuses the stored result and any change retrains.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

@dataclass
class DataConfig:
    name: str = "synth"                # "synth" (the book's benchmark) or a real dataset (see fglib.data)
    root: str | None = None            # folder of a real dataset; the benchmark is generated into the cache
    image_size: int = 40               # side of the square image the model sees (book scale: 40)
    synth: dict[str, Any] = field(default_factory=dict)   # SynthConfig overrides for the benchmark
    in_memory: bool = True             # the fast path: uint8 tensors + batched augmentation; False: files
                                       # through torchvision transforms and a DataLoader (real datasets)
    workers: int = 4                   # DataLoader worker processes when in_memory is False
    crop_padding: int = 4              # random-crop augmentation: pad then crop back (in pixels)
    flip: bool = True                  # random horizontal flips while training


@dataclass
class ModelConfig:
    method: str = "baseline"           # a key of fglib.models.MODELS
    backbone: str = "small_resnet"     # "small_resnet" or a torchvision resnet name
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    pretrained: bool = False
    weights_path: str | None = None
    dropout: float = 0.0
    bilinear_dim: int = 32
    options: dict[str, Any] = field(default_factory=dict)   # method-specific settings (mu, lambda, xi, ...)


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5         # linear warm-up, then cosine decay, stepped per iteration
    label_smoothing: float = 0.0
    seed: int = 0
    sampler: str = "random"            # "random" or "balanced" (classes_per_batch x images_per_class)
    classes_per_batch: int = 8
    images_per_class: int = 4
    eval_every: int = 0                # evaluate on the test split every n epochs (0: only at the end)
    device: str = "auto"               # "auto", "cpu" or "cuda"
    amp: bool | str = "auto"           # mixed precision. "auto": float16 on CUDA, bfloat16 on a CPU with native
                                       # BF16 instructions, float32 on other CPUs (where emulated bfloat16 is
                                       # 10x slower); True forces bf16/fp16, False float32. The precision a
                                       # run used is recorded with it (RunResult.precision).


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """A short hash of the whole config but the device: the run's name in the results store.

        The code that trains it is covered by a separate fingerprint (fglib.provenance), so that a run
        recorded with older code is reported as stale rather than silently reused.
        """
        d = self.to_dict()
        d["train"].pop("device")
        blob = json.dumps({"cfg": d}, sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        def build(kind, values):
            names = {f.name: f for f in fields(kind)}
            unknown = set(values) - set(names)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} field(s) {sorted(unknown)}; known: {sorted(names)}")
            return kind(**{k: tuple(v) if isinstance(v, list) and k in ("widths", "blocks") else v
                           for k, v in values.items()})
        return cls(build(DataConfig, d.get("data", {})), build(ModelConfig, d.get("model", {})),
                   build(TrainConfig, d.get("train", {})))

    def override(self, **dotted: Any) -> "RunConfig":
        """cfg.override(**{"train.seed": 1, "model.method": "bilinear"}) -> a new config."""
        parts = {"data": self.data, "model": self.model, "train": self.train}
        for name, value in dotted.items():
            section, _, attr = name.partition(".")
            if section not in parts or not hasattr(parts[section], attr):
                raise ValueError(f"unknown setting {name!r}: use section.field, e.g. train.lr or model.method")
            parts[section] = replace(parts[section], **{attr: value})
        return RunConfig(**parts)


def book_profile(**dotted: Any) -> RunConfig:
    """The book's scale: CPU, the generated benchmark, the small ResNet trained from scratch."""
    return RunConfig().override(**dotted)


def paper_profile(dataset: str = "cub", root: str | None = None, **dotted: Any) -> RunConfig:
    """The papers' scale: a real dataset, ResNet-50 from ImageNet weights, 448-pixel crops."""
    cfg = RunConfig(
        data=DataConfig(name=dataset, root=root, image_size=448, in_memory=False, crop_padding=0),
        model=ModelConfig(backbone="resnet50", pretrained=True, dropout=0.0),
        train=TrainConfig(epochs=100, batch_size=16, lr=0.01, weight_decay=5e-4, warmup_epochs=0.0),
    )
    return cfg.override(**dotted)


PROFILES = {"book": book_profile, "paper": paper_profile}
