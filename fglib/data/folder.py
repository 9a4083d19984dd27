"""Your own images: a folder with one sub-folder per class (torchvision's ImageFolder
layout).

    my_birds/                        or, with a split of your own:
        Laysan_Albatross/                my_birds/train/Laysan_Albatross/0001.jpg ...
            0001.jpg                     my_birds/test/Laysan_Albatross/0107.jpg ...
            0002.jpg
        Sooty_Albatross/
            ...

`index_folder(root)` checks the folder and writes a CUB-format index of it into the
cache: images.txt, image_class_labels.txt, classes.txt, train_test_split.txt, full-image
boxes and an empty part list. The images are not copied: the index's `images` is a link
to the folder. Every fglib loader then reads it, in memory at book scale and through
torchvision's DataLoader at paper scale. Without train/ and test/ sub-folders, each
class is split on its own, by file name (`split_class`), so the split is the same on
every machine and does not change when another class is added.

Checked before anything is written (`FolderError`, a ValueError, says what is wrong and
how to fix it): the folder exists, it has at least two classes, no class is empty, every
class has a training and a test image, and every image decodes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from fglib.core import paths
from fglib.core.runtime import progress_bar
from fglib.data.cub import CUBDataset
from fglib.data.synth import SynthConfig, config_hash, synthetic_benchmark

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
            ".pgm")
TEST_FRACTION = 0.25
FORMAT_VERSION = 1
# The book's demonstration folder: birds from the benchmark's generator, drawn with
# their own seed and written as PNG files in the ImageFolder layout (`demo_folder`).
DEMO = {"seed": 11, "num_classes": 12, "families": 4, "images_per_class": 48,
        "image_size": 96}


class FolderError(ValueError):
    """A folder of images that fglib cannot train on, and what to do about it."""


def _images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (others ignored)."""
    return sorted(p for p in folder.iterdir() if p.is_file()
                  and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def _classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for each sub-folder of `folder` (not hidden)."""
    subs = sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith("."))
    return {p.name: _images(p) for p in subs}


def split_class(n: int, test_fraction: float) -> list[bool]:
    """Which of a class's n files (sorted by name) are test images: round(n x fraction)
    of them, at least one and at most n - 1, spread evenly over the sorted list."""
    k = min(n - 1, max(1, round(n * test_fraction)))
    test = {int((j + 0.5) * n / k) for j in range(k)}        # evenly spaced positions
    return [i in test for i in range(n)]


def scan(root: str | os.PathLike[str], test_fraction: float = TEST_FRACTION
         ) -> list[tuple[str, Path, bool]]:
    """(class name, image file, is test) of every image under `root`, checked."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderError(f"no folder {root}: give the folder that holds one "
                          "sub-folder of images per class")
    if not 0 < test_fraction < 1:
        raise FolderError(f"test_fraction={test_fraction}: give a share between 0 and "
                          "1")
    own_split = (root / "train").is_dir() and (root / "test").is_dir()
    if own_split:
        train, test = _classes(root / "train"), _classes(root / "test")
        if set(train) != set(test):
            raise FolderError(
                f"{root}/train and {root}/test must hold the same classes; only in "
                f"train: {sorted(set(train) - set(test)) or 'none'}, only in test: "
                f"{sorted(set(test) - set(train)) or 'none'}")
        classes = {c: [(f, False) for f in train[c]] + [(f, True) for f in test[c]]
                   for c in sorted(train)}
    else:
        found = _classes(root)
        single = [c for c, files in found.items() if len(files) == 1]
        if single:
            raise FolderError(f"class folder(s) {single} in {root} hold one image: a "
                              "class needs at least two (one to train on, one to test "
                              "on)")
        classes = {c: list(zip(files, split_class(len(files), test_fraction)))
                   for c, files in found.items()}
    splits = [c for c in classes if c.lower() in ("train", "test", "val", "valid")]
    if splits and not own_split:
        raise FolderError(f"{root} holds {splits}: for a split of your own, name the "
                          "two sub-folders train/ and test/ (lower case), each with "
                          "one sub-folder of images per class")
    where = f"{root}/train and {root}/test" if own_split else str(root)
    if len(classes) < 2:
        raise FolderError(f"{where} holds {len(classes)} class folder(s) "
                          f"{sorted(classes)}: a classifier needs at least two, one "
                          "sub-folder of images per class")
    empty = [c for c, items in classes.items() if not items]
    if empty:
        raise FolderError(f"class folder(s) {empty} in {where} hold no image "
                          f"({', '.join(SUFFIXES)}): add images or remove the "
                          "folder(s)")
    if own_split:
        lacking = [c for c, items in classes.items() if len({t for _, t in items}) < 2]
        if lacking:
            raise FolderError(f"class(es) {lacking} have no image in train/ or in "
                              f"test/ under {root}: each class needs both")
    return [(c, f, t) for c, items in classes.items() for f, t in items]


def check_images(files: list[Path], progress: bool | None = None
                 ) -> list[tuple[int, int]]:
    """(width, height) of every image, decoding each one in full; FolderError naming the
    files that do not decode."""
    sizes, bad = [], []
    with progress_bar(progress, total=len(files), desc="checking images",
                      unit="img") as bar:
        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
                    sizes.append(im.size)
            except (OSError, SyntaxError, ValueError, EOFError,
                    Image.DecompressionBombError) as e:
                bad.append(f"{f} ({type(e).__name__}: {e})")
            bar.update(1)
    if bad:
        raise FolderError(f"{len(bad)} image(s) cannot be decoded: "
                          f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. "
                          "Replace or remove them")
    return sizes


def _fingerprint(root: Path, items: list[tuple[str, Path, bool]]) -> str:
    """What the images of a folder are: its place, and every scanned file's class, name,
    split, size and time (a file added, removed, moved or edited changes it)."""
    h = hashlib.sha1(f"{FORMAT_VERSION}|{root}".encode())
    for c, f, t in items:
        st = f.stat()
        rel = f.relative_to(root)
        h.update(f"|{c}|{rel}|{t}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def folder_digest(root: str | os.PathLike[str], test_fraction: float = TEST_FRACTION
                  ) -> str:
    """The fingerprint of the images `root` holds now (the folder checked by scan)."""
    root = Path(root).expanduser().resolve()
    return _fingerprint(root, scan(root, test_fraction))


def index_folder(root: str | os.PathLike[str], test_fraction: float = TEST_FRACTION,
                 progress: bool | None = None) -> Path:
    """The CUB-format index of the ImageFolder `root` (made once into the cache, again
    when a file changes); FolderError, with nothing written, if the folder cannot be
    used."""
    root = Path(root).expanduser().resolve()
    items = scan(root, test_fraction)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", root.name)[:40] or "folder"
    index = paths.cache_dir() / "folders" / f"{slug}-{_fingerprint(root, items)}"
    if (index / "index.json").is_file():
        return index
    if index.exists():                         # an index someone emptied: made again
        shutil.rmtree(index)
    sizes = check_images([f for _, f, _ in items], progress)
    names = sorted({c for c, _, _ in items})
    cid = {c: i for i, c in enumerate(names, 1)}
    rows = [(i, c, f.relative_to(root).as_posix(), t, wh)
            for i, ((c, f, t), wh) in enumerate(zip(items, sizes), 1)]
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{index.name}-", dir=index.parent))
    try:
        tables = {
            "images.txt": [f"{i} {rel}" for i, _, rel, _, _ in rows],
            "image_class_labels.txt": [f"{i} {cid[c]}" for i, c, _, _, _ in rows],
            "train_test_split.txt": [f"{i} {0 if t else 1}"
                                     for i, _, _, t, _ in rows],
            "bounding_boxes.txt": [f"{i} 0 0 {w} {h}" for i, _, _, _, (w, h) in rows],
            "classes.txt": [f"{cid[c]} {c}" for c in names],
            "parts/parts.txt": [], "parts/part_locs.txt": []}
        for rel, lines in tables.items():
            (tmp / rel).parent.mkdir(exist_ok=True)
            (tmp / rel).write_text("".join(line + "\n" for line in lines),
                                   encoding="utf-8")
        (tmp / "images").symlink_to(root, target_is_directory=True)
        counts = {c: [sum(1 for cc, _, t in items if cc == c and t == test)
                      for test in (False, True)] for c in names}
        (tmp / "index.json").write_text(json.dumps(
            {"folder": str(root), "test_fraction": test_fraction, "classes": counts},
            indent=1))
        try:
            tmp.rename(index)                  # atomic: an index is complete or absent
        except OSError:                        # another process indexed it meanwhile
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def class_counts(index: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """Class name -> (training images, test images) of an index_folder index."""
    counts = json.loads((Path(index) / "index.json").read_text())["classes"]
    return {c: (n_train, n_test) for c, (n_train, n_test) in counts.items()}


def demo_folder(**changes: Any) -> Path:
    """The book's demonstration folder (made once into the cache): DEMO's birds, one PNG
    file per image in one sub-folder per class, the layout a reader's photos have."""
    folder = _demo_path(**changes)
    if folder.is_dir():
        return folder
    source = synthetic_benchmark(SynthConfig(**{**DEMO, **changes}))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        birds = CUBDataset(source, "all", with_parts=False)
        for r in birds.records:
            name = birds.class_names[r.label].split(".", 1)[-1]   # "003.Name" -> Name
            (tmp / name).mkdir(exist_ok=True)
            shutil.copyfile(r.path, tmp / name / r.path.name)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if folder.is_dir():                        # made by another process meanwhile
            return folder
        raise
    return folder


def _demo_path(**changes: Any) -> Path:
    """Where demo_folder(**changes) is (or will be), without making it."""
    digest = config_hash(SynthConfig(**{**DEMO, **changes}))[:12]
    return paths.cache_dir() / "folders" / f"demo-{digest}"


def folder_data(root: str | os.PathLike[str] | None = None,
                test_fraction: float = TEST_FRACTION) -> dict[str, Any]:
    """The data settings (dotted config fields) of a run on the ImageFolder `root`: its
    absolute path and the digest of the images it holds now, so that a run is trained
    again when a file is added, removed or edited. None, or the path demo_folder()
    returns, names the book's demonstration folder, recorded as {"demo": true} (made by
    the code, which the runs' fingerprint covers), so that its runs have the same key on
    every machine."""
    demo = root is None or Path(root).expanduser().resolve() == _demo_path().resolve()
    if demo:
        where: dict[str, Any] = {"demo": True}
    else:
        path = Path(root).expanduser().resolve()
        where = {"root": str(path), "digest": folder_digest(path, test_fraction)}
    if test_fraction != TEST_FRACTION:
        where["test_fraction"] = test_fraction
    return {"data.name": "folder", "data.synth": where}


def folder_dataset(image_size: int, overrides: dict[str, Any]) -> Path:
    """fglib.data.registry.GENERATED's entry "folder": the CUB-format index of the
    folder that data.synth names ({"root": path, "digest": ...} or {"demo": true};
    optionally "test_fraction"), refused when the folder's images changed since."""
    unknown = set(overrides) - {"root", "digest", "demo", "test_fraction"}
    if unknown or ("root" in overrides) == bool(overrides.get("demo")):
        raise FolderError(f"data.synth of a 'folder' run is {{'root': <folder>, "
                          f"'digest': ...}} or {{'demo': true}} (and optionally "
                          f"'test_fraction'), got {overrides}; "
                          "fglib.data.folder.folder_data(root) writes it")
    fraction = overrides.get("test_fraction", TEST_FRACTION)
    if overrides.get("demo"):
        return index_folder(demo_folder(), fraction)
    root = overrides["root"]
    if "digest" in overrides and folder_digest(root, fraction) != overrides["digest"]:
        raise FolderError(f"the images in {root} changed since this run was configured "
                          "(a file added, removed, moved or edited): call "
                          "folder_data(root) again, which names new runs")
    return index_folder(root, fraction)
