"""Your own images (fglib.data.folder, fglib.experiments.folders): the ImageFolder layout, its
checks, its CUB-format index, and the command line on bad folders."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fglib.__main__ import main
from fglib.core.config import book_profile
from fglib.data.cub import CUBDataset
from fglib.data.folder import (FolderError, check_images, class_counts, folder_data,
                               folder_dataset, folder_digest, index_folder, scan,
                               split_class)
from fglib.engine.train import load_data
from fglib.experiments.folders import folder_config, folder_jobs


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test writes into its own cache, so 'nothing written' can be checked."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(path))
    return path


def written(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def make_folder(root, counts: dict[str, int], size: int = 12):
    """An ImageFolder: counts[class] PNG files of size x size, each its own colour."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size + i % 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def reference_split(n: int, fraction: float) -> list[bool]:
    """The rule in words: k = round(n * fraction) clipped to [1, n - 1] test files, the
    j-th of them at position floor((j + 1/2) n / k) of the sorted list."""
    k = round(n * fraction)
    if k < 1:
        k = 1
    if k > n - 1:
        k = n - 1
    positions = []
    for j in range(k):
        positions.append(int(np.floor((j + 0.5) * n / k)))
    return [i in positions for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 10, 31, 48, 100])
@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.3, 0.5, 0.99])
def test_split_class_follows_its_rule(n, fraction):
    test = split_class(n, fraction)
    assert test == reference_split(n, fraction)
    assert 1 <= sum(test) <= n - 1                      # a train and a test image always
    assert sum(test) == min(n - 1, max(1, round(n * fraction)))


def test_scan_splits_each_class_by_file_name(tmp_path):
    root = make_folder(tmp_path / "birds", {"a": 8, "b": 4, "c": 2})
    items = scan(root, 0.25)
    assert len(items) == 14
    per_class = {c: [t for cc, _, t in items if cc == c] for c in "abc"}
    assert per_class["a"] == split_class(8, 0.25) and sum(per_class["a"]) == 2
    assert sum(per_class["b"]) == 1 and sum(per_class["c"]) == 1
    assert [f.name for c, f, _ in items if c == "a"] == [f"{i:03d}.png" for i in range(8)]


def test_scan_keeps_a_split_of_your_own(tmp_path):
    root = tmp_path / "own"
    make_folder(root / "train", {"a": 3, "b": 3})
    make_folder(root / "test", {"a": 1, "b": 2})
    items = scan(root)
    assert sum(t for _, _, t in items) == 3 and len(items) == 9
    make_folder(root / "test", {"c": 1})
    with pytest.raises(FolderError, match=r"same classes.*only in test: \['c'\]"):
        scan(root)


@pytest.mark.parametrize("counts, message", [
    ({"a": 3}, r"1 class folder\(s\) \['a'\]: a classifier needs at least two"),
    ({"a": 3, "b": 0}, r"class folder\(s\) \['b'\] .* hold no image"),
    ({"a": 3, "b": 1}, r"\['b'\] .* hold one image: a class needs at least two"),
    ({}, r"0 class folder\(s\)"),
])
def test_scan_refuses_a_folder_it_cannot_train_on(tmp_path, counts, message):
    root = make_folder(tmp_path / "bad", counts)
    root.mkdir(exist_ok=True)
    with pytest.raises(FolderError, match=message):
        scan(root)


def test_scan_refuses_a_missing_folder_and_a_bad_fraction(tmp_path):
    with pytest.raises(FolderError, match="no folder"):
        scan(tmp_path / "nowhere")
    root = make_folder(tmp_path / "birds", {"a": 2, "b": 2})
    with pytest.raises(FolderError, match="between 0 and 1"):
        scan(root, 1.0)


def test_an_undecodable_image_is_named(tmp_path):
    root = make_folder(tmp_path / "birds", {"a": 3, "b": 3})
    (root / "b" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(FolderError, match=r"1 image\(s\) cannot be decoded: .*b/001.png"):
        check_images([f for _, f, _ in scan(root)], progress=False)


def test_the_index_reads_as_a_cub_dataset(tmp_path, cache):
    root = make_folder(tmp_path / "birds", {"Sooty Tern": 5, "Arctic_Tern": 4, "Common": 3})
    index = index_folder(root, progress=False)
    train, test = CUBDataset(index, "train"), CUBDataset(index, "test")
    assert train.class_names == ["Arctic_Tern", "Common", "Sooty Tern"]   # sorted, spaces kept
    assert (len(train), len(test)) == (9, 3)
    assert class_counts(index) == {"Arctic_Tern": (3, 1), "Common": (2, 1), "Sooty Tern": (4, 1)}
    r = train.records[0]
    assert r.path.resolve() == (root / "Arctic_Tern" / "000.png").resolve()
    assert r.box == (0.0, 0.0, 12.0, 12.0)            # the whole image
    assert np.asarray(train.load_image(0)).shape == (12, 12, 3)
    assert index_folder(root, progress=False) == index          # made once
    make_folder(root, {"Common": 4})                            # a file added: a new index
    assert index_folder(root, progress=False) != index


def test_nothing_is_written_for_a_bad_folder(tmp_path, cache):
    root = make_folder(tmp_path / "birds", {"a": 3, "b": 3})
    (root / "a" / "002.png").write_bytes(b"truncated")
    with pytest.raises(FolderError, match="cannot be decoded"):
        index_folder(root, progress=False)
    assert written(cache) == []


def test_a_folder_run_trains_on_the_folders_images(tmp_path):
    root = make_folder(tmp_path / "birds", {"a": 4, "b": 4, "c": 4}, size=16)
    cfg = book_profile(**folder_data(root), **{"data.image_size": 16})
    train, test = load_data(cfg)
    assert (train.num_classes, len(train), len(test)) == (3, 9, 3)
    assert train.images.shape[1:] == (3, 16, 16)
    assert cfg.data.synth == {"root": str(root.resolve()), "digest": folder_digest(root)}


def test_a_changed_folder_names_new_runs_and_refuses_old_ones(tmp_path):
    """A run's key holds the digest of the images: adding, removing or editing a file
    gives other runs, and a config made before the change is refused, not trained on
    other images under its old name."""
    root = make_folder(tmp_path / "birds", {"a": 4, "b": 4}, size=16)
    before = book_profile(**folder_data(root), **{"data.image_size": 16})
    make_folder(root, {"c": 2}, size=16)                       # a class added
    after = book_profile(**folder_data(root), **{"data.image_size": 16})
    assert before.key() != after.key()
    with pytest.raises(FolderError, match="changed since this run was configured"):
        load_data(before)
    assert load_data(after)[0].num_classes == 3
    assert folder_data(tmp_path / "birds") == folder_data(f"{tmp_path}/./birds")   # one path


def test_a_split_layout_under_other_names_is_explained(tmp_path):
    root = tmp_path / "birds"
    make_folder(root / "train", {"a": 2, "b": 2})
    make_folder(root / "val", {"a": 1, "b": 1})
    with pytest.raises(FolderError, match=r"\['train', 'val'\]: .* name the two sub-folders "
                                          r"train/ and test/"):
        scan(root)


def test_an_emptied_index_is_made_again(tmp_path, cache):
    root = make_folder(tmp_path / "birds", {"a": 2, "b": 2})
    index = index_folder(root, progress=False)
    (index / "index.json").unlink()
    assert index_folder(root, progress=False) == index and (index / "index.json").is_file()


def test_the_demo_folder_has_one_key_on_every_machine(tmp_path, monkeypatch):
    a = folder_data()
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path / "elsewhere"))
    assert folder_data() == a == {"data.name": "folder", "data.synth": {"demo": True}}
    with pytest.raises(FolderError, match=r"\{'root': <folder>, 'digest': ...\} or \{'demo': true\}"):
        folder_dataset(16, {"root": "x", "demo": True})


def test_folder_jobs_pair_the_method_with_its_baseline(tmp_path):
    root = make_folder(tmp_path / "birds", {c: 6 for c in "abcde"}, size=8)   # 4 train
    data = folder_data(root)
    jobs = folder_jobs(data, "cin", [0, 1])
    assert [(n, s) for n, s, _ in jobs] == [("baseline", 0), ("baseline", 1), ("cin", 0),
                                            ("cin", 1)]
    base, method = jobs[0][2], jobs[2][2]
    assert base.train.classes_per_batch == method.train.classes_per_batch == 5   # capped
    assert base.override(**{"model.method": "cin"}) == method                  # only the method
    rra = folder_config(data, "rra", 3)
    assert rra.model.options["cam_run"] == folder_config(data, "rra", 3, baseline=True).key()
    assert folder_config(data, "mcloss", 0).model.options["lam"] == pytest.approx(10 / (128 / 5))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        folder_config(data, "nope", 0)


@pytest.mark.parametrize("counts, corrupt, message", [
    ({"a": 3}, False, "at least two"),
    ({"a": 3, "b": 0}, False, "hold no image"),
    ({"a": 3, "b": 3}, True, "cannot be decoded"),
])
def test_the_command_line_refuses_a_bad_folder_and_writes_nothing(
        tmp_path, cache, capsys, counts, corrupt, message):
    root = make_folder(tmp_path / "bad", counts)
    if corrupt:
        (root / "b" / "000.png").write_bytes(b"not an image")
    for extra in ([], ["--recipe", "cin"]):
        code = main(["train", "--dataset", "folder", "--root", str(root), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err, err
        assert [p for p in written(cache) if p != "folders"] == []


def test_the_command_line_trains_on_a_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "birds", {"a": 4, "b": 4}, size=16)
    code = main(["train", "--dataset", "folder", "--root", str(root), "--quiet", "--epochs", "1",
                 "--image-size", "16", "--batch-size", "4", "--set", "model.widths=[4,8]",
                 "--set", "model.blocks=[1,1]"])
    assert code == 0
    assert '"top1"' in capsys.readouterr().out


def test_a_folder_runs_fingerprint_covers_the_folder_code(tmp_path):
    """A change to fglib.data.folder (the split, the index) makes the folder's runs stale."""
    from fglib.experiments.runner import run_modules

    root = make_folder(tmp_path / "birds", {"a": 2, "b": 2})
    assert "fglib.data.folder" in run_modules(book_profile(**folder_data(root)))
    assert "fglib.data.folder" not in run_modules(book_profile())


def test_folder_config_refuses_folders_a_method_cannot_train_on(tmp_path):
    small = folder_data(make_folder(tmp_path / "small", {"a": 5, "b": 3, "c": 5}))
    with pytest.raises(ValueError, match=r"cin needs 4 training images of a class in a "
                                         r"batch; 1 class\(es\) have fewer, e.g. \['b'\]"):
        folder_config(small, "cin", 0)
    assert folder_config(small, "mamc", 0).train.images_per_class == 2      # 2 will do
    assert folder_config(small, "mcloss", 0).train.batch_size == 10         # all 4 + 2 + 4
    many = folder_data(make_folder(tmp_path / "many", {f"c{i:03d}": 2 for i in range(129)},
                                   size=4))
    with pytest.raises(ValueError, match="128 channels; the folder has 129 classes"):
        folder_config(many, "mcloss", 0)


def test_the_command_line_reads_a_folder_from_files_too(tmp_path, capsys):
    """data.in_memory=false (set after the folder is named) reads the folder's CUB index
    through the DataLoader, as a recipe does."""
    root = make_folder(tmp_path / "birds", {"a": 4, "b": 4}, size=16)
    # batch 4, not 3: with 3 images of 16 pixels on two threads of an AVX-512 CPU, torch
    # 2.14.1 crashed (SIGSEGV) at the process's exit, after a correct run; not with
    # ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2 or one thread (2026-12-04)
    code = main(["train", "--dataset", "folder", "--root", str(root), "--quiet", "--epochs", "1",
                 "--image-size", "16", "--batch-size", "4", "--set", "data.in_memory=false",
                 "--set", "data.workers=0", "--set", "model.widths=[4,8]",
                 "--set", "model.blocks=[1,1]"])
    assert code == 0, capsys.readouterr().err
    assert '"top1"' in capsys.readouterr().out


def test_a_recipe_trains_its_baseline_or_its_method_only(tmp_path, capsys):
    root = make_folder(tmp_path / "birds", {"a": 3, "b": 3})
    code = main(["train", "--recipe", "cin", "--method", "apinet", "--dataset", "folder",
                 "--root", str(root), "--quiet"])
    assert code == 2 and "the cin recipe trains cin; --method baseline" in capsys.readouterr().err
