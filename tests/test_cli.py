"""The command line and the config checks behind it: a bad value fails in one sentence, bugs keep a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fglib.__main__ as cli
from fglib.core.config import (DataConfig, ModelConfig, RunConfig, TrainConfig, book_profile, paper_profile,
                               parse_setting)

ROOT = Path(__file__).resolve().parents[1]


# -- run keys ------------------------------------------------------------------------------------------

# These keys pin the results store's run names (data/runs/<key>.json): they were computed before the
# config checks were added, and a config that was valid then must keep its key, or every stored run of
# the book would silently turn into a missing one. Change them only together with a re-recorded store.
PINNED_KEYS = [
    (lambda: RunConfig(), "7e5e5c200786"),
    (lambda: book_profile(), "7e5e5c200786"),
    (lambda: paper_profile("cub", root="~/data/CUB_200_2011"), "a6c9a835383f"),
    (lambda: book_profile(**{"train.seed": 1}), "2c33aa95025b"),
    (lambda: book_profile(**{"data.image_size": 32,
                             "data.synth": {"num_classes": 4, "images_per_class": 8, "families": 2},
                             "model.widths": (8, 16), "model.blocks": (1, 1), "train.epochs": 3,
                             "train.batch_size": 8, "train.warmup_epochs": 0.5}), "61b221d78e5c"),
    (lambda: book_profile(**{"model.method": "mcloss", "model.widths": (16, 32, 64, 192),
                             "model.options": {"xi": 8}}), "7eef526913c2"),
    (lambda: book_profile(**{"train.sampler": "balanced", "train.classes_per_batch": 16,
                             "train.images_per_class": 4}), "5e5487ed02d3"),
    (lambda: book_profile(**{"train.amp": False, "train.lr": 0.05, "data.root": "/x"}), "af6f748eef42"),
    (lambda: book_profile(**{"train.warmup_epochs": 1}), "d48873e74feb"),   # an int in a float field stays an int
]


@pytest.mark.parametrize("build, key", PINNED_KEYS)
def test_valid_configs_keep_their_keys(build, key):
    cfg = build()
    assert cfg.key() == key
    assert RunConfig.from_dict(cfg.to_dict()).key() == key      # a stored record reads back to the same run


def test_a_list_for_a_tuple_field_is_stored_as_a_tuple_with_the_same_key():
    m = ModelConfig(widths=[16, 32], blocks=[1, 1])
    assert m.widths == (16, 32) and m.blocks == (1, 1)
    as_list, as_tuple = (book_profile(**{"model.widths": w, "model.blocks": (1, 1)}) for w in ([8, 16], (8, 16)))
    assert as_list == as_tuple and as_list.key() == as_tuple.key()


# -- the checks, from Python ---------------------------------------------------------------------------

@pytest.mark.parametrize("build, field, got, expected", [
    (lambda: ModelConfig(pretrained="False"), "model.pretrained", "'False' (str)", "a bool"),
    (lambda: TrainConfig(epochs="3"), "train.epochs", "'3' (str)", "an int"),
    (lambda: TrainConfig(epochs=True), "train.epochs", "True (bool)", "an int"),
    (lambda: TrainConfig(lr=True), "train.lr", "True (bool)", "a float"),
    (lambda: RunConfig().override(**{"train.lr": "0.1"}), "train.lr", "'0.1' (str)", "a float"),
    (lambda: ModelConfig(widths=(16, "32")), "model.widths", "(16, '32') (tuple)", "a tuple of ints"),
    (lambda: ModelConfig(widths=16), "model.widths", "16 (int)", "a tuple of ints"),
    (lambda: ModelConfig(options="xi"), "model.options", "'xi' (str)", "a dict"),
    (lambda: DataConfig(synth=[("hard_fraction", 1.0)]), "data.synth", "(list)", "a dict"),
    (lambda: DataConfig(root=3), "data.root", "3 (int)", "a string or None"),
    (lambda: TrainConfig(amp=1), "train.amp", "1 (int)", "a bool (true or false) or a string"),
    (lambda: RunConfig(train={"lr": 0.1}), "train", "(dict)", "a TrainConfig"),
    (lambda: RunConfig.from_dict({"model": {"pretrained": "false"}}), "model.pretrained", "'false' (str)",
     "a bool"),
    (lambda: paper_profile("cub", **{"data.in_memory": "no"}), "data.in_memory", "'no' (str)", "a bool"),
])
def test_a_value_of_the_wrong_type_names_the_field_the_value_and_the_type(build, field, got, expected):
    with pytest.raises(ValueError) as info:
        build()
    message = str(info.value)
    assert message.startswith(f"invalid {field}: got ") and got in message and f"expected {expected}" in message


def test_what_the_checks_accept():
    assert TrainConfig(lr=1).lr == 1 and isinstance(TrainConfig(lr=1).lr, int)   # an int is a float; stored as is
    assert TrainConfig(amp=True).amp is True and TrainConfig(amp="auto").amp == "auto"
    assert DataConfig(root=None).root is None and DataConfig(root="/data").root == "/data"
    assert ModelConfig(options={"xi": 4, "anything": [1]}).options == {"xi": 4, "anything": [1]}  # free keys
    with pytest.raises(ValueError, match="unknown setting 'train.lrr'.*train has epochs"):
        book_profile(**{"train.lrr": 0.1})
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['depth'\]"):
        RunConfig.from_dict({"model": {"depth": 3}})
    with pytest.raises(ValueError, match="sections"):
        RunConfig.from_dict({"optim": {}})


# -- command-line text ---------------------------------------------------------------------------------

@pytest.mark.parametrize("item, value", [
    ("model.pretrained=false", False), ("model.pretrained=False", False), ("model.pretrained=True", True),
    ("train.amp=true", True), ("train.amp=auto", "auto"),
    ("train.lr=0.05", 0.05), ("train.epochs=3", 3),
    ("model.widths=[16,32,64]", (16, 32, 64)),
    ("model.options={\"xi\": 4}", {"xi": 4}),
    ("data.root=null", None), ("data.root=/data/CUB_200_2011", "/data/CUB_200_2011"),
    ("data.root=2024", "2024"),                              # a string field keeps the text as typed
    ("train.sampler=balanced", "balanced"), ("data.name=\"cub\"", "cub"),
])
def test_parse_setting(item, value):
    name, parsed = parse_setting(item)
    assert name == item.partition("=")[0] and parsed == value and type(parsed) is type(value)


def test_parse_setting_leaves_a_wrong_value_to_the_config_check():
    assert parse_setting("train.epochs=abc") == ("train.epochs", "abc")
    assert parse_setting("model.pretrained=yes") == ("model.pretrained", "yes")
    with pytest.raises(ValueError, match="expects section.field=value"):
        parse_setting("train.epochs")
    with pytest.raises(ValueError, match="unknown setting 'model.pretrain'"):
        parse_setting("model.pretrain=false")


@pytest.fixture
def no_training(monkeypatch):
    """train_command up to the training call: the config it would train lands in the returned list."""
    seen = []

    def fake_train(cfg, **kwargs):
        seen.append(cfg)
        raise KeyboardInterrupt                      # also exercises the interrupt path

    monkeypatch.setattr(cli.fglib, "setup", lambda *a, **k: None)   # no global thread / seed changes in pytest
    monkeypatch.setattr(cli, "train_run", fake_train)
    return seen


def test_cli_set_false_trains_without_pretrained_weights(no_training, capsys):
    rc = cli.main(["train", "--profile", "paper", "--root", "/data", "--quiet",
                   "--set", "model.pretrained=False", "--set", "model.widths=[8,16]"])
    assert rc == 130 and capsys.readouterr().err.strip() == "interrupted"
    cfg, = no_training
    assert cfg.model.pretrained is False and cfg.model.widths == (8, 16) and cfg.data.root == "/data"


@pytest.mark.parametrize("item, field, got, expected", [
    ("model.pretrained=yes", "model.pretrained", "'yes' (str)", "a bool (true or false)"),
    ("model.pretrained=0", "model.pretrained", "0 (int)", "a bool (true or false)"),
    ("train.epochs=abc", "train.epochs", "'abc' (str)", "an int"),
    ("model.options=xi", "model.options", "'xi' (str)", "a dict (a JSON object on the command line"),
])
def test_cli_bad_set_value_is_one_error_line(no_training, capsys, item, field, got, expected):
    assert cli.main(["train", "--quiet", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: invalid {field}: got {got}, expected {expected}")
    assert not no_training                          # nothing was trained


def test_cli_missing_dataset_root_is_an_error_not_a_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fglib", "train", "--dataset", "cub", "--root",
                          str(tmp_path / "nonexistent"), "--profile", "paper", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, check=False,
                         env={**os.environ, "FGLIB_THREADS": "1"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and "python -m fglib data prepare cub" in out.stderr
    assert "Traceback" not in out.stderr


def _library_errors():
    from fglib.data.cub import CorruptImageError
    from fglib.data.download import ArchiveError, DownloadError, ManualDownloadError
    from fglib.experiments.store import StaleRunError, StoreError
    from fglib.engine.train import ConfigError

    errors = [ValueError, FileNotFoundError, ConfigError, StoreError, StaleRunError, DownloadError,
              ManualDownloadError, ArchiveError, CorruptImageError]
    import fglib.models.backbones

    if hasattr(fglib.models.backbones, "PretrainedWeightsError"):
        errors.append(fglib.models.backbones.PretrainedWeightsError)
    return errors


@pytest.mark.parametrize("error", _library_errors(), ids=lambda e: e.__name__)
def test_expected_errors_print_one_line_and_exit_2(monkeypatch, capsys, error):
    def command(args):
        raise error("the message")

    monkeypatch.setattr(cli, "store_command", command)
    assert cli.main(["store", "status"]) == 2
    assert capsys.readouterr().err == "error: the message\n"


@pytest.mark.parametrize("error", [ZeroDivisionError, RuntimeError, KeyError, TypeError])
def test_a_bug_keeps_its_traceback(monkeypatch, error):
    def command(args):
        raise error("a bug")

    monkeypatch.setattr(cli, "train_command", command)
    with pytest.raises(error, match="a bug"):
        cli.main(["train", "--quiet"])


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def command(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "store_command", command)
    assert cli.main(["store", "status"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
