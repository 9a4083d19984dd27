"""Loader for datasets in CUB_200_2011 format: real CUB-200-2011, our synthetic birds, NABirds.

A CUB-format root holds:
    images.txt               <image_id> <relative path under images/>
    image_class_labels.txt   <image_id> <class_id>
    train_test_split.txt     <image_id> <1 train | 0 test>
    classes.txt              <class_id> <class name>
    bounding_boxes.txt       <image_id> <x> <y> <w> <h>
    parts/parts.txt          <part_id> <part name>                      (with_parts=True)
    parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>     (with_parts=True)

Class ids may be non-contiguous (NABirds): labels are 0..C-1 in sorted order of the class ids that
images use. Every file is checked against images.txt up front: inconsistent ids raise ValueError,
missing files FileNotFoundError, so a dataset is never silently partial.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

LOG = logging.getLogger("fglib.data")

CUB_HINT = ("To get CUB-200-2011, download CUB_200_2011.tgz from the Caltech site "
            "(https://www.vision.caltech.edu/datasets/cub_200_2011/) and extract it, or run "
            "`python -m fglib data prepare cub --root <dir>`; for the synthetic benchmark call "
            "fglib.data.synth.synthetic_benchmark() and pass the path it returns.")
NABIRDS_HINT = ("To get NABirds, download nabirds.tar.gz from the Cornell Lab of Ornithology "
                "(https://dl.allaboutbirds.org/nabirds), extract it and pass the nabirds/ folder "
                "as root.")
SPLITS = ("train", "test", "all")
CORRUPT_MODES = ("error", "skip")


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded (corrupt or truncated)."""


@dataclass
class Record:
    """One image's annotations (no pixels)."""

    image_id: int | str
    path: Path
    label: int  # 0-based contiguous
    is_train: bool
    box: tuple[float, float, float, float]  # x, y, w, h in pixels


# ---------------------------------------------------------------------------------------------
# reading and checking annotation files


def _parse_id(token: str) -> int | str:
    """Integer ids stay ints (CUB); anything else (NABirds UUIDs) stays a string."""
    return int(token) if token.isdigit() else token


class _Reader:
    """Reads `<id> <fields...>` tables under root with file-and-line error messages."""

    def __init__(self, root: Path, dataset: str, hint: str):
        self.root, self.dataset, self.hint = root, dataset, hint

    def missing(self, rel: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.dataset}: required file {rel} not found in {self.root}. "
                                 f"{self.hint}")

    def rows(self, rel: str, nfields: int, rest: bool = False) -> list[tuple[int, list[str]]]:
        """(line number, fields) per non-empty line; the last field takes the rest if `rest`."""
        path = self.root / rel
        if not path.is_file():
            raise self.missing(rel)
        out = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split(maxsplit=nfields - 1) if rest else line.split()
                if len(parts) != nfields:
                    raise ValueError(f"{rel} line {n}: expected {nfields} fields, got "
                                     f"{len(parts)}: {line.strip()!r}")
                out.append((n, [p.strip() for p in parts]))
        return out

    def table(self, rel: str, nfields: int, rest: bool = False) -> dict[str, list[str]]:
        """Map from the first field (an id) to the remaining fields; duplicate ids are an error."""
        table: dict[str, list[str]] = {}
        for n, (key, *vals) in self.rows(rel, nfields, rest):
            if key in table:
                raise ValueError(f"duplicate id {key} in {rel} (line {n}).")
            table[key] = vals
        return table


def _same_ids(images: dict[str, Any], other: dict[str, Any], rel: str) -> None:
    """Every image id appears in `other` and `other` has no unknown ids."""
    for key in images:
        if key not in other:
            raise ValueError(f"image id {key} from images.txt is missing in {rel}.")
    for key in other:
        if key not in images:
            raise ValueError(f"image id {key} in {rel} is not listed in images.txt.")


def _floats(vals: list[str], rel: str, key: str) -> list[float]:
    try:
        return [float(v) for v in vals]
    except ValueError:
        raise ValueError(f"image id {key} in {rel}: expected numbers, got {vals}.") from None


# ---------------------------------------------------------------------------------------------
# the dataset


class CUBDataset(Dataset):
    """CUB_200_2011-format dataset. Items are dicts:

        image     PIL RGB image, or transform(image)
        label     int, 0-based contiguous (sorted class ids)
        box       float32 tensor (4,): x, y, w, h in original pixels
        parts     float32 tensor (P, 3): x, y, visible (only when with_parts=True)
        image_id  int (or str for NABirds' UUID ids)

    on_corrupt="error" raises CorruptImageError when an undecodable image is loaded;
    on_corrupt="skip" decodes every image of the split at construction (slow for big datasets),
    drops the bad ones and logs a warning with the count on logger "fglib.data".
    Missing image files raise FileNotFoundError at construction (or are skipped in skip mode).
    """

    dataset_name = "CUB-200-2011"
    hint = CUB_HINT

    def __init__(self, root: str | os.PathLike[str], split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None, with_parts: bool = True,
                 on_corrupt: str = "error"):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; use one of {SPLITS}.")
        if on_corrupt not in CORRUPT_MODES:
            raise ValueError(f"on_corrupt={on_corrupt!r}; use one of {CORRUPT_MODES}.")
        self.root = Path(root)
        self.split, self.transform = split, transform
        self.with_parts, self.on_corrupt = with_parts, on_corrupt
        self.part_names: list[str] = []
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.dataset_name}: dataset root {self.root} does not "
                                    f"exist. {self.hint}")
        reader = _Reader(self.root, self.dataset_name, self.hint)
        records, parts = self._read_annotations(reader)
        keep = [i for i, r in enumerate(records) if split == "all" or r.is_train == (split == "train")]
        keep = self._check_images(records, keep)
        self.records = [records[i] for i in keep]
        self._parts = parts[keep] if parts is not None else None

    # -- annotations -------------------------------------------------------------------------

    def _read_annotations(self, reader: _Reader) -> tuple[list[Record], np.ndarray | None]:
        """Parse and cross-check all annotation files; returns all records (every split)."""
        images = {k: v[0] for k, v in reader.table("images.txt", 2, rest=True).items()}
        labels = {k: v[0] for k, v in reader.table("image_class_labels.txt", 2).items()}
        split = {k: v[0] for k, v in reader.table("train_test_split.txt", 2).items()}
        boxes = reader.table("bounding_boxes.txt", 5)
        classes = {k: v[0] for k, v in reader.table("classes.txt", 2, rest=True).items()}
        for rel, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split),
                           ("bounding_boxes.txt", boxes)):
            _same_ids(images, table, rel)
        self._set_classes(images, labels, classes)
        records = []
        for key, rel_path in images.items():
            if split[key] not in ("0", "1"):
                raise ValueError(f"image id {key} in train_test_split.txt: split must be 1 (train) "
                                 f"or 0 (test), got {split[key]!r}.")
            x, y, w, h = _floats(boxes[key], "bounding_boxes.txt", key)
            records.append(Record(_parse_id(key), self.root / "images" / rel_path,
                                  self._label_of[int(labels[key])], split[key] == "1", (x, y, w, h)))
        parts = self._read_parts(reader, images) if self.with_parts else None
        return records, parts

    def _set_classes(self, images: dict[str, str], labels: dict[str, str],
                     classes: dict[str, str]) -> None:
        """Contiguous labels: sorted class ids used by images.txt's images (all splits)."""
        known = {}
        for key, name in classes.items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"class id {key!r} in classes.txt is not an integer.")
            known[int(key)] = name
        for key in images:
            cid = labels[key]
            if not cid.lstrip("-").isdigit() or int(cid) not in known:
                raise ValueError(f"class id {cid} of image id {key} in image_class_labels.txt is "
                                 "not defined in classes.txt.")
        self.class_ids = sorted({int(labels[k]) for k in images})
        self._label_of = {cid: i for i, cid in enumerate(self.class_ids)}
        self.class_names = [known[cid] for cid in self.class_ids]

    def _read_parts(self, reader: _Reader, images: dict[str, str]) -> np.ndarray:
        """(N, P, 3) array of x, y, visible, in images.txt order; parts sorted by part id."""
        names = reader.table("parts/parts.txt", 2, rest=True)
        part_ids = sorted(names, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
        self.part_names = [names[k][0] for k in part_ids]
        col = {k: j for j, k in enumerate(part_ids)}
        row = {k: i for i, k in enumerate(images)}
        rel = "parts/part_locs.txt"
        locs = np.full((len(images), len(part_ids), 3), np.nan, np.float32)
        for n, (key, pid, x, y, vis) in reader.rows(rel, 5):
            if key not in row:
                raise ValueError(f"image id {key} in {rel} (line {n}) is not listed in images.txt.")
            if pid not in col:
                raise ValueError(f"part id {pid} of image id {key} in {rel} (line {n}) is not "
                                 "defined in parts/parts.txt.")
            if not np.isnan(locs[row[key], col[pid], 0]):
                raise ValueError(f"duplicate entry for image id {key}, part id {pid} in {rel} "
                                 f"(line {n}).")
            locs[row[key], col[pid]] = _floats([x, y, vis], rel, key)
        missing = np.argwhere(np.isnan(locs[..., 0]))
        if len(missing):
            i, j = missing[0]
            raise ValueError(f"image id {list(images)[i]} from images.txt has no entry for part "
                             f"id {part_ids[j]} in {rel}.")
        return locs

    # -- image files -------------------------------------------------------------------------

    def _check_images(self, records: list[Record], keep: list[int]) -> list[int]:
        """Missing files: error (or skip). In skip mode, also decode each image and drop bad ones."""
        good, bad = [], []
        for i in keep:
            r = records[i]
            if not r.path.is_file():
                if self.on_corrupt == "error":
                    raise FileNotFoundError(f"{self.dataset_name}: image file for image id "
                                            f"{r.image_id} not found: {r.path}. {self.hint}")
                bad.append(r)
            elif self.on_corrupt == "skip" and not _decodes(r.path):
                bad.append(r)
            else:
                good.append(i)
        if bad:
            LOG.warning("%s: skipped %d of %d %s images that are missing, corrupt or truncated "
                        "(first: image id %s, %s)", self.dataset_name, len(bad), len(keep),
                        self.split, bad[0].image_id, bad[0].path)
        if keep and not good:
            raise ValueError(f"{self.dataset_name}: every {self.split} image under {self.root} is "
                             f"missing or corrupt. {self.hint}")
        return good

    def load_image(self, i: int) -> Image.Image:
        """Decoded RGB image of item i (raises CorruptImageError naming file and image id)."""
        r = self.records[i]
        try:
            with Image.open(r.path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise CorruptImageError(
                f"{self.dataset_name}: cannot decode image id {r.image_id} ({r.path}): {e}. The "
                "file is corrupt or truncated; re-extract the dataset or pass on_corrupt='skip'."
            ) from e

    # -- torch Dataset API -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        image = self.load_image(i)
        item = {"image": self.transform(image) if self.transform else image,
                "label": r.label,
                "box": torch.tensor(r.box, dtype=torch.float32),
                "image_id": r.image_id}
        if self._parts is not None:
            item["parts"] = torch.from_numpy(self._parts[i].copy())
        return item

    @property
    def num_classes(self) -> int:
        """Number of classes over all splits (labels are 0..num_classes-1)."""
        return len(self.class_ids)

    @property
    def labels(self) -> list[int]:
        """0-based label of every item, without loading images."""
        return [r.label for r in self.records]

    @property
    def image_ids(self) -> list[int | str]:
        return [r.image_id for r in self.records]

    @property
    def parts(self) -> np.ndarray | None:
        """(N, P, 3) float32 array of part x, y, visible for every item (None without parts)."""
        return self._parts

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}, num_classes={self.num_classes})")


def _decodes(path: Path) -> bool:
    """Whether PIL can fully decode the file."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, SyntaxError, ValueError, EOFError):
        return False


class NABirdsDataset(CUBDataset):
    """NABirds: CUB-format files with UUID image ids, non-contiguous leaf class ids (classes.txt
    also lists the hierarchy's inner nodes) and 0-based part ids. Labels follow sorted class ids."""

    dataset_name = "NABirds"
    hint = NABIRDS_HINT
