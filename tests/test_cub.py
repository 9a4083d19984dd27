"""Tests for the CUB-format loader (fglib.data.cub) on synthetic and NABirds-like fixtures."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fglib.data.cub import CorruptImageError, CUBDataset, NABirdsDataset
from fglib.data.synth import PART_NAMES, SynthConfig, generate

TINY = SynthConfig(seed=1, num_classes=4, images_per_class=6, image_size=32, families=2)
N = TINY.num_classes * TINY.images_per_class
REQUIRED = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
            "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(TINY, tmp_path_factory.mktemp("cub") / "synth")


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _edit(path: Path, fn) -> None:
    """Rewrite a text file through fn(list of lines) -> list of lines."""
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in fn(lines)))


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


# -- round trip ----------------------------------------------------------------------------------


def test_round_trip_counts_labels_splits(pristine: Path) -> None:
    train, test, full = (CUBDataset(pristine, s) for s in ("train", "test", "all"))
    assert len(train) + len(test) == len(full) == N
    assert len(train) == TINY.num_classes * round(TINY.train_fraction * TINY.images_per_class)
    assert train.num_classes == test.num_classes == TINY.num_classes
    assert train.class_names[0].startswith("001.") and len(train.class_names) == TINY.num_classes
    assert train.part_names == list(PART_NAMES)
    assert sorted(set(train.labels)) == list(range(TINY.num_classes))
    assert full.labels == [i // TINY.images_per_class for i in range(N)]
    assert set(train.image_ids).isdisjoint(test.image_ids)
    item = full[7]
    assert item["image_id"] == 8 and item["label"] == full.labels[7] == 1
    assert isinstance(item["image"], Image.Image) and item["image"].size == (32, 32)
    assert item["parts"].shape == (len(PART_NAMES), 3) and item["parts"].dtype == torch.float32


def test_boxes_and_parts_inside_image(pristine: Path) -> None:
    ds = CUBDataset(pristine, "all")
    for i in range(len(ds)):
        item = ds[i]
        x, y, w, h = item["box"].tolist()
        assert 0 <= x and 0 <= y and x + w <= 32 and y + h <= 32 and w > 0 and h > 0
        vis = item["parts"][item["parts"][:, 2] == 1]
        assert len(vis) > 0
        assert ((vis[:, 0] >= x - 0.5) & (vis[:, 0] <= x + w + 0.5)).all()
        assert ((vis[:, 1] >= y - 0.5) & (vis[:, 1] <= y + h + 0.5)).all()


def test_transform_and_dataloader(pristine: Path) -> None:
    ds = CUBDataset(pristine, "train", transform=_to_tensor)
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 3, 32, 32)
    assert batch["label"].tolist() == ds.labels[:5]
    assert batch["box"].shape == (5, 4) and batch["parts"].shape == (5, len(PART_NAMES), 3)


def test_without_parts(root: Path) -> None:
    shutil.rmtree(root / "parts")  # not needed when with_parts=False
    ds = CUBDataset(root, "test", with_parts=False)
    assert "parts" not in ds[0] and ds.part_names == [] and ds.parts is None


def test_bad_arguments(pristine: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        CUBDataset(pristine, "val")
    with pytest.raises(ValueError, match="on_corrupt"):
        CUBDataset(pristine, on_corrupt="ignore")


# -- missing files -----------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        CUBDataset(tmp_path / "nope")
    msg = str(e.value)
    assert "nope" in msg and "CUB_200_2011.tgz" in msg and "synthetic_benchmark()" in msg
    assert "python -m fglib data prepare cub" in msg


@pytest.mark.parametrize("rel", REQUIRED)
def test_missing_annotation_file(root: Path, rel: str) -> None:
    (root / rel).unlink()
    with pytest.raises(FileNotFoundError) as e:
        CUBDataset(root)
    assert rel in str(e.value) and "CUB_200_2011.tgz" in str(e.value)


def test_missing_image_file(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    rel = (root / "images.txt").read_text().splitlines()[0].split()[1]
    (root / "images" / rel).unlink()
    with pytest.raises(FileNotFoundError, match=r"image id 1 not found"):
        CUBDataset(root, "train")
    with caplog.at_level(logging.WARNING, logger="fglib.data"):
        ds = CUBDataset(root, "train", on_corrupt="skip")
    assert len(ds) == len(CUBDataset(root, "test")) - 1 and 1 not in ds.image_ids
    assert "skipped 1" in caplog.text


# -- corrupt images --------------------------------------------------------------------------------


def _image_path(root: Path, image_id: int) -> Path:
    rel = (root / "images.txt").read_text().splitlines()[image_id - 1].split()[1]
    return root / "images" / rel


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_image_errors_with_file_and_id(root: Path, damage: str) -> None:
    path = _image_path(root, 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a png" * 10)
    ds = CUBDataset(root, "train")
    idx = ds.image_ids.index(2)
    ds[idx + 1]  # neighbours still load
    with pytest.raises(CorruptImageError) as e:
        ds[idx]
    assert "image id 2" in str(e.value) and path.name in str(e.value)
    assert "on_corrupt='skip'" in str(e.value)


def test_corrupt_images_skipped_with_warning(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    for iid in (1, 3):
        p = _image_path(root, iid)
        p.write_bytes(p.read_bytes()[:60])
    with caplog.at_level(logging.WARNING, logger="fglib.data"):
        ds = CUBDataset(root, "train", on_corrupt="skip")
    assert len(ds) == len(CUBDataset(root, "train")) - 2
    assert 1 not in ds.image_ids and 3 not in ds.image_ids
    assert [ds[i]["label"] for i in range(len(ds))] == ds.labels  # everything left loads
    rec = [r for r in caplog.records if r.name == "fglib.data"]
    assert len(rec) == 1 and "skipped 2" in rec[0].getMessage()


# -- inconsistent ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["image_class_labels.txt", "train_test_split.txt",
                                 "bounding_boxes.txt"])
def test_image_id_missing_from_file(root: Path, rel: str) -> None:
    _edit(root / rel, lambda lines: [ln for ln in lines if ln.split()[0] != "5"])
    with pytest.raises(ValueError, match=rf"image id 5 from images.txt is missing in {rel}"):
        CUBDataset(root)


def test_unknown_image_id_in_file(root: Path) -> None:
    _edit(root / "train_test_split.txt", lambda lines: lines + [f"{N + 1} 1"])
    with pytest.raises(ValueError, match=rf"image id {N + 1} in train_test_split.txt is not listed"):
        CUBDataset(root)


def test_label_not_in_classes(root: Path) -> None:
    _edit(root / "image_class_labels.txt",
          lambda lines: [("4 77" if ln.split()[0] == "4" else ln) for ln in lines])
    with pytest.raises(ValueError, match=r"class id 77 of image id 4 in image_class_labels.txt"):
        CUBDataset(root)


def test_duplicate_image_id(root: Path) -> None:
    _edit(root / "images.txt", lambda lines: lines[:3] + [lines[2]] + lines[3:])
    with pytest.raises(ValueError, match=r"duplicate id 3 in images.txt \(line 4\)"):
        CUBDataset(root)


def test_bad_split_value(root: Path) -> None:
    _edit(root / "train_test_split.txt",
          lambda lines: [("6 2" if ln.split()[0] == "6" else ln) for ln in lines])
    with pytest.raises(ValueError, match=r"image id 6 in train_test_split.txt"):
        CUBDataset(root)


def test_malformed_line(root: Path) -> None:
    _edit(root / "bounding_boxes.txt", lambda lines: lines[:2] + ["3 1.0 2.0"] + lines[3:])
    with pytest.raises(ValueError, match=r"bounding_boxes.txt line 3: expected 5 fields"):
        CUBDataset(root)


def test_part_locs_missing_and_unknown_part(root: Path) -> None:
    locs = root / "parts" / "part_locs.txt"
    original = locs.read_text()
    _edit(locs, lambda lines: [ln for ln in lines if not ln.startswith("2 3 ")])
    with pytest.raises(ValueError, match=r"image id 2 from images.txt has no entry for part id 3"):
        CUBDataset(root)
    locs.write_text(original + "2 99 1.0 1.0 1\n")
    with pytest.raises(ValueError, match=r"part id 99 of image id 2"):
        CUBDataset(root)
    CUBDataset(root, with_parts=False)  # parts are not read at all then


# -- NABirds-like layout -----------------------------------------------------------------------------

NAB_CLASSES = {0: "Birds", 1: "Perching Birds", 295: "Red-necked Grebe (Adult)",
               296: "Horned Grebe", 980: "Rock Pigeon"}  # inner nodes 0, 1 have no images
NAB_PARTS = ["bill", "crown", "nape", "left eye"]  # NABirds numbers parts from 0


def _write_nabirds(root: Path) -> list[tuple[str, int, int]]:
    """Tiny NABirds-style tree: UUID ids, zero-padded class folders, sparse class ids."""
    rng = np.random.default_rng(0)
    rows = []
    for cid in (980, 295, 296):  # deliberately unsorted
        for k in range(3):
            uid = f"{cid:08x}-21dc-4d0c-bfe1-{k:012x}"
            rel = f"{cid:04d}/{uid.replace('-', '')}.jpg"
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
                root / "images" / rel, format="JPEG")
            rows.append((uid, cid, int(k != 0)))
    write = lambda rel, lines: (root / rel).write_text("".join(f"{ln}\n" for ln in lines))  # noqa: E731
    (root / "parts").mkdir()
    write("images.txt", [f"{u} {c:04d}/{u.replace('-', '')}.jpg" for u, c, _ in rows])
    write("image_class_labels.txt", [f"{u} {c}" for u, c, _ in rows])
    write("train_test_split.txt", [f"{u} {s}" for u, _, s in rows])
    write("bounding_boxes.txt", [f"{u} 2 3 20 15" for u, _, _ in rows])
    write("classes.txt", [f"{c} {n}" for c, n in NAB_CLASSES.items()])
    write("parts/parts.txt", [f"{i} {n}" for i, n in enumerate(NAB_PARTS)])
    write("parts/part_locs.txt", [f"{u} {i} {5 + i} 6 {int(i % 2 == 0)}"
                                  for u, _, _ in rows for i in range(len(NAB_PARTS))])
    return rows


def test_nabirds_noncontiguous_class_ids(tmp_path: Path) -> None:
    rows = _write_nabirds(tmp_path)
    ds = NABirdsDataset(tmp_path, "all")
    assert ds.num_classes == 3 and ds.class_ids == [295, 296, 980]
    assert ds.class_names == ["Red-necked Grebe (Adult)", "Horned Grebe", "Rock Pigeon"]
    assert ds.labels == [{295: 0, 296: 1, 980: 2}[c] for _, c, _ in rows]
    assert ds.part_names == NAB_PARTS
    item = ds[0]
    assert item["image_id"] == rows[0][0] and item["image"].size == (40, 30)
    assert item["parts"][:, 0].tolist() == [5, 6, 7, 8] and item["parts"][:, 2].tolist() == [1, 0, 1, 0]
    train = NABirdsDataset(tmp_path, "train")
    assert len(train) == 6 and train.num_classes == 3  # labels agree across splits


def test_nabirds_missing_file_hint(tmp_path: Path) -> None:
    _write_nabirds(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes.txt.*Cornell Lab"):
        NABirdsDataset(tmp_path)
