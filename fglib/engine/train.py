"""The training engine: one `train(cfg)` call from a notebook, the CLI or torchrun.

- Deterministic: every random choice comes from generators seeded by (seed, epoch), and the global
  RNG (dropout) is saved in checkpoints, so the same config gives the same weights on one machine.
- Resumable: a checkpoint is written atomically after every epoch; a killed run restarted with the
  same run_dir continues from the last finished epoch and ends with the same weights.
- Logged: every named loss term the model returns is recorded per step (RunResult.history).
- Handed its files: a run that starts from saved weights (model.pretrained, RRA's cam_run) gets
  them as `files` (fglib.models.RunFiles); the engine reads no results store.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fglib.core.config import RunConfig
from fglib.core.hardware import resolve_precision
from fglib.core.runtime import progress_bar
from fglib.data.cub import CUBDataset
from fglib.data.files import open_split
from fglib.data.memory import ImageTensors, augment, load_tensors, normalise
from fglib.data.registry import DATASETS, GENERATED, generate
from fglib.data.synth import SynthConfig, synthetic_benchmark
from fglib.models import MODEL_CLASSES, MODELS, RunFiles, build_model
from fglib.models.backbones import build_backbone


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


@dataclass
class RunResult:
    key: str
    config: dict[str, Any]
    metrics: dict[str, Any]                               # final test metrics
    history: list[dict[str, float]] = field(default_factory=list)   # one row per step: loss terms, lr
    evals: list[dict[str, float]] = field(default_factory=list)     # one row per evaluation
    seconds: float = 0.0
    images_per_second: float = 0.0
    precision: str = "float32"                            # what the forward pass ran in (train.amp resolved)


# -- data ---------------------------------------------------------------------------------------

def load_data(cfg: RunConfig) -> tuple[ImageTensors, ImageTensors]:
    """(train, test) as in-memory tensors for the configured dataset."""
    d = cfg.data
    if d.name == "synth":
        synth = SynthConfig(**{"image_size": d.image_size, **d.synth})
        root = synthetic_benchmark(synth)
    elif d.name in GENERATED:                                       # other generated sets ("pretrain")
        root = generate(d.name, d.image_size, d.synth)
    elif (not d.in_memory and d.name in DATASETS) or d.name in ("cub", "nabirds"):
        if d.root is None:
            raise ConfigError(f"dataset {d.name!r} needs data.root, the folder that holds it "
                              f"(get it with `python -m fglib data prepare {d.name} --root DIR`)")
        root = Path(d.root)
    else:
        raise ConfigError(f"unknown dataset {d.name!r}: use 'synth', {', '.join(map(repr, GENERATED))} "
                          f"or one of {sorted(DATASETS)} "
                          "(in memory only 'cub' and 'nabirds'; the others need data.in_memory=False)")
    if not d.in_memory:                                             # the paper-scale path: files + DataLoader
        return (open_split(d.name, root, "train", d.image_size, train=True, flip=d.flip, workers=d.workers),
                open_split(d.name, root, "test", d.image_size, train=False, workers=d.workers))
    return (load_tensors(CUBDataset(root, "train"), d.image_size),
            load_tensors(CUBDataset(root, "test"), d.image_size))


def epoch_batches(labels: torch.Tensor, cfg: RunConfig, epoch: int) -> list[torch.Tensor]:
    """Index batches for one epoch, deterministic in (seed, epoch)."""
    t = cfg.train
    g = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
    n = len(labels)
    if t.sampler == "random":
        perm = torch.randperm(n, generator=g)
        return [perm[i:i + t.batch_size] for i in range(0, n - t.batch_size + 1, t.batch_size)]
    # class-balanced: classes_per_batch classes x images_per_class images each
    by_class = [torch.nonzero(labels == c).flatten() for c in range(int(labels.max()) + 1)]
    present = torch.tensor([c for c, idx in enumerate(by_class) if len(idx)])
    batches = []
    for _ in range(n // (t.classes_per_batch * t.images_per_class)):
        classes = present[torch.randperm(len(present), generator=g)[:t.classes_per_batch]]
        batches.append(torch.cat([by_class[c][torch.randperm(len(by_class[c]), generator=g)[:t.images_per_class]]
                                  for c in classes.tolist()]))
    return batches


# -- checks -------------------------------------------------------------------------------------

def check_config(cfg: RunConfig, train: ImageTensors | None = None,
                 files: RunFiles | None = None) -> None:
    """Fail before training, with a sentence that says what to change (with `files`: also when a
    file the run starts from was not handed in)."""
    m, t, d = cfg.model, cfg.train, cfg.data
    if m.method not in MODELS:
        raise ConfigError(f"unknown method {m.method!r}; known methods: {', '.join(sorted(MODELS))}")
    if t.sampler not in ("random", "balanced"):
        raise ConfigError(f"train.sampler must be 'random' or 'balanced', got {t.sampler!r}")
    if not 0 <= t.freeze_backbone_epochs < t.epochs:
        raise ConfigError(f"train.freeze_backbone_epochs={t.freeze_backbone_epochs} must be in [0, train.epochs"
                          f"={t.epochs}): a backbone frozen for the whole run is never fine-tuned")
    if t.freeze_backbone_epochs and not (m.pretrained or m.weights_path):
        raise ConfigError("train.freeze_backbone_epochs only makes sense for a pre-trained backbone: set "
                          "model.pretrained=true (or model.weights_path), or freeze_backbone_epochs=0")
    needs = MODEL_CLASSES[m.method].needs                  # what the model asks of a training batch
    if needs.balanced and (t.sampler != "balanced" or t.classes_per_batch < needs.classes
                           or t.images_per_class < needs.images_per_class):
        raise ConfigError(f"{needs.why}: use train.sampler='balanced' with "
                          f"train.classes_per_batch >= {needs.classes} and "
                          f"train.images_per_class >= {needs.images_per_class}")
    stride = 2 ** (len(m.widths) - 1) if m.backbone == "small_resnet" else 32
    if d.image_size < 2 * stride:
        raise ConfigError(f"data.image_size={d.image_size} is too small for backbone {m.backbone!r} with output "
                          f"stride {stride}: the feature map would be under 2x2; use image_size >= {2 * stride} "
                          f"or fewer stages")
    if t.amp not in (True, False, "auto"):
        raise ConfigError(f"train.amp must be 'auto' (bfloat16 only on CPUs with native BF16 instructions, "
                          f"float16 on CUDA), True or False; got {t.amp!r}")
    if not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing={t.label_smoothing} must be in [0, 1): the weight moved "
                          "from the true class to a uniform target (0.1 is usual, 0 switches it off)")
    if not t.head_lr_scale > 0:
        raise ConfigError(f"train.head_lr_scale={t.head_lr_scale} must be > 0: the multiple of train.lr "
                          "that the parameters outside the backbone train at (1.0: the same lr)")
    if t.epochs < 1 or t.batch_size < 2:
        raise ConfigError("train.epochs must be >= 1 and train.batch_size >= 2 (batch norm needs two images)")
    if files is not None:
        if m.backbone == "small_resnet" and m.pretrained and m.weights_path is None and files.backbone is None:
            raise ConfigError("model.pretrained=true needs the pre-trained small_resnet's weights: train through "
                              "fglib.experiments.runner (run, train_run), which finds the book's pretraining run, "
                              "or pass files=RunFiles(backbone=PATH), or set model.weights_path")
        if (m.options or {}).get("cam_run") and files.proposals is None:
            raise ConfigError(f"model.options.cam_run={m.options['cam_run']!r} needs that run's weights: train "
                              "through fglib.experiments.runner (run, train_run), which finds them, or pass "
                              "files=RunFiles(proposals=PATH)")
    if train is None:
        return
    counts = torch.bincount(train.labels, minlength=train.num_classes)
    if t.sampler == "balanced":
        if t.classes_per_batch > int((counts > 0).sum()):
            raise ConfigError(f"train.classes_per_batch={t.classes_per_batch} but the training split has only "
                              f"{int((counts > 0).sum())} classes; lower classes_per_batch")
        if t.images_per_class > int(counts[counts > 0].min()):
            raise ConfigError(f"train.images_per_class={t.images_per_class} but the smallest class has "
                              f"{int(counts[counts > 0].min())} training images, so a class-balanced batch cannot "
                              f"be filled; lower images_per_class")
    elif t.batch_size > len(train):
        raise ConfigError(f"train.batch_size={t.batch_size} exceeds the {len(train)} training images")


# -- model and optimisation ----------------------------------------------------------------------

def build(cfg: RunConfig, num_classes: int, files: RunFiles = RunFiles()) -> nn.Module:
    """cfg's model for `num_classes` classes, starting from `files` where it needs saved weights."""
    m = cfg.model
    backbone = build_backbone(m.backbone, m.widths, m.blocks, m.pretrained,
                              m.weights_path or files.backbone, m.output_stride)
    return build_model(m.method, backbone, num_classes, m, files,
                       label_smoothing=cfg.train.label_smoothing)


def lr_at(step: int, steps_per_epoch: int, cfg: RunConfig) -> float:
    """Linear warm-up to lr, then cosine decay to 0, per iteration."""
    t = cfg.train
    total, warm = t.epochs * steps_per_epoch, int(t.warmup_epochs * steps_per_epoch)
    if step < warm:
        return t.lr * (step + 1) / warm
    return 0.5 * t.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.SGD:
    """Nesterov SGD over four groups: {backbone, the rest} x {weights (decayed), biases and
    norms (not decayed)}; set_lr gives each its learning rate per step."""
    t = cfg.train
    groups = []
    for part in ("backbone", "rest"):                               # backbone: can be frozen for a while
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("backbone.") == (part == "backbone")]
        groups += [{"params": [p for _, p in named if p.ndim > 1], "weight_decay": t.weight_decay,
                    "backbone": part == "backbone"},
                   {"params": [p for _, p in named if p.ndim <= 1], "weight_decay": 0.0,
                    "backbone": part == "backbone"}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=t.lr, momentum=t.momentum, nesterov=True)


def set_lr(opt: torch.optim.Optimizer, lr: float, epoch: int, cfg: RunConfig) -> None:
    """The step's learning rates: the backbone's 0 while frozen, else lr; every other
    parameter's lr x train.head_lr_scale."""
    t = cfg.train
    for group in opt.param_groups:
        if group["backbone"]:
            group["lr"] = 0.0 if epoch < t.freeze_backbone_epochs else lr
        else:
            group["lr"] = lr * t.head_lr_scale


def _device(cfg: RunConfig) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


# -- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def predict(model: nn.Module, data: ImageTensors, mean: torch.Tensor, std: torch.Tensor,
            batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits for every image of `data` (eval mode, no augmentation, full precision)."""
    model.eval()
    if not isinstance(data, ImageTensors):                          # files: already normalised tensors
        batches = list(torch.arange(len(data)).split(batch_size))
        return torch.cat([model(x.to(device).contiguous(memory_format=torch.channels_last))[0].float().cpu()
                          for x, _ in data.batches(batches)])
    out = [model(normalise(data.images[i:i + batch_size], mean, std).to(device)
                 .contiguous(memory_format=torch.channels_last))[0].float().cpu()
           for i in range(0, len(data), batch_size)]
    return torch.cat(out)


def metrics_from_logits(logits: torch.Tensor, data: ImageTensors) -> dict[str, Any]:
    """top-1, per-class accuracy and, when classes have families, how confusion stays inside them."""
    pred, y = logits.argmax(1), data.labels
    correct = pred == y
    per_class = [correct[y == c].float().mean().item() if (y == c).any() else float("nan")
                 for c in range(data.num_classes)]
    out: dict[str, Any] = {"top1": correct.float().mean().item(), "per_class": per_class}
    if data.families is not None:
        fam_pred, fam_true = data.families[pred], data.families[y]
        errors = ~correct
        out["family_top1"] = (fam_pred == fam_true).float().mean().item()
        # of the mistakes, the share that picked a class of the right family
        out["within_family_errors"] = ((fam_pred == fam_true) & errors).sum().item() / max(1, errors.sum().item())
    return out


# -- checkpoints --------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, flush it to disk, then rename: a kill leaves the old file intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["key"] != key:
        raise ConfigError(f"{path} was written by a different config (key {state['key']}, this one is {key}); "
                          "use another run_dir or delete the checkpoint to start over")
    return state


# -- the loop -----------------------------------------------------------------------------------

def train(cfg: RunConfig, run_dir: str | Path | None = None, data: tuple[ImageTensors, ImageTensors] | None = None,
          progress: bool | None = None, stop_after_epochs: int | None = None,
          files: RunFiles = RunFiles()) -> RunResult:
    """Train cfg's model; with run_dir, checkpoint every epoch and resume from the last one.

    stop_after_epochs (for tests and demos) stops early as if the process had been killed.
    files: the saved weights the run starts from (fglib.experiments.runner.run_files finds the
    book's); a config that needs one that is missing fails before anything is trained.
    """
    check_config(cfg, files=files)
    train_set, test_set = data if data is not None else load_data(cfg)
    check_config(cfg, train_set)
    key, t = cfg.key(), cfg.train
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by the {world} processes")
    if t.sampler == "balanced" and t.classes_per_batch % world:
        # batches are ordered class by class and split in contiguous chunks: each process needs whole classes
        raise ConfigError(f"train.classes_per_batch={t.classes_per_batch} must be divisible by the {world} "
                          "processes, so that every process receives whole classes of a balanced batch")
    device = _device(cfg)

    torch.manual_seed(t.seed)                                       # model initialisation
    model = build(cfg, train_set.num_classes, files).to(device)
    opt = optimizer(model, cfg)
    if world > 1 and device.type == "cuda":                         # batch statistics over the whole batch
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)      # (CUDA only; on CPU each process has its own)
    model = model.to(memory_format=torch.channels_last)            # the layout oneDNN / cuDNN convolve fastest
    # DDP after the layout change: DDP registers the parameters' gradient buckets as they are when
    # it wraps the model, so converting afterwards would scramble the averaged conv gradients
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    in_memory = isinstance(train_set, ImageTensors)
    mean, std = train_set.mean_std() if in_memory else (None, None)   # files are normalised by their transforms
    # mixed precision: float16 with loss scaling on CUDA, bfloat16 (no scaling needed) on the CPU;
    # train.amp="auto" keeps float32 on a CPU without native BF16 instructions (emulated bf16 is slow)
    precision = resolve_precision(t.amp, device.type)
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "float16")

    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    start_epoch, seconds, images = 0, 0.0, 0
    state = load_checkpoint(ckpt_path, key) if ckpt_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state.get("precision", precision) != precision:
            raise ConfigError(f"{ckpt_path} was trained in {state['precision']} but this machine resolves "
                              f"train.amp={t.amp!r} to {precision}; delete the checkpoint to start over")
        start_epoch, history, evals = state["epoch"], state["history"], state["evals"]
        seconds, images = state["seconds"], state["images"]

    steps_per_epoch = len(epoch_batches(train_set.labels, cfg, 0))
    bar = progress_bar(progress if rank == 0 else False, total=t.epochs * steps_per_epoch,
                       initial=start_epoch * steps_per_epoch, desc=f"{cfg.model.method} seed {t.seed}", unit="step", leave=False)
    for epoch in range(start_epoch, t.epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            break
        tic = time.perf_counter()
        ddp_model.train()
        g = torch.Generator().manual_seed(t.seed * 100_003 + epoch + 7)
        index_batches = epoch_batches(train_set.labels, cfg, epoch)
        if in_memory:                                               # batched crop + flip on uint8 tensors
            stream = ((normalise(augment(train_set.images[idx], cfg.data.crop_padding, cfg.data.flip, g), mean, std),
                       train_set.labels[idx]) for idx in index_batches)
        else:                                                       # torchvision transforms in DataLoader workers
            stream = train_set.batches(index_batches)
        for i, (x, y) in enumerate(stream):
            step = epoch * steps_per_epoch + i
            lr = lr_at(step, steps_per_epoch, cfg)
            set_lr(opt, lr, epoch, cfg)
            if world > 1:                                           # each process takes its share of the batch
                x, y = x.chunk(world)[rank], y.chunk(world)[rank]
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                _, losses = ddp_model(x, y)
                loss = sum(losses.values())                         # the model returns weighted terms
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            history.append({"step": step, "epoch": epoch, "lr": lr,
                            "loss": loss.item(), **{k: v.item() for k, v in losses.items()}})
            images += len(y) * world
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds += time.perf_counter() - tic
        if t.eval_every and (epoch + 1) % t.eval_every == 0 and epoch + 1 < t.epochs:
            m = metrics_from_logits(predict(model, test_set, mean, std, device=device), test_set)
            evals.append({"epoch": epoch + 1, "top1": m["top1"]})
        if ckpt_path is not None and rank == 0:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt_path, {"key": key, "config": cfg.to_dict(), "epoch": epoch + 1,
                                        "model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "rng": torch.get_rng_state(), "history": history, "evals": evals,
                                        "seconds": seconds, "images": images, "precision": precision})
    bar.close()
    metrics: dict[str, Any] = {}
    if stop_after_epochs is None or stop_after_epochs >= t.epochs:  # finished: the final test metrics
        metrics = metrics_from_logits(predict(model, test_set, mean, std, device=device), test_set)
        evals = [*evals, {"epoch": t.epochs, "top1": metrics["top1"]}]
    result = RunResult(key=key, config=cfg.to_dict(), metrics=metrics, history=history, evals=evals,
                       seconds=seconds, images_per_second=images / seconds if seconds else 0.0,
                       precision=precision)
    result.model = model                                            # not serialised; for CAMs in notebooks
    result.normalisation = (mean, std)
    return result
