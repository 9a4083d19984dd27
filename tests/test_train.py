"""The training engine: determinism, resume, bad configs, the results cache, the CLI and DDP."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fglib.core.config import RunConfig, book_profile, paper_profile
from fglib.engine.train import (ConfigError, build, check_config, epoch_batches, load_data, optimizer,
                                save_checkpoint, set_lr, train)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.image_size": 32, "data.synth": {"num_classes": 4, "images_per_class": 8, "families": 2},
        "model.widths": (8, 16), "model.blocks": (1, 1), "train.epochs": 3, "train.batch_size": 8,
        "train.warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FGLIB_DATA_CACHE")
    os.environ["FGLIB_DATA_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FGLIB_DATA_CACHE")
    else:
        os.environ["FGLIB_DATA_CACHE"] = old


@pytest.fixture(scope="module")
def tiny(cache):
    cfg = book_profile(**TINY)
    return cfg, load_data(cfg)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_config_same_result(tiny):
    cfg, data = tiny
    r1, r2 = train(cfg, data=data, progress=False), train(cfg, data=data, progress=False)
    assert same_weights(r1.model, r2.model)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    r3 = train(cfg.override(**{"train.seed": 1}), data=data, progress=False)
    assert not same_weights(r1.model, r3.model)


def test_every_loss_term_is_logged_per_step(tiny):
    cfg, data = tiny
    r = train(cfg.override(**{"train.epochs": 1}), data=data, progress=False)
    assert len(r.history) == len(epoch_batches(data[0].labels, cfg, 0))
    assert {"step", "epoch", "lr", "loss", "ce"} <= set(r.history[0])
    assert 0 <= r.metrics["top1"] <= 1 and len(r.metrics["per_class"]) == data[0].num_classes
    assert 0 <= r.metrics["within_family_errors"] <= 1


def test_resume_equals_uninterrupted(tiny, tmp_path):
    cfg, data = tiny
    full = train(cfg, data=data, progress=False)
    train(cfg, run_dir=tmp_path, data=data, progress=False, stop_after_epochs=1)   # "killed" after epoch 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = train(cfg, run_dir=tmp_path, data=data, progress=False)
    assert same_weights(full.model, resumed.model)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_killed_process_resumes_to_the_same_weights(tiny, tmp_path, cache):
    cfg, data = tiny
    cfg = cfg.override(**{"train.epochs": 6})
    args = [sys.executable, "-m", "fglib", "train", "--quiet", "--run-dir", str(tmp_path / "run"),
            "--save-weights", str(tmp_path / "w.pt")]
    for key, value in {**TINY, "train.epochs": 6}.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "FGLIB_DATA_CACHE": str(cache), "FGLIB_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)                       # no chance to clean up
    proc.wait()
    state = torch.load(ckpt, weights_only=False)
    assert 1 <= state["epoch"] <= 6
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)   # resume
    full = train(cfg, data=data, progress=False)
    resumed = torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(torch.equal(resumed[k], v) for k, v in full.model.state_dict().items())


def test_a_kill_during_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})

    def dies_halfway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}


def test_checkpoint_from_another_config_is_refused(tiny, tmp_path):
    cfg, data = tiny
    train(cfg, run_dir=tmp_path, data=data, progress=False, stop_after_epochs=1)
    with pytest.raises(ConfigError, match="different config"):
        train(cfg.override(**{"train.lr": 0.01}), run_dir=tmp_path, data=data, progress=False)


@pytest.mark.parametrize("overrides,message", [
    ({"data.image_size": 12, "model.widths": (8, 8, 8, 8), "model.blocks": (1, 1, 1, 1)}, "too small for backbone"),
    ({"model.method": "nope"}, "unknown method 'nope'"),
    ({"train.sampler": "balanced", "train.classes_per_batch": 2, "train.images_per_class": 50}, "cannot be filled"),
    ({"train.sampler": "balanced", "train.classes_per_batch": 9}, "only 4 classes"),
    ({"train.batch_size": 1000}, "exceeds"),
    ({"model.method": "apinet"}, "API-Net pairs every image.*train.sampler=.balanced"),
])
def test_bad_configs_fail_before_training(tiny, overrides, message):
    cfg, data = tiny
    with pytest.raises(ConfigError, match=message):
        check_config(cfg.override(**overrides), data[0])


def test_unknown_dataset_and_setting():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_data(book_profile(**{"data.name": "imagenet"}))
    with pytest.raises(ValueError, match="unknown setting"):
        book_profile(**{"train.lrr": 0.1})
    for cfg in (paper_profile("cub"), paper_profile("cars"), book_profile(**{"data.name": "cub"})):
        with pytest.raises(ConfigError, match=r"needs data.root.*python -m fglib data prepare"):
            load_data(cfg)


def test_balanced_batches(tiny):
    cfg, data = tiny
    cfg = cfg.override(**{"train.sampler": "balanced", "train.classes_per_batch": 2, "train.images_per_class": 3})
    for b in epoch_batches(data[0].labels, cfg, 0):
        labels = data[0].labels[b]
        assert len(b) == 6 and len(set(b.tolist())) == 6
        assert sorted(torch.bincount(labels).tolist()) [-2:] == [3, 3] and len(labels.unique()) == 2


def test_config_key_and_round_trip():
    a = book_profile()
    assert a.key() == RunConfig.from_dict(a.to_dict()).key()
    assert a.key() != a.override(**{"train.seed": 1}).key()
    assert a.key() == a.override(**{"train.device": "cuda"}).key()     # the device does not change the result


def test_cli_reports_a_bad_config_in_one_sentence(cache):
    out = subprocess.run([sys.executable, "-m", "fglib", "train", "--image-size", "8", "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "FGLIB_DATA_CACHE": str(cache)})
    assert out.returncode == 2 and "too small for backbone" in out.stderr and "Traceback" not in out.stderr


def free_port() -> int:
    with socket.socket() as s:                             # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, env, nproc=2):
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)


DDP = {**TINY, "train.epochs": 2, "train.amp": False}     # float32: the reference below is exact


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory, cache):
    """torchrun with 2 CPU processes (gloo, one thread each) training DDP: each rank's
    parameters and loss history."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "FGLIB_DATA_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(out), json.dumps(DDP)], env)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_ddp_ranks_stay_identical_and_see_different_halves(tiny, ddp_ranks):
    """Synced gradients keep the two ranks' parameters identical after every step, while each
    trains on its own half of every batch: without the syncing they part after the first step
    by more than training moves them (apart / moved: 0 synced, 1.4 without)."""
    cfg, data = tiny
    from fglib.engine.train import build

    torch.manual_seed(cfg.train.seed)
    init = dict(build(cfg, data[0].num_classes).named_parameters())
    moved = max((ddp_ranks[0]["params"][n] - p).abs().max().item() for n, p in init.items())
    apart = max((ddp_ranks[0]["params"][n] - ddp_ranks[1]["params"][n]).abs().max().item()
                for n in init)
    assert moved > 1e-3                                    # training moved the weights
    assert apart <= 1e-6 * moved, f"the ranks differ by {apart:.3g} (training moved {moved:.3g})"
    losses = [[h["loss"] for h in r["history"]] for r in ddp_ranks]
    assert len(losses[0]) == len(losses[1]) == 2 * len(epoch_batches(data[0].labels, cfg, 0))
    assert all(a != b for a, b in zip(*losses))            # different halves at every step


def halves(build):
    """`build`, its model's training forward run on each half of the batch on its own and the
    halves' loss terms averaged: what 2 DDP processes compute, by DDP's definition. Each
    process normalises its half with its own batch statistics (batch norm is not synced on
    the CPU) and takes its half's mean loss; DDP averages the gradients, and the gradient of
    the averaged loss is that average (exactly: halving is exact in floating point)."""
    def build_split(*args, **kwargs):
        model = build(*args, **kwargs)
        forward = model.forward

        def split(x, y=None):
            if y is None:                                  # evaluation: the whole batch
                return forward(x)
            outs = [forward(xh, yh) for xh, yh in zip(x.chunk(2), y.chunk(2))]
            return (torch.cat([o[0] for o in outs]),
                    {k: (outs[0][1][k] + outs[1][1][k]) / 2 for k in outs[0][1]})

        model.forward = split
        return model
    return build_split


def test_ddp_trains_like_one_process_that_splits_each_batch(tiny, ddp_ranks, monkeypatch):
    """The 2-process run against one process that runs each half batch separately (helper
    `halves`), on one thread as the ranks: the same parameters, and each step's loss the mean
    of the two ranks' losses. Without the syncing, or with summed instead of averaged
    gradients, the parameters differ by about as much as training moved them."""
    import fglib.engine.train as engine

    cfg, data = tiny
    torch.manual_seed(cfg.train.seed)
    init = dict(engine.build(cfg, data[0].num_classes).named_parameters())
    monkeypatch.setattr(engine, "build", halves(engine.build))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(book_profile(**DDP), data=data, progress=False)
    finally:
        torch.set_num_threads(threads)
    params = dict(ref.model.named_parameters())
    assert set(params) == set(init) == set(ddp_ranks[0]["params"])
    moved = max((params[n] - p).abs().max().item() for n, p in init.items())
    off = max((r["params"][n] - params[n]).abs().max().item() for r in ddp_ranks for n in init)
    assert moved > 1e-3
    assert off <= 1e-5 * moved, f"DDP is {off:.3g} off the reference (training moved {moved:.3g})"
    assert [h["loss"] for h in ref.history] == pytest.approx(
        [(a["loss"] + b["loss"]) / 2 for a, b in zip(*(r["history"] for r in ddp_ranks))],
        rel=1e-6)


def test_the_cli_trains_under_torchrun(tiny, tmp_path, cache):
    """`python -m fglib train` started by torchrun: rank 0 writes the results and weights."""
    args = ["-m", "fglib", "train", "--quiet", "--out", str(tmp_path / "ddp.json"),
            "--save-weights", str(tmp_path / "ddp.pt")]
    for key, value in {**TINY, "train.epochs": 1}.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "FGLIB_DATA_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    torchrun(args, env)
    cfg, data = tiny
    single = train(cfg.override(**{"train.epochs": 1}), data=data, progress=False)
    history = json.loads((tmp_path / "ddp.json").read_text())["history"]
    assert len(history) == len(single.history)
    # the first step: the same initialisation, each process the mean loss of its half batch
    assert history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=0.05)
    weights = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert set(weights) == set(single.model.state_dict())


def test_discriminative_parts_follow_the_file(tiny, cache):
    cfg, (train_set, _) = tiny
    disc = train_set.discriminative_parts()
    assert disc.shape == (len(train_set), len(train_set.part_names)) and disc.any(1).all()
    root = next(Path(cache).glob("synth-*"))
    first = (root / "synth" / "discriminative_parts.txt").read_text().split("\n")[0].split()
    listed = {int(p) - 1 for p in first[2].split(",")}
    assert set(torch.nonzero(train_set.disc_parts[0]).flatten().tolist()) == listed


def test_file_path_trains_through_a_dataloader(tiny, cache):
    """data.in_memory=False: images decoded from files by torchvision transforms in a DataLoader."""
    from fglib.data.files import FileSplit

    cfg, _ = tiny
    root = next(Path(cache).glob("synth-*"))
    cfg = cfg.override(**{"data.in_memory": False, "data.root": str(root), "data.workers": 0, "train.epochs": 1})
    train_set, test_set = load_data(cfg)
    assert isinstance(train_set, FileSplit) and len(train_set) == 16 and train_set.num_classes == 4
    x, y = next(train_set.batches([torch.tensor([0, 3, 5])]))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == train_set.labels[[0, 3, 5]].tolist()
    r = train(cfg, data=(train_set, test_set), progress=False)
    assert 0 <= r.metrics["top1"] <= 1 and len(r.history) == 2


def test_paper_profile_uses_the_file_path_and_resnet50():
    cfg = paper_profile("cub", root="/nonexistent")
    assert not cfg.data.in_memory and cfg.data.image_size == 448 and cfg.model.backbone == "resnet50"
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_data(cfg)


@pytest.mark.parametrize("scale,freeze,epoch", [(1.0, 0, 0), (10.0, 0, 0), (10.0, 2, 1), (10.0, 2, 2)])
def test_each_parameter_group_gets_its_learning_rate(scale, freeze, epoch):
    """set_lr: the backbone's groups train at lr (0 while frozen), every other parameter at
    lr x train.head_lr_scale; weights are decayed, biases and norms not; no parameter is left out."""
    cfg = book_profile(**{**TINY, "model.method": "cin",
                          "train.head_lr_scale": scale, "train.freeze_backbone_epochs": freeze})
    model = build(cfg, 4)
    opt = optimizer(model, cfg)
    set_lr(opt, 0.05, epoch, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = []
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.append(name)
            in_backbone = name.startswith("backbone.")
            want = (0.0 if epoch < freeze else 0.05) if in_backbone else 0.05 * scale
            assert group["lr"] == pytest.approx(want), name
            assert group["weight_decay"] == (cfg.train.weight_decay if p.ndim > 1 else 0.0), name
    assert sorted(seen) == sorted(names.values())


@pytest.mark.parametrize("overrides,message", [
    ({"train.label_smoothing": 1.0}, "label_smoothing"),
    ({"train.label_smoothing": -0.1}, "label_smoothing"),
    ({"train.head_lr_scale": 0.0}, "head_lr_scale"),
])
def test_bad_smoothing_or_head_scale_fail_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(book_profile(**{**TINY, **overrides}))
