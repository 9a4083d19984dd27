"""`store migrate`: a refactor that changes no computation is accepted, one that changes a formula
is refused, and the records it carries over keep their numbers and name both commits."""
import shutil

import pytest

import fglib.__main__ as cli

from fglib.core.config import book_profile
from fglib.core.paths import REPO_ROOT
from fglib.experiments import migrate, store
from fglib.experiments.pretraining import pretraining_config
from tests.conftest import TINY


def tree_with(tmp_path, name, edits=()):
    """A copy of this checkout's fglib in tmp_path/name, with (file, old, new) text edits."""
    root = tmp_path / name
    shutil.copytree(REPO_ROOT / "fglib", root / "fglib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for rel, old, new in edits:
        path = root / "fglib" / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new))
    return root


def renamed(text_old, text_new):
    """The same rename in every file of the engine that uses the name."""
    return [("engine/train.py", text_old, text_new)]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """Three trees: the current code, a pure rename, and a changed learning-rate formula; two
    configurations probed in each pair."""
    tmp = tmp_path_factory.mktemp("trees")
    same = tree_with(tmp, "same")
    rename = tree_with(tmp, "rename", renamed("metrics_from_logits", "metrics_of_logits"))
    formula = tree_with(tmp, "formula", [(
        "engine/train.py", "return 0.5 * t.lr * (1 + math.cos(",
        "return 0.5 * t.lr * 0.999 * (1 + math.cos(")])
    cfgs = [book_profile(**TINY),
            book_profile(**{**TINY, "model.method": "mcloss", "train.sampler": "balanced",
                            "train.classes_per_batch": 2, "train.images_per_class": 2,
                            "model.options": {"xi": 4}})]
    data = tmp / "data"
    (data / "runs").mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("FGLIB_DATA_DIR", str(data))
    try:
        return {name: migrate.compare_trees(same, tree, cfgs, data_cache=tmp)
                for name, tree in (("rename", rename), ("formula", formula))}
    finally:
        mp.undo()


def test_a_refactor_that_changes_no_computation_is_accepted(verdicts):
    for key, (ok, why, steps) in verdicts["rename"].items():
        assert ok, (key, why)
        assert steps >= 2 and "bit-identical" in why


def test_a_changed_formula_is_refused_at_the_step_it_changes(verdicts):
    for key, (ok, why, steps) in verdicts["formula"].items():
        assert not ok, key
        assert why.startswith("step 1 differs in") and "lr" in why, why   # step 0: warm-up


def test_compare_probes_reports_the_first_difference():
    row = {"step": 0, "loss": (1.5).hex()}
    a = {"steps": [row, {**row, "step": 1}], "weights": "w", "logits": "z"}
    assert migrate.compare_probes(a, a)[0]
    b = {**a, "steps": [row, {**row, "step": 1, "loss": (1.5000001).hex()}]}
    assert migrate.compare_probes(a, b)[:2] == (False, "step 1 differs in loss")
    assert migrate.compare_probes(a, {**a, "weights": "v"})[1] == \
        "identical losses but different final weights"
    assert migrate.compare_probes(a, {**a, "logits": "y"})[1] == \
        "identical weights but different test logits"
    assert migrate.compare_probes(a, {"error": "ImportError: x"})[1] == "new code failed: ImportError: x"


def test_a_pretrained_run_is_probed_from_the_stored_pretraining_weights(isolated_data):
    cfg = book_profile(**{**TINY, "model.pretrained": True})
    with pytest.raises(store.StoreError, match="pretraining run's weights"):
        migrate.probe_config(cfg)
    path = store.weights_path(pretraining_config((8, 16), (1, 1)).key())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    probed = migrate.probe_config(cfg)
    assert probed.model.weights_path == str(path) and probed.model.pretrained
    assert migrate.probe_config(book_profile(**TINY)) == book_profile(**TINY)
    assert migrate.probe_epochs(cfg.override(**{"train.epochs": 5,
                                               "train.freeze_backbone_epochs": 2})) == 3


def test_the_command_names_what_it_needs(capsys):
    assert cli.main(["store", "migrate"]) == 2
    assert "store migrate needs --from OLD" in capsys.readouterr().err
