"""Tests for the synthetic fine-grained birds benchmark (fglib.data.synth)."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fglib.data import synth
from fglib.data.synth import PART_NAMES, SynthConfig, generate, render, synthetic_benchmark

# 2 families (one hard, one easy) x 2 classes x 6 images at 40 px: generates in well under a second
TINY = SynthConfig(seed=3, num_classes=4, images_per_class=6, image_size=40, families=2,
                   hard_fraction=0.5)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(TINY, tmp_path_factory.mktemp("synth") / "tiny")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


# -- determinism -------------------------------------------------------------------------------


def test_regeneration_is_byte_identical(tiny_root: Path, tmp_path: Path) -> None:
    again = generate(TINY, tmp_path / "again")
    a, b = _files(tiny_root), _files(again)
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".png")]) == TINY.num_classes * TINY.images_per_class
    assert [k for k in a if a[k] != b[k]] == []


def test_different_seed_gives_different_images(tiny_root: Path, tmp_path: Path) -> None:
    other = generate(replace(TINY, seed=4), tmp_path / "other")
    a, b = _files(tiny_root), _files(other)
    pngs = [k for k in a if k.endswith(".png")]
    assert pngs and all(k in b for k in pngs)  # same layout (class names depend on family only)
    assert sum(a[k] != b[k] for k in pngs) == len(pngs)


def test_render_matches_written_png(tiny_root: Path) -> None:
    image, parts, bbox = render(TINY, 2, 3)
    rel = _table(tiny_root / "images.txt")[TINY.images_per_class + 3][1]
    assert np.array_equal(np.asarray(Image.open(tiny_root / "images" / rel)), image)
    assert image.shape == (TINY.image_size, TINY.image_size, 3) and image.dtype == np.uint8
    assert list(parts) == list(PART_NAMES) and len(bbox) == 4


def test_render_ignores_global_rng_state() -> None:
    np.random.seed(1)
    a = render(TINY, 1, 0)[0]
    np.random.seed(2)
    assert np.array_equal(a, render(TINY, 1, 0)[0])


# -- file format ---------------------------------------------------------------------------------


def test_cub_files_present_and_consistent(tiny_root: Path) -> None:
    n = TINY.num_classes * TINY.images_per_class
    for rel in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt"):
        rows = _table(tiny_root / rel)
        assert [int(r[0]) for r in rows] == list(range(1, n + 1)), rel
    classes = _table(tiny_root / "classes.txt")
    assert [int(r[0]) for r in classes] == list(range(1, TINY.num_classes + 1))
    for (iid, rel), (_, cid) in zip(_table(tiny_root / "images.txt"),
                                    _table(tiny_root / "image_class_labels.txt")):
        assert rel.split("/")[0] == classes[int(cid) - 1][1]  # folder is "<NNN.ClassName>"
        assert (tiny_root / "images" / rel).is_file()
    assert [r[1] for r in _table(tiny_root / "parts" / "parts.txt")] == \
        [p.split()[0] for p in PART_NAMES]  # "eye ring" has a space, like CUB's part names
    assert (tiny_root / "parts" / "parts.txt").read_text().splitlines()[-1] == "7 eye ring"
    locs = _table(tiny_root / "parts" / "part_locs.txt")
    assert len(locs) == n * len(PART_NAMES)
    assert all(r[4] in ("0", "1") for r in locs)
    assert all(float(r[2]) == float(r[3]) == 0 for r in locs if r[4] == "0")  # CUB convention
    meta = json.loads((tiny_root / "synth" / "config.json").read_text())
    assert meta["config"] == TINY.to_dict() and meta["format_version"] == synth.FORMAT_VERSION


def test_train_test_split_per_class(tiny_root: Path) -> None:
    split = {r[0]: r[1] for r in _table(tiny_root / "train_test_split.txt")}
    per_class: dict[str, list[str]] = {}
    for iid, cid in _table(tiny_root / "image_class_labels.txt"):
        per_class.setdefault(cid, []).append(split[iid])
    for flags in per_class.values():
        assert flags.count("1") == round(TINY.train_fraction * TINY.images_per_class)
        assert flags.count("0") >= 1


def _class_attributes(root: Path) -> tuple[np.ndarray, list[str], dict[int, int]]:
    """(classes x attributes) 0/100 table, attribute group names, attribute id -> part id."""
    table = np.array(_table(root / "attributes" / "class_attribute_labels_continuous.txt"), float)
    groups = [r[1].split("::")[0] for r in _table(root / "attributes" / "attributes.txt")]
    parts = {int(a): int(p) for a, p in _table(root / "synth" / "attribute_parts.txt")}
    return table, groups, parts


def test_discriminative_parts_match_attributes(tiny_root: Path) -> None:
    table, groups, attr_part = _class_attributes(tiny_root)
    assert set(np.unique(table)) == {0.0, 100.0}
    for cid, near, plist in _table(tiny_root / "synth" / "discriminative_parts.txt"):
        a, b = table[int(cid) - 1], table[int(near) - 1]
        differing = {attr_part[j + 1] for j in np.flatnonzero(a != b)}
        assert differing == {int(p) for p in plist.split(",")}, cid
        # the nearest class really has the fewest differing attribute groups
        dist = lambda x, y: len({g for g, u, v in zip(groups, x, y) if u != v})  # noqa: E731
        others = [dist(a, table[k]) for k in range(len(table)) if k != int(cid) - 1]
        assert dist(a, b) == min(others)


def test_hard_and_easy_families_from_files(tiny_root: Path) -> None:
    fam = {r[0]: r[3] for r in _table(tiny_root / "synth" / "families.txt")}
    assert set(fam.values()) == {"hard", "easy"}
    for cid, _, plist in _table(tiny_root / "synth" / "discriminative_parts.txt"):
        n_parts = len(plist.split(","))
        assert n_parts == 1 if fam[cid] == "hard" else n_parts >= 2


@pytest.mark.parametrize("seed", range(5))
def test_hard_and_easy_families_default_taxonomy(seed: int) -> None:
    cfg = replace(SynthConfig(), seed=seed)
    classes = synth.make_classes(cfg)
    assert len(classes) == cfg.num_classes
    assert len({c.attrs for c in classes}) == len(classes)  # classes are distinct
    assert len({c.name for c in classes}) == len(classes)
    for c in classes:
        near, parts = synth.nearest_class(classes, c)
        assert len(parts) == 1 if c.hard else len(parts) >= 2
        fam = [o for o in classes if o.family_id == c.family_id]
        assert len({o.value("has_body_color") for o in fam}) == 1  # base colour shared in family


def test_boxes_and_visible_parts_inside_image(tiny_root: Path) -> None:
    s = TINY.image_size
    boxes = {r[0]: [float(v) for v in r[1:]] for r in _table(tiny_root / "bounding_boxes.txt")}
    for x, y, w, h in boxes.values():
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= s and y + h <= s
    for iid, _, px, py, vis in _table(tiny_root / "parts" / "part_locs.txt"):
        if vis == "1":
            x, y, w, h = boxes[iid]
            assert x - 0.5 <= float(px) <= x + w + 0.5 and y - 0.5 <= float(py) <= y + h + 0.5


def test_nuisance_variation_present() -> None:
    # many renders of one class: some occluded parts, flips change where the beak is
    cfg = replace(TINY, images_per_class=40)
    parts = [render(cfg, 1, i)[1] for i in range(40)]
    assert any(p["body"][2] == 0 or p["head"][2] == 0 or p["wing"][2] == 0 for p in parts)
    dx = [p["beak"][0] - p["body"][0] for p in parts if p["beak"][2] and p["body"][2]]
    assert min(dx) < 0 < max(dx)


def test_color_jitter_cannot_merge_class_colors() -> None:
    assert 2 * 255 * SynthConfig().color_jitter < synth.CLASS_COLOR_GAP
    with pytest.raises(ValueError, match="color_jitter"):
        SynthConfig(color_jitter=synth.MAX_COLOR_JITTER)


@pytest.mark.parametrize("kwargs, needle", [
    ({"image_size": 16}, "image_size to at least 32"),
    ({"num_classes": 1}, "num_classes to at least 2"),
    ({"images_per_class": 1}, "images_per_class"),
    ({"train_fraction": 1.0}, "strictly between 0 and 1"),
    ({"families": 4, "num_classes": 6}, "lower families or raise num_classes"),
    ({"families": 99, "num_classes": 400}, "families"),
])
def test_config_validation(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SynthConfig(**kwargs)


# -- writing, caching ------------------------------------------------------------------------------


def test_generate_refuses_existing_root(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        generate(TINY, tmp_path / "x")


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = synth._render, []

    def flaky(*args, **kwargs):  # fail halfway through the images
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "_render", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(TINY, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_cache_reuse_and_new_dir_for_new_config(tmp_path: Path) -> None:
    first = synthetic_benchmark(TINY, cache_dir=tmp_path)
    stamp = (first / "synth" / "config.json").stat().st_mtime_ns
    assert synthetic_benchmark(TINY, cache_dir=tmp_path) == first
    assert (first / "synth" / "config.json").stat().st_mtime_ns == stamp  # not regenerated
    other = synthetic_benchmark(replace(TINY, seed=9), cache_dir=tmp_path)
    assert other != first and other.parent == first.parent
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_cache_dir_from_env_and_stale_cache_regenerated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FGLIB_DATA_CACHE", str(tmp_path))
    root = synthetic_benchmark(TINY)
    assert root.parent == tmp_path
    (root / "synth" / "config.json").write_text("{}")  # e.g. written by another version
    assert synthetic_benchmark(TINY) == root
    assert json.loads((root / "synth" / "config.json").read_text())["config"] == TINY.to_dict()


def test_default_cache_dir_is_repo_data_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from fglib.core import paths

    monkeypatch.delenv("FGLIB_DATA_CACHE", raising=False)
    repo = Path(synth.__file__).resolve().parents[2]
    assert paths.cache_dir() == repo / "data" / "cache"
    monkeypatch.setenv("FGLIB_DATA_CACHE", "/elsewhere")
    assert paths.cache_dir() == Path("/elsewhere")
    assert os.path.isdir(repo / "fglib")
