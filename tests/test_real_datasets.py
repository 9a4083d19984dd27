"""Real-dataset loaders and `prepare`, against tiny archives in the official layouts served from
127.0.0.1 (no other host is ever contacted)."""
from __future__ import annotations

import dataclasses
import http.server
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fglib.data import download, real, registry
from fglib.data.download import (ArchiveError, ChecksumError, DownloadError, ManualDownloadError,
                                 UnsafeArchiveError, prepare)
from fglib.data.real import FGVCDataset, open_dataset
from fglib.data.registry import DATASETS

from fixtures_real import build_mirror, image_bytes, mat_bytes, pack, write_mat

NAMES = ["aircraft", "flowers", "dogs", "cars", "cub"]


# ---------------------------------------------------------------------------------------------
# fixtures: a local mirror and an HTTP server for it


@pytest.fixture(autouse=True)
def localhost_only(monkeypatch):
    """Fail any connection to a host other than 127.0.0.1."""
    real_connect = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"test tried to reach {address}"
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files (Range ignored, as http.server does), plus two test routes:
    /broken/<file> announces the whole file but sends half; /ranged/<file> honours Range."""

    requests: list[tuple[str, str | None]] = []  # (path, Range header)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        route, _, rel = self.path.lstrip("/").partition("/")
        if route in ("broken", "ranged"):
            data = (Path(self.directory) / rel).read_bytes()
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
            partial_reply = route == "ranged" and start > 0
            self.send_response(206 if partial_reply else 200)
            body = data[start:] if partial_reply else data
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if route == "ranged" else body[:len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """(base URL, folder, expected sizes) of a local mirror holding every fixture archive."""
    folder = tmp_path_factory.mktemp("mirror")
    sizes = build_mirror(folder)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder, sizes
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def env(mirror, monkeypatch):
    """FGLIB_MIRROR points at the local server; the official checksums do not apply."""
    base, folder, sizes = mirror
    monkeypatch.setenv("FGLIB_MIRROR", base)
    monkeypatch.delenv("CI", raising=False)
    for name, info in registry.DATASETS.items():
        files = tuple(dataclasses.replace(f, md5=None, sha256=None) for f in info.files)
        monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(info, files=files))
    _Handler.requests.clear()
    return base, folder, sizes


def _leftovers(root: Path) -> list[str]:
    """Staging folders left under root (there must be none)."""
    return [p.name for p in root.glob(".fglib-staging-*")]


# ---------------------------------------------------------------------------------------------
# prepare + open every dataset


@pytest.mark.parametrize("name", NAMES)
def test_prepare_and_open(env, tmp_path, name):
    _, _, sizes = env
    folder = prepare(name, tmp_path, progress=False)
    assert folder == tmp_path / DATASETS[name].folder
    assert (folder / download.MARKER).is_file()
    assert not _leftovers(tmp_path) and not (tmp_path / ".downloads").exists()
    labels = set()
    for split, n in sizes[name].items():
        ds = open_dataset(name, tmp_path, split)
        assert len(ds) == n, split
        labels |= set(ds.labels)
        item = ds[0]
        assert {"image", "label", "box", "parts", "image_id"} <= set(item)
        assert isinstance(item["image"], Image.Image) and item["image"].size == (8, 8)
        assert isinstance(item["label"], int)
        assert item["box"] is None or (item["box"].shape == (4,)
                                       and item["box"].dtype == torch.float32)
    assert labels == {0, 1, 2}  # 0-based contiguous
    train = open_dataset(name, tmp_path, "train")
    test = open_dataset(name, tmp_path, "test")
    assert not set(map(str, train.image_ids)) & set(map(str, test.image_ids))
    assert len(open_dataset(name, tmp_path, "all")) == len(train) + len(test)


@pytest.mark.parametrize("name", ["aircraft", "flowers", "dogs", "cars"])
def test_items_match_official_annotations(env, tmp_path, name):
    prepare(name, tmp_path, progress=False)
    ds = open_dataset(name, tmp_path, "train", transform=lambda im: torch.tensor(np.array(im)))
    assert ds.num_classes == 3 and len(ds.class_names) == 3
    item = ds[0]
    assert item["image"].shape == (8, 8, 3) and item["parts"] is None
    assert isinstance(item["image_id"], str)
    expected_box = {"aircraft": [1, 2, 5, 5], "dogs": [1, 2, 6, 6], "cars": [1, 2, 5, 6]}
    if name in expected_box:
        assert item["box"].tolist() == expected_box[name]
    else:
        assert item["box"] is None
    for i in range(len(ds)):  # the fixture encodes the expected label in the red channel
        red = ds[i]["image"][..., 0].float().mean().item()
        assert abs(red - (40 * ds.labels[i] + 30)) < 8


def test_flowers_and_aircraft_val_splits(env, tmp_path):
    for name in ("flowers", "aircraft"):
        prepare(name, tmp_path, progress=False)
        noval = open_dataset(name, tmp_path, "train_noval")
        val = open_dataset(name, tmp_path, "val")
        assert len(noval) + len(val) == len(open_dataset(name, tmp_path, "train"))
    with pytest.raises(ValueError, match="split"):
        open_dataset("dogs", tmp_path, "val")


def test_second_prepare_is_noop_and_force_redoes(env, tmp_path):
    folder = prepare("flowers", tmp_path, progress=False)
    marker = (folder / download.MARKER).stat().st_mtime_ns
    n_requests = len(_Handler.requests)
    assert prepare("flowers", tmp_path, progress=False) == folder
    assert len(_Handler.requests) == n_requests  # nothing fetched
    assert (folder / download.MARKER).stat().st_mtime_ns == marker
    (folder / "jpg" / "image_00001.jpg").unlink()
    base = env[0]
    with pytest.raises(DownloadError):  # a failed forced run keeps the old dataset
        prepare("flowers", tmp_path, url=f"{base}/no-such-folder/", force=True, progress=False)
    assert (folder / download.MARKER).is_file() and not _leftovers(tmp_path)
    prepare("flowers", tmp_path, force=True, progress=False)
    assert len(_Handler.requests) == n_requests + 4
    assert (folder / "jpg" / "image_00001.jpg").is_file() and not _leftovers(tmp_path)


def test_root_may_be_the_dataset_folder(env, tmp_path):
    folder = prepare("cub", tmp_path / "CUB_200_2011", progress=False)
    assert folder == tmp_path / "CUB_200_2011" and (folder / "images.txt").is_file()
    assert len(open_dataset("cub", folder, "train")) == 6
    assert len(open_dataset("cub", tmp_path, "train")) == 6


def test_cli_prepare(env, tmp_path, capsys):
    assert download.main(["prepare", "dogs", "--root", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "stanford_dogs")
    assert len(open_dataset("dogs", tmp_path, "test")) == 3


# ---------------------------------------------------------------------------------------------
# failures: missing data, partial data, bad archives


@pytest.mark.parametrize("name", NAMES + ["nabirds"])
def test_missing_root_names_path_and_command(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        open_dataset(name, root, "train")
    assert str(root) in str(e.value)
    assert f"python -m fglib data prepare {name} --root {root}" in str(e.value)


def test_missing_annotation_file_is_named(env, tmp_path):
    folder = prepare("aircraft", tmp_path, progress=False)
    (folder / "data" / "images_variant_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="images_variant_test.txt"):
        open_dataset("aircraft", tmp_path, "test")


def test_missing_image_and_expect_full(env, tmp_path):
    folder = prepare("dogs", tmp_path, progress=False)
    assert len(open_dataset("dogs", tmp_path, "train")) == 6
    with pytest.raises(ValueError, match=r"found 6 images, a complete download has 12000 "
                                         r"\(11994 missing\)"):
        open_dataset("dogs", tmp_path, "train", expect_full=True)
    victim = next((folder / "Images").rglob("*_0.jpg"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 6 train images are missing"):
        open_dataset("dogs", tmp_path, "train")


def test_truncated_archive_leaves_no_dataset(env, tmp_path):
    base, folder, _ = env
    cut = folder / "truncated"
    cut.mkdir(exist_ok=True)
    data = (folder / "fgvc-aircraft-2013b.tar.gz").read_bytes()
    (cut / "fgvc-aircraft-2013b.tar.gz").write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        prepare("aircraft", tmp_path, url=f"{base}/truncated/", progress=False)
    assert not (tmp_path / "fgvc-aircraft-2013b").exists()
    assert not _leftovers(tmp_path)
    assert not (tmp_path / ".downloads" / "fgvc-aircraft-2013b.tar.gz").exists()
    prepare("aircraft", tmp_path, progress=False)  # a good source afterwards works
    assert len(open_dataset("aircraft", tmp_path, "test")) == 6


def test_tar_cut_at_member_boundary_is_detected(env, tmp_path):
    """An uncompressed tar cut between members reads 'fine': the layout check catches it."""
    base, folder, _ = env
    cut = folder / "cut"
    cut.mkdir(exist_ok=True)
    for f in ("lists.tar", "annotation.tar"):
        (cut / f).write_bytes((folder / f).read_bytes())
    with tarfile.open(folder / "images.tar") as tar:
        members = tar.getmembers()
    (cut / "images.tar").write_bytes((folder / "images.tar").read_bytes()[:members[-1].offset])
    with pytest.raises(ArchiveError, match="incomplete"):
        prepare("dogs", tmp_path, url=f"{base}/cut/", progress=False)
    assert not (tmp_path / "stanford_dogs").exists() and not _leftovers(tmp_path)


def test_interrupted_download_keeps_only_part_file(env, tmp_path):
    base, _, _ = env
    with pytest.raises(DownloadError, match="resume"):
        prepare("cub", tmp_path, url=f"{base}/broken/", progress=False)
    assert not (tmp_path / "CUB_200_2011").exists() and not _leftovers(tmp_path)
    assert [p.name for p in (tmp_path / ".downloads").iterdir()] == ["CUB_200_2011.tgz.part"]
    prepare("cub", tmp_path, progress=False)  # the server ignores Range: restarted, then fine
    assert len(open_dataset("cub", tmp_path, "test")) == 3
    assert not (tmp_path / ".downloads").exists()


def test_interrupted_download_resumes_with_range(env, tmp_path, monkeypatch):
    import hashlib

    base, folder, _ = env
    data = (folder / "CUB_200_2011.tgz").read_bytes()
    info = registry.DATASETS["cub"]
    checked = dataclasses.replace(info.files[0], md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(registry.DATASETS, "cub", dataclasses.replace(info, files=(checked,)))
    with pytest.raises(DownloadError):
        prepare("cub", tmp_path, url=f"{base}/broken/", progress=False)
    part = tmp_path / ".downloads" / "CUB_200_2011.tgz.part"
    assert part.stat().st_size == len(data) // 2
    prepare("cub", tmp_path, url=f"{base}/ranged/", progress=False)
    assert _Handler.requests[-1] == ("/ranged/CUB_200_2011.tgz", f"bytes={len(data) // 2}-")
    assert len(open_dataset("cub", tmp_path, "all")) == 9


def test_checksum_mismatch(env, tmp_path, monkeypatch):
    info = registry.DATASETS["aircraft"]
    bad = dataclasses.replace(info.files[0], md5="0" * 32)
    monkeypatch.setitem(registry.DATASETS, "aircraft", dataclasses.replace(info, files=(bad,)))
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        prepare("aircraft", tmp_path, progress=False)
    assert not (tmp_path / "fgvc-aircraft-2013b").exists()
    assert not list((tmp_path / ".downloads").iterdir())


def test_checksum_match(env, tmp_path, monkeypatch):
    import hashlib

    _, folder, _ = env
    info = registry.DATASETS["aircraft"]
    digest = hashlib.sha256((folder / "fgvc-aircraft-2013b.tar.gz").read_bytes()).hexdigest()
    good = dataclasses.replace(info.files[0], sha256=digest)
    monkeypatch.setitem(registry.DATASETS, "aircraft", dataclasses.replace(info, files=(good,)))
    assert (prepare("aircraft", tmp_path, progress=False) / download.MARKER).is_file()


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/fglib-evil.txt", "a/../../evil.txt"])
def test_tar_path_traversal_is_refused(env, tmp_path, evil):
    base, folder, _ = env
    bad = folder / "evil"
    bad.mkdir(exist_ok=True)
    pack(bad / "fgvc-aircraft-2013b.tar.gz",
         {"fgvc-aircraft-2013b/data/variants.txt": b"A\n", evil: b"gotcha\n"})
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        prepare("aircraft", root, url=f"{base}/evil/", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not Path("/tmp/fglib-evil.txt").exists()
    assert not (root / "fgvc-aircraft-2013b").exists() and not _leftovers(root)


def test_symlink_out_of_archive_is_refused(tmp_path):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("data/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UnsafeArchiveError):
        download.extract(archive, tmp_path / "out")


def test_http_error_is_clear(env, tmp_path):
    base, _, _ = env
    with pytest.raises(DownloadError, match="HTTP 404"):
        prepare("flowers", tmp_path, url=f"{base}/no-such-folder/", progress=False)
    assert not (tmp_path / "flowers-102").exists()


@pytest.mark.parametrize("name, words", [("cars", "no longer distributed"),
                                         ("nabirds", "terms of use")])
def test_manual_datasets_explain_what_to_do(tmp_path, monkeypatch, name, words):
    monkeypatch.delenv("FGLIB_MIRROR", raising=False)
    with pytest.raises(ManualDownloadError, match=words) as e:
        prepare(name, tmp_path, progress=False)
    assert str(tmp_path / DATASETS[name].folder) in str(e.value)


def test_manual_cars_folder_is_adopted(env, tmp_path, monkeypatch):
    """Cars unpacked by hand (no marker) is verified and marked without downloading."""
    folder = prepare("cars", tmp_path, progress=False)
    (folder / download.MARKER).unlink()
    monkeypatch.delenv("FGLIB_MIRROR")
    n_requests = len(_Handler.requests)
    assert prepare("cars", tmp_path, progress=False) == folder
    assert (folder / download.MARKER).is_file() and len(_Handler.requests) == n_requests
    (folder / download.MARKER).unlink()
    (folder / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(FileExistsError, match="not a complete cars dataset"):
        prepare("cars", tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------
# registry and the .mat reader


def test_registry():
    expected = {"cub": (200, 5994, 5794), "cars": (196, 8144, 8041), "aircraft": (100, 6667, 3333),
                "dogs": (120, 12000, 8580), "flowers": (102, 2040, 6149)}
    for name, (c, n_train, n_test) in expected.items():
        info = DATASETS[name]
        assert (info.num_classes, info.n_train, info.n_test) == (c, n_train, n_test)
    assert DATASETS["nabirds"].num_classes == 555
    assert DATASETS["flowers"].expected_size("all") == 8189
    assert DATASETS["aircraft"].load_class() is real.AircraftDataset
    assert DATASETS["cub"].files[0].md5 == "97eceeb196236b17998738112f37df78"
    assert real.DATASETS is download.DATASETS is DATASETS  # one registry, shared
    with pytest.raises(KeyError, match="unknown dataset"):
        open_dataset("imagenet", "/nowhere")
    with pytest.raises(KeyError, match="unknown dataset"):
        prepare("imagenet", "/nowhere")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_entry_is_complete(name):
    """Each entry names a loader that imports and is a Dataset, in the entry's folder, and says
    how to get the data (official files, or what to do by hand)."""
    info = DATASETS[name]
    cls = info.load_class()
    assert isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)
    if issubclass(cls, FGVCDataset):
        assert cls.folder == info.folder and cls.name == name
    assert info.files or info.manual
    assert all(f.filename for f in info.files)
    assert info.n_train > 0 and info.n_test > 0 and info.num_classes > 1
    assert info.expected_size("all") == info.n_train + info.n_test
    if info.manual:
        assert "{base}" in info.manual


@pytest.mark.parametrize("compress", [False, True])
def test_loadmat_roundtrip(tmp_path, compress):
    path = write_mat(tmp_path / "x.mat", {
        "labels": [[1, 2, 300]], "col": [[0.5], [1.5]], "name": "Acura TL",
        "files": ["a/b.jpg", "c/d.jpg", ""],
        "annotations": [{"fname": "00001.jpg", "class": 3}, {"fname": "x.jpg", "class": 196}]},
        compress)
    m = real.loadmat(path)
    assert m["labels"].shape == (1, 3) and m["labels"].tolist() == [[1, 2, 300]]
    assert m["col"].shape == (2, 1) and m["col"].ravel().tolist() == [0.5, 1.5]
    assert m["name"] == "Acura TL" and m["files"] == ["a/b.jpg", "c/d.jpg", ""]
    assert [(a["fname"], int(a["class"][0, 0])) for a in m["annotations"]] == [
        ("00001.jpg", 3), ("x.jpg", 196)]


def test_loadmat_rejects_non_v5(tmp_path):
    (tmp_path / "h5.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(126) + b"\0\2" + b"\x89HDF")
    with pytest.raises(ValueError, match="v7.3"):
        real.loadmat(tmp_path / "h5.mat")
    (tmp_path / "cut.mat").write_bytes(mat_bytes({"labels": [[1, 2, 3]] * 4})[:150])
    with pytest.raises(ValueError, match="truncated"):
        real.loadmat(tmp_path / "cut.mat")


def test_corrupt_image_names_file(env, tmp_path):
    folder = prepare("flowers", tmp_path, progress=False)
    (folder / "jpg" / "image_00001.jpg").write_bytes(image_bytes(1, 0)[:20])
    ds = open_dataset("flowers", tmp_path, "train")
    i = ds.image_ids.index("image_00001")
    with pytest.raises(OSError, match="image_00001.jpg"):
        ds[i]
