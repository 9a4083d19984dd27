"""The real fine-grained benchmarks behind one interface.

Every dataset yields the same items as `fglib.data.cub.CUBDataset`:

    image     PIL RGB image, or transform(image)
    label     int, 0-based contiguous
    box       float32 tensor (4,): x, y, w, h in pixels, or None where the dataset has no boxes
    parts     None (only CUB and NABirds annotate parts)
    image_id  str

All datasets live side by side under one data root, each in the folder that `prepare` creates
(and, where torchvision has a class for it, the folder that torchvision expects):

    <root>/CUB_200_2011/          CUB-200-2011                fglib.data.cub.CUBDataset
    <root>/nabirds/               NABirds                     fglib.data.cub.NABirdsDataset
    <root>/stanford_cars/         devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/,
                                  cars_test/, cars_test_annos_withlabels.mat
    <root>/fgvc-aircraft-2013b/   data/images/, data/variants.txt, data/images_variant_*.txt
    <root>/flowers-102/           jpg/, imagelabels.mat, setid.mat
    <root>/stanford_dogs/         Images/<wnid-breed>/*.jpg, lists/{train,test}_list.mat,
                                  Annotation/ (optional, gives boxes)

Splits: "train" is the official training pool (train+val for Aircraft and Flowers, as in the
FGVC literature), "test", and "all". Aircraft and Flowers also offer "train_noval" and "val".

Annotations in MATLAB .mat files are read by a small built-in MAT v5 reader (`loadmat`), so
scipy is not needed; torchvision's Flowers102 and StanfordCars need scipy, which fglib does not
depend on, so those two are read here from the same files (the folders stay torchvision-compatible).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar
from xml.etree import ElementTree

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fglib.data.registry import DATASETS, DatasetInfo

SPLITS = ("train", "test", "all")
VAL_SPLITS = ("train_noval", "val")  # only for datasets with an official validation split
MARKER = ".fglib-prepared"  # written by fglib.data.download.prepare when a folder is complete

Box = tuple[float, float, float, float]


def prepare_command(name: str, root: str | Path) -> str:
    """The shell command that downloads and unpacks dataset `name` under `root`."""
    return f"python -m fglib data prepare {name} --root {root}"


def _missing(name: str, root: Path, what: Path, detail: str = "") -> FileNotFoundError:
    """FileNotFoundError naming the missing path and how to get the data."""
    return FileNotFoundError(f"{name}: {what} not found{detail}. Get the data with: "
                             f"{prepare_command(name, root)}")


# ---------------------------------------------------------------------------------------------
# a minimal MATLAB v5 .mat reader (numeric, char, cell and struct arrays; no sparse/objects)

_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
              12: "i8", 13: "u8", 16: "u1", 17: "u2", 18: "u4"}
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = 14, 15, 16
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4
_MX_NUMERIC = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
               14: "i8", 15: "u8"}


def loadmat(path: str | Path) -> dict[str, Any]:
    """Variables of a MATLAB v5 .mat file (what MATLAB's `save` writes by default up to v7).

    Numeric arrays become numpy arrays of the stored shape, char arrays `str` (a list of row
    strings for multi-row chars), cell arrays flat lists and struct arrays flat lists of dicts
    (both in MATLAB's column-major element order). Raises ValueError for v7.3 (HDF5) files and
    for truncated or unsupported content.
    """
    data = Path(path).read_bytes()
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise ValueError(f"{path}: not a MATLAB v5 .mat file (v7.3/HDF5 files need h5py).")
    order = "<" if data[126:128] == b"IM" else ">"
    out: dict[str, Any] = {}
    pos = 128
    while pos < len(data):
        mtype, payload, pos = _element(data, pos, order, path)
        if mtype == _MI_COMPRESSED:  # a zlib stream holding one whole element
            try:
                mtype, payload, _ = _element(zlib.decompress(payload), 0, order, path)
            except zlib.error as e:
                raise ValueError(f"{path}: corrupt compressed variable ({e}).") from None
        if mtype == _MI_MATRIX:
            name, value = _matrix(payload, order, path)
            out[name] = value
    return out


def _element(buf: bytes, pos: int, order: str, path: Any) -> tuple[int, bytes, int]:
    """(type, payload, next position) of the data element at `pos`."""
    if pos + 8 > len(buf):
        raise ValueError(f"{path}: truncated .mat file.")
    mtype, nbytes = struct.unpack_from(order + "II", buf, pos)
    if mtype >> 16:  # "small element": 2-byte size, 2-byte type, data packed in 4 bytes
        return mtype & 0xFFFF, buf[pos + 4:pos + 4 + (mtype >> 16)], pos + 8
    start, end = pos + 8, pos + 8 + nbytes
    if end > len(buf):
        raise ValueError(f"{path}: truncated .mat file.")
    # elements are 8-byte aligned, except compressed ones which are stored exactly
    return mtype, buf[start:end], end if mtype == _MI_COMPRESSED else start + (nbytes + 7) // 8 * 8


def _matrix(buf: bytes, order: str, path: Any) -> tuple[str, Any]:
    """(name, value) of one miMATRIX payload."""
    if not buf:  # empty cell element
        return "", np.zeros((0, 0))
    _, flags, pos = _element(buf, 0, order, path)
    cls = struct.unpack_from(order + "I", flags)[0] & 0xFF
    _, dims_raw, pos = _element(buf, pos, order, path)
    dims = tuple(int(d) for d in np.frombuffer(dims_raw, order + "i4"))
    _, name_raw, pos = _element(buf, pos, order, path)
    name, n = name_raw.decode("latin-1"), int(np.prod(dims))
    if cls == _MX_CHAR:
        return name, _chars(*_element(buf, pos, order, path)[:2], dims, order)
    if cls == _MX_CELL:
        cells = []
        for _ in range(n):
            _, sub, pos = _element(buf, pos, order, path)
            cells.append(_matrix(sub, order, path)[1])
        return name, cells
    if cls == _MX_STRUCT:
        _, width_raw, pos = _element(buf, pos, order, path)
        width = int(np.frombuffer(width_raw, order + "i4")[0])
        _, names_raw, pos = _element(buf, pos, order, path)
        fields = [names_raw[i:i + width].split(b"\0")[0].decode("latin-1")
                  for i in range(0, len(names_raw), width)]
        records = []
        for _ in range(n):
            record = {}
            for field in fields:
                _, sub, pos = _element(buf, pos, order, path)
                record[field] = _matrix(sub, order, path)[1]
            records.append(record)
        return name, records
    if cls in _MX_NUMERIC:
        mtype, raw, _ = _element(buf, pos, order, path)
        values = np.frombuffer(raw, order + _MI_DTYPES[mtype]).astype(_MX_NUMERIC[cls])
        return name, values.reshape(dims, order="F")
    raise ValueError(f"{path}: MATLAB class {cls} of variable {name!r} is not supported.")


def _chars(mtype: int, raw: bytes, dims: tuple[int, ...], order: str) -> str | list[str]:
    """A MATLAB char array as one string (one row) or a list of row strings."""
    if mtype == _MI_UTF8:
        text = raw.decode("utf-8")
        codes = [ord(c) for c in text]
    else:
        codes = np.frombuffer(raw, order + _MI_DTYPES[mtype]).tolist()
        text = "".join(map(chr, codes))
    rows = dims[0] if dims else 0
    if rows <= 1 or len(codes) != int(np.prod(dims)):
        return text
    grid = np.array(codes).reshape(dims[:2], order="F")
    return ["".join(map(chr, row)) for row in grid]


def _scalar(value: Any) -> float:
    """A 1x1 MATLAB value as float."""
    return float(np.asarray(value).ravel()[0])


def _string(value: Any) -> str:
    """A MATLAB char (possibly wrapped in a 1x1 cell) as str."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise ValueError(f"expected a MATLAB string, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------
# the common dataset


@dataclass(frozen=True)
class Sample:
    """One image's annotations (no pixels)."""

    path: Path
    label: int  # 0-based contiguous
    image_id: str
    box: Box | None = None  # x, y, w, h


class FGVCDataset(Dataset):
    """Base class: subclasses read their official files into `samples` and `class_names`.

    root is the data root holding `<root>/<folder>/` (the dataset folder itself is accepted too).
    Every listed image file must exist: a missing one raises FileNotFoundError at construction,
    so a partially extracted dataset is never used silently.
    """

    name: ClassVar[str]  # registry key, also the name for `prepare`
    folder: ClassVar[str]  # the dataset's folder under the data root
    splits: ClassVar[tuple[str, ...]] = SPLITS

    def __init__(self, root: str | Path, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        if split not in self.splits:
            raise ValueError(f"{self.name}: split={split!r}; use one of {self.splits}.")
        root = Path(root)
        if root.name == self.folder and not (root / self.folder).exists():
            root = root.parent  # the dataset folder itself was passed
        self.root, self.split, self.transform = root, split, transform
        self.base = root / self.folder
        if not self.base.is_dir():
            raise _missing(self.name, root, self.base)
        self.class_names: list[str] = []
        self.samples: list[Sample] = self._read(split)
        self._check_files()

    def _read(self, split: str) -> list[Sample]:
        """Parse the official annotation files; set self.class_names."""
        raise NotImplementedError

    def _require(self, *rel: str) -> list[Path]:
        """Paths of required files or folders in the dataset folder (FileNotFoundError if not)."""
        paths = [self.base / r for r in rel]
        for p in paths:
            if not p.exists():
                raise _missing(self.name, self.root, p)
        return paths

    def _check_files(self) -> None:
        """Every listed image exists (else the extraction is partial)."""
        absent = [s.path for s in self.samples if not s.path.is_file()]
        if absent:
            raise _missing(self.name, self.root, absent[0],
                           f" ({len(absent)} of {len(self.samples)} {self.split} images are "
                           "missing: the dataset is incomplete)")

    def box(self, i: int) -> Box | None:
        """Bounding box of item i as x, y, w, h, or None."""
        return self.samples[i].box

    def load_image(self, i: int) -> Image.Image:
        """Decoded RGB image of item i (OSError naming the file when it cannot be decoded)."""
        path = self.samples[i].path
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:
            raise OSError(f"{self.name}: cannot decode {path}: {e}. The file is corrupt or "
                          f"truncated; re-run {prepare_command(self.name, self.root)} --force"
                          ) from e

    # -- torch Dataset API -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        image = self.load_image(i)
        box = self.box(i)
        return {"image": self.transform(image) if self.transform else image,
                "label": s.label,
                "box": None if box is None else torch.tensor(box, dtype=torch.float32),
                "parts": None,
                "image_id": s.image_id}

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset (labels are 0..num_classes-1)."""
        return len(self.class_names)

    @property
    def labels(self) -> list[int]:
        """0-based label of every item, without loading images."""
        return [s.label for s in self.samples]

    @property
    def image_ids(self) -> list[str]:
        return [s.image_id for s in self.samples]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}, num_classes={self.num_classes})")


def _corners_to_box(x1: float, y1: float, x2: float, y2: float) -> Box:
    """Corner coordinates -> x, y, w, h."""
    return (x1, y1, x2 - x1, y2 - y1)


# ---------------------------------------------------------------------------------------------
# the four datasets


class AircraftDataset(FGVCDataset):
    """FGVC-Aircraft 2013b at variant level (100 classes), parsed by torchvision's FGVCAircraft.

    Boxes come from data/images_box.txt when present. Note the images keep the 20-pixel
    copyright banner at the bottom; crop it in the transform if wanted.
    """

    name, folder = "aircraft", "fgvc-aircraft-2013b"
    splits = SPLITS + VAL_SPLITS
    _native = {"train": ("trainval",), "test": ("test",), "all": ("trainval", "test"),
               "train_noval": ("train",), "val": ("val",)}

    def _read(self, split: str) -> list[Sample]:
        from torchvision.datasets import FGVCAircraft

        natives = self._native[split]
        self._require("data/variants.txt", "data/images",
                      *(f"data/images_variant_{s}.txt" for s in natives))
        boxes = self._boxes()
        samples = []
        for native in natives:
            tv = FGVCAircraft(self.root, split=native, annotation_level="variant", download=False)
            self.class_names = list(tv.classes)
            # torchvision keeps the parsed lists in private fields (pinned torchvision==0.29.1)
            for path, label in zip(tv._image_files, tv._labels):
                image_id = Path(path).stem
                samples.append(Sample(Path(path), int(label), image_id, boxes.get(image_id)))
        return samples

    def _boxes(self) -> dict[str, Box]:
        """image id -> box from data/images_box.txt (xmin ymin xmax ymax), {} if absent."""
        path = self.base / "data" / "images_box.txt"
        if not path.is_file():
            return {}
        boxes = {}
        for line in path.read_text().splitlines():
            if line.strip():
                key, *xyxy = line.split()
                boxes[key] = _corners_to_box(*map(float, xyxy))
        return boxes


class FlowersDataset(FGVCDataset):
    """Oxford Flowers-102 (same files as torchvision's Flowers102, read without scipy)."""

    name, folder = "flowers", "flowers-102"
    splits = SPLITS + VAL_SPLITS
    _native = {"train": ("trnid", "valid"), "test": ("tstid",), "all": ("trnid", "valid", "tstid"),
               "train_noval": ("trnid",), "val": ("valid",)}

    def _read(self, split: str) -> list[Sample]:
        from torchvision.datasets import Flowers102

        images, labels_mat, setid_mat = self._require("jpg", "imagelabels.mat", "setid.mat")
        labels = np.asarray(loadmat(labels_mat)["labels"]).ravel().astype(int)  # 1-based
        setid = loadmat(setid_mat)
        self.class_names = list(Flowers102.classes[:labels.max()])
        samples = []
        for key in self._native[split]:
            for image_id in np.asarray(setid[key]).ravel().astype(int):
                stem = f"image_{image_id:05d}"
                samples.append(Sample(images / f"{stem}.jpg", int(labels[image_id - 1]) - 1, stem))
        return samples


class CarsDataset(FGVCDataset):
    """Stanford Cars (torchvision's StanfordCars layout, read without scipy); boxes included."""

    name, folder = "cars", "stanford_cars"

    def _read(self, split: str) -> list[Sample]:
        (meta,) = self._require("devkit/cars_meta.mat")
        self.class_names = [_string(c) for c in loadmat(meta)["class_names"]]
        parts = {"train": [("devkit/cars_train_annos.mat", "cars_train")],
                 "test": [("cars_test_annos_withlabels.mat", "cars_test")]}
        parts["all"] = parts["train"] + parts["test"]
        samples = []
        for annos_rel, images_rel in parts[split]:
            annos, images = self._require(annos_rel, images_rel)
            for a in loadmat(annos)["annotations"]:
                fname = _string(a["fname"])
                box = _corners_to_box(*(_scalar(a[f"bbox_{k}"]) for k in ("x1", "y1", "x2", "y2")))
                samples.append(Sample(images / fname, int(_scalar(a["class"])) - 1,
                                      f"{images_rel}/{Path(fname).stem}", box))
        return samples


class DogsDataset(FGVCDataset):
    """Stanford Dogs (120 breeds) from its official layout; no torchvision class exists.

    Reads lists/{train,test}_list.mat (or the same files directly in the dataset folder). Boxes
    are read lazily from Annotation/<breed>/<stem> when the annotation archive was extracted.
    """

    name, folder = "dogs", "stanford_dogs"

    def _read(self, split: str) -> list[Sample]:
        (images,) = self._require("Images")
        lists = self.base / "lists" if (self.base / "lists").is_dir() else self.base
        rows = {s: self._list(lists / f"{s}_list.mat") for s in ("train", "test")}
        names: dict[int, str] = {}
        for rel, label in rows["train"] + rows["test"]:
            names.setdefault(label, rel.split("/")[0])  # breed folder, e.g. n02085620-Chihuahua
        self.class_names = [names.get(k, str(k)) for k in range(max(names) + 1)]
        chosen = rows["train"] + rows["test"] if split == "all" else rows[split]
        return [Sample(images / rel, label, rel.rsplit(".", 1)[0]) for rel, label in chosen]

    def _list(self, path: Path) -> list[tuple[str, int]]:
        """(relative image path, 0-based label) rows of a *_list.mat file."""
        if not path.is_file():
            raise _missing(self.name, self.root, path)
        mat = loadmat(path)
        files = [_string(f) for f in mat["file_list"]]
        labels = np.asarray(mat["labels"]).ravel().astype(int) - 1
        if len(files) != len(labels):
            raise ValueError(f"{path}: {len(files)} files but {len(labels)} labels.")
        return list(zip(files, labels.tolist()))

    def box(self, i: int) -> Box | None:
        """The first object's box from the Annotation XML (None without annotations)."""
        path = self.base / "Annotation" / self.samples[i].image_id
        if not path.is_file():
            return None
        bndbox = ElementTree.parse(path).find("object/bndbox")
        if bndbox is None:
            return None
        corners = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        return _corners_to_box(*corners)


# ---------------------------------------------------------------------------------------------
# the one entry point (the datasets are registered in fglib.data.registry.DATASETS)


def open_dataset(name: str, root: str | Path, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None,
                 expect_full: bool = False, **kwargs: Any) -> Dataset:
    """Open dataset `name` (a key of fglib.data.registry.DATASETS) from data root `root`.

    kwargs go to the dataset class (e.g. with_parts / on_corrupt for CUB and NABirds).
    Raises FileNotFoundError naming the missing file and the command that gets the data; with
    expect_full=True, ValueError when the split has fewer images than a complete download.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}.")
    info, root = DATASETS[name], Path(root)
    cls = info.load_class()
    if not issubclass(cls, FGVCDataset):  # CUB-format loaders take the dataset folder itself
        base = root / info.folder if (root / info.folder).is_dir() else root
        if not (base / "images.txt").is_file():
            raise _missing(name, root, root / info.folder / "images.txt")
        dataset = cls(base, split=split, transform=transform, **kwargs)
    else:
        dataset = cls(root, split=split, transform=transform, **kwargs)
    if expect_full:
        _check_full(name, info, split, len(dataset), root)
    return dataset


def _check_full(name: str, info: DatasetInfo, split: str, n: int, root: Path) -> None:
    """ValueError if the split has fewer (or more) images than the official release."""
    expected = info.expected_size(split)
    if expected is not None and n != expected:
        raise ValueError(f"{name} {split}: found {n} images, a complete download has {expected} "
                         f"({expected - n} missing). Re-run {prepare_command(name, root)} --force, "
                         "or pass expect_full=False to use a subset on purpose.")
