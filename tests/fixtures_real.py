"""Tiny stand-ins for the official FGVC archives, in the official layouts (for the download tests).

`build_mirror(dir)` writes, under dir, files with the official names (CUB_200_2011.tgz,
fgvc-aircraft-2013b.tar.gz, 102flowers.tgz + imagelabels.mat + setid.mat, images.tar + lists.tar
+ annotation.tar, the four Stanford Cars files) holding a few 8x8 images of 3 classes each, and
returns the expected number of images per split. `write_mat` writes MATLAB v5 .mat files
(numeric, char, cell, struct; optionally compressed) without scipy.
"""
from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = 3

# ---------------------------------------------------------------------------------------------
# MATLAB v5 writer (what MATLAB's `save -v6/-v7` produces; enough for the official list files)

_MI_INT8, _MI_INT32, _MI_UINT8, _MI_UINT16, _MI_UINT32, _MI_DOUBLE = 1, 5, 2, 4, 6, 9
_MI_MATRIX, _MI_COMPRESSED = 14, 15


def _tagged(mtype: int, data: bytes, small_ok: bool = True) -> bytes:
    """One data element: small format for <= 4 bytes, else tag + data padded to 8 bytes."""
    if small_ok and 0 < len(data) <= 4:
        return struct.pack("<HH", mtype, len(data)) + data.ljust(4, b"\0")
    return struct.pack("<II", mtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _header(cls: int, dims: tuple[int, ...], name: str) -> bytes:
    return (_tagged(_MI_UINT32, struct.pack("<II", cls, 0), small_ok=False)
            + _tagged(_MI_INT32, struct.pack(f"<{len(dims)}i", *dims), small_ok=False)
            + _tagged(_MI_INT8, name.encode()))


def _matrix(value: Any, name: str = "") -> bytes:
    """A miMATRIX element: str -> char row, list of dict -> 1xN struct, list of str -> Nx1 cell,
    anything else -> double array (stored as uint8 when the values allow, as MATLAB does)."""
    if isinstance(value, str):
        body = _header(4, (1, len(value)), name) + _tagged(
            _MI_UINT16, struct.pack(f"<{len(value)}H", *map(ord, value)))
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        fields = list(value[0])
        body = (_header(2, (1, len(value)), name) + _tagged(_MI_INT32, struct.pack("<i", 32))
                + _tagged(_MI_INT8, b"".join(f.encode().ljust(32, b"\0") for f in fields))
                + b"".join(_matrix(v[f]) for v in value for f in fields))
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        body = _header(1, (len(value), 1), name) + b"".join(_matrix(v) for v in value)
    else:
        arr = np.atleast_2d(np.asarray(value, dtype=np.float64))
        flat = arr.ravel(order="F")
        small = flat.size and (flat == np.round(flat)).all() and 0 <= flat.min() <= flat.max() < 256
        data = flat.astype("<u1" if small else "<f8").tobytes()
        body = _header(6, arr.shape, name) + _tagged(_MI_UINT8 if small else _MI_DOUBLE, data)
    return struct.pack("<II", _MI_MATRIX, len(body)) + body


def mat_bytes(variables: dict[str, Any], compress: bool = False) -> bytes:
    """The bytes of a MATLAB v5 .mat file holding the given variables."""
    out = [b"MATLAB 5.0 MAT-file, written by fglib tests".ljust(116), b"\0" * 8,
           struct.pack("<H", 0x0100), b"IM"]
    for name, value in variables.items():
        element = _matrix(value, name)
        if compress:  # a zlib stream holding the whole element, not padded
            packed = zlib.compress(element)
            element = struct.pack("<II", _MI_COMPRESSED, len(packed)) + packed
        out.append(element)
    return b"".join(out)


def write_mat(path: Path, variables: dict[str, Any], compress: bool = False) -> Path:
    """Write a MATLAB v5 .mat file with the given variables."""
    path.write_bytes(mat_bytes(variables, compress))
    return path


# ---------------------------------------------------------------------------------------------
# images and archives


def image_bytes(label: int, index: int, fmt: str = "JPEG") -> bytes:
    """An 8x8 image whose red channel encodes the expected 0-based label (40 * label + 30)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40 * label + 30, 20 * index, 100)).save(buf, fmt)
    return buf.getvalue()


def pack(archive: Path, files: dict[str, bytes]) -> Path:
    """A tar archive (gzip for .tgz/.tar.gz) holding files under their relative names."""
    mode = "w:gz" if archive.name.endswith("gz") else "w"
    with tarfile.open(archive, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return archive


def _table(rows: list[Any]) -> bytes:
    return "".join(" ".join(map(str, r)) + "\n" for r in rows).encode()


# ---------------------------------------------------------------------------------------------
# one builder per dataset: writes the official files into mirror, returns split sizes


def build_cub(mirror: Path) -> dict[str, int]:
    """CUB_200_2011.tgz: 3 classes x 3 images, 2 train + 1 test each, with boxes and 2 parts."""
    files, n = {}, 0
    images, labels, split, boxes, locs = [], [], [], [], []
    for c in range(1, CLASSES + 1):
        for j in range(3):
            n += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{j}.jpg"
            files[f"CUB_200_2011/images/{rel}"] = image_bytes(c - 1, j)
            images.append((n, rel))
            labels.append((n, c))
            split.append((n, int(j < 2)))
            boxes.append((n, 1.0, 1.0, 5.0, 6.0))
            locs += [(n, 1, 2.0, 3.0, 1), (n, 2, 0.0, 0.0, 0)]
    files |= {"CUB_200_2011/images.txt": _table(images),
              "CUB_200_2011/image_class_labels.txt": _table(labels),
              "CUB_200_2011/train_test_split.txt": _table(split),
              "CUB_200_2011/bounding_boxes.txt": _table(boxes),
              "CUB_200_2011/classes.txt": _table([(c, f"{c:03d}.Bird_{c}")
                                                  for c in range(1, CLASSES + 1)]),
              "CUB_200_2011/parts/parts.txt": _table([(1, "beak"), (2, "tail")]),
              "CUB_200_2011/parts/part_locs.txt": _table(locs),
              "attributes.txt": _table([(1, "has_bill_shape::curved")])}
    pack(mirror / "CUB_200_2011.tgz", files)
    return {"train": 6, "test": 3}


def build_aircraft(mirror: Path) -> dict[str, int]:
    """fgvc-aircraft-2013b.tar.gz: 3 variants x 4 images (train 1, val 1, test 2 each)."""
    variants = ["707-320", "A300B4", "F/A-18"]
    top = "fgvc-aircraft-2013b/data"
    files: dict[str, bytes] = {f"{top}/variants.txt": ("\n".join(variants) + "\n").encode()}
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    boxes = []
    for c, variant in enumerate(variants):
        for j, split in enumerate(("train", "val", "test", "test")):
            image_id = f"{1000000 + 10 * c + j:07d}"
            files[f"{top}/images/{image_id}.jpg"] = image_bytes(c, j)
            rows[split].append(f"{image_id} {variant}")
            boxes.append((image_id, 1, 2, 6, 7))
    rows["trainval"] = rows["train"] + rows["val"]
    for split, lines in rows.items():
        files[f"{top}/images_variant_{split}.txt"] = ("\n".join(lines) + "\n").encode()
    files[f"{top}/images_box.txt"] = _table(boxes)
    pack(mirror / "fgvc-aircraft-2013b.tar.gz", files)
    return {"train": 6, "test": 6, "train_noval": 3, "val": 3}


def build_flowers(mirror: Path) -> dict[str, int]:
    """102flowers.tgz + imagelabels.mat + setid.mat: 3 classes x 4 images (1 trn, 1 val, 2 tst)."""
    labels, setid = [], {"trnid": [], "valid": [], "tstid": []}
    files = {}
    for image_id in range(1, 4 * CLASSES + 1):
        c, j = (image_id - 1) % CLASSES + 1, (image_id - 1) // CLASSES
        labels.append(c)
        files[f"jpg/image_{image_id:05d}.jpg"] = image_bytes(c - 1, j)
        setid[("trnid", "valid", "tstid", "tstid")[j]].append(image_id)
    pack(mirror / "102flowers.tgz", files)
    (mirror / "imagelabels.mat").write_bytes(mat_bytes({"labels": [labels]}))
    (mirror / "setid.mat").write_bytes(mat_bytes({k: [v] for k, v in setid.items()},
                                                  compress=True))
    return {"train": 6, "test": 6, "train_noval": 3, "val": 3}


def _dogs_xml(x1: int, y1: int, x2: int, y2: int) -> bytes:
    return (f"<annotation><size><width>8</width><height>8</height></size><object>"
            f"<name>dog</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object></annotation>").encode()


def build_dogs(mirror: Path) -> dict[str, int]:
    """images.tar, lists.tar, annotation.tar: 3 breeds x 3 images (2 train, 1 test)."""
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
    images, annotations = {}, {}
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for c, breed in enumerate(breeds, 1):
        wnid = breed.split("-")[0]
        for j in range(3):
            rel = f"{breed}/{wnid}_{j}.jpg"
            images[f"Images/{rel}"] = image_bytes(c - 1, j)
            annotations[f"Annotation/{breed}/{wnid}_{j}"] = _dogs_xml(1, 2, 7, 8)
            lists["train" if j < 2 else "test"].append((rel, c))
    pack(mirror / "images.tar", images)
    pack(mirror / "annotation.tar", annotations)

    def mat(rows: list[tuple[str, int]]) -> bytes:
        return mat_bytes({"file_list": [r for r, _ in rows],
                           "annotation_list": [r[:-4] for r, _ in rows],
                           "labels": [[c] for _, c in rows]})

    pack(mirror / "lists.tar", {"file_list.mat": mat(lists["train"] + lists["test"]),
                                "train_list.mat": mat(lists["train"]),
                                "test_list.mat": mat(lists["test"])})
    return {"train": 6, "test": 3}


def build_cars(mirror: Path) -> dict[str, int]:
    """The four Stanford Cars files: 3 models x 3 images (2 train, 1 test)."""
    train, test = {}, {}
    annos: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for c in range(1, CLASSES + 1):
        for j in range(3):
            split = "train" if j < 2 else "test"
            fname = f"{len(annos[split]) + 1:05d}.jpg"
            (train if split == "train" else test)[f"cars_{split}/{fname}"] = image_bytes(c - 1, j)
            annos[split].append({"bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 6, "bbox_y2": 8,
                                 "class": c, "fname": fname})
    pack(mirror / "cars_train.tgz", train)
    pack(mirror / "cars_test.tgz", test)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    pack(mirror / "car_devkit.tgz", {
        "devkit/cars_meta.mat": mat_bytes({"class_names": names}),
        "devkit/cars_train_annos.mat": mat_bytes({"annotations": annos["train"]}, compress=True),
        "devkit/README.txt": b"devkit\n"})
    (mirror / "cars_test_annos_withlabels.mat").write_bytes(
        mat_bytes({"annotations": annos["test"]}))
    return {"train": 6, "test": 3}


BUILDERS = {"cub": build_cub, "aircraft": build_aircraft, "flowers": build_flowers,
            "dogs": build_dogs, "cars": build_cars}


def build_mirror(mirror: Path) -> dict[str, dict[str, int]]:
    """All fixture archives under mirror; returns name -> split -> number of images."""
    mirror.mkdir(parents=True, exist_ok=True)
    return {name: build(mirror) for name, build in BUILDERS.items()}
