"""Download and unpack the official FGVC archives: `prepare(name, root)`.

Each dataset ends up in its own folder under `root` (see fglib.data.real for the layouts); what
to fetch for it is its entry in fglib.data.registry.DATASETS:

1. every file is streamed to `<root>/.downloads/<file>.part` (resumed with an HTTP Range request
   when the server supports it, restarted otherwise), checked against its size and known
   checksum, then renamed atomically to `<root>/.downloads/<file>`;
2. archives are extracted into a staging folder `<root>/.fglib-staging-<name>/` with a filter
   that refuses absolute paths, `..` and links leaving the folder;
3. the staged dataset is opened split by split (every listed image must exist), a marker file
   `.fglib-prepared` is written into it and the folder is renamed into place.

So an interrupted or failed run leaves at most the `.part` file, never a partial dataset, and a
second call is a no-op unless force=True. FGLIB_MIRROR (or url=) replaces the official base URL:
files are then fetched from `<mirror>/<file name>`.

CLI: python -m fglib.data.download prepare <name> --root DIR [--force] [--mirror URL]
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from fglib.data.real import open_dataset
from fglib.data.registry import DATASETS, DatasetInfo, Remote

LOG = logging.getLogger("fglib.data")
MARKER = ".fglib-prepared"
CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A file could not be downloaded completely."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its known checksum."""


class ArchiveError(RuntimeError):
    """An archive is corrupt, truncated or unsafe to extract."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the target folder."""


class ManualDownloadError(RuntimeError):
    """The dataset has no automatic download; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# downloading


def _progress_disabled(progress: bool) -> bool:
    """No bar when asked, on CI, or when stderr is not a terminal."""
    return not progress or bool(os.environ.get("CI")) or not sys.stderr.isatty()


def _url_for(remote: Remote, mirror: str | None) -> str | None:
    """The URL to fetch: the mirror keeps only the file name; None if there is no source."""
    if mirror:
        return f"{mirror.rstrip('/')}/{remote.filename}"
    return None if remote.url is None or remote.url.startswith("manual:") else remote.url


def _open(url: str, offset: int) -> Any:
    """HTTP response for url, asking for bytes from `offset` on."""
    headers = {"User-Agent": "fglib"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range not satisfiable: restart from scratch
            return _open(url, 0)
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot reach {url}: {e}.") from None


def _copy(response: Any, out: BinaryIO, hashes: list[Any], total: int | None, done: int,
          desc: str, progress: bool) -> int:
    """Stream response into out with a progress bar; returns the bytes written."""
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
              desc=desc, disable=_progress_disabled(progress)) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            for h in hashes:
                h.update(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    return done


def _hash_prefix(path: Path, hashes: list[Any]) -> None:
    """Feed an existing .part file into the running hashes (for a resumed download)."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes:
                h.update(chunk)


def fetch(url: str, dest: Path, md5: str | None = None, sha256: str | None = None,
          progress: bool = True) -> Path:
    """Download url to dest via dest.part (resumed if the server allows); verify; rename."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    hashes = [hashlib.md5(), hashlib.sha256()]
    with _open(url, offset) as response:
        resumed = offset > 0 and response.status == 206
        if resumed:
            _hash_prefix(part, hashes)
        else:
            offset = 0  # server ignored Range (or nothing to resume): start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out:
            try:
                done = _copy(response, out, hashes, total, offset, dest.name, progress)
            except (OSError, ValueError, http.client.HTTPException) as e:  # connection dropped
                raise DownloadError(f"download of {url} was interrupted ({e}); run again to "
                                    f"resume from {part}.") from None
    if total is not None and done != total:
        raise DownloadError(f"download of {url} stopped after {done} of {total} bytes; run "
                            f"again to resume from {part}.")
    _verify(part, url, md5, hashes[0].hexdigest(), "md5")
    _verify(part, url, sha256, hashes[1].hexdigest(), "sha256")
    os.replace(part, dest)  # atomic: dest exists only when complete and verified
    return dest


def _verify(part: Path, url: str, expected: str | None, actual: str, kind: str) -> None:
    """ChecksumError (and the bad file deleted) when a known checksum differs."""
    if expected and expected.lower() != actual:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{kind} mismatch for {url}: expected {expected}, got {actual}. "
                            "The file was deleted; the source or mirror serves a different or "
                            "damaged file.")


# ---------------------------------------------------------------------------------------------
# extracting


def _safe_member(member: tarfile.TarInfo, strip: str) -> tarfile.TarInfo | None:
    """Member renamed (prefix stripped) after refusing absolute paths and `..`."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: absolute path or '..'.")
    if strip and name.startswith(strip):
        name = name[len(strip):]
    elif strip and name.rstrip("/") == strip.rstrip("/"):
        return None  # the stripped top folder itself
    if not name.strip("/."):
        return None
    changes: dict[str, Any] = {"name": name}
    if member.islnk() and strip and member.linkname.startswith(strip):
        changes["linkname"] = member.linkname[len(strip):]
    return member.replace(**changes, deep=False)


def extract(archive: Path, dest: Path, strip: str = "") -> None:
    """Extract a tar archive into dest, refusing unsafe members; ArchiveError if corrupt."""
    dest.mkdir(parents=True, exist_ok=True)

    def member_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        renamed = _safe_member(member, strip)
        return None if renamed is None else tarfile.data_filter(renamed, path)

    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter=member_filter)
    except UnsafeArchiveError:
        raise
    except tarfile.FilterError as e:  # links or special files escaping dest
        raise UnsafeArchiveError(f"refusing to extract {archive.name}: {e}.") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ArchiveError(f"{archive.name} is corrupt or truncated ({e}); it was deleted, run "
                           "again to download it anew.") from None


# ---------------------------------------------------------------------------------------------
# prepare


def _mirror(url: str | None) -> str | None:
    """The base URL to use instead of the official one (argument, else FGLIB_MIRROR)."""
    return url or os.environ.get("FGLIB_MIRROR") or None


def _verify_dataset(name: str, root: Path) -> None:
    """Open the train and test splits under root: every listed image must exist."""
    for split in ("train", "test"):
        open_dataset(name, root, split)


def _write_marker(folder: Path, name: str, files: list[str]) -> None:
    (folder / MARKER).write_text(json.dumps({"dataset": name, "files": files}, indent=1) + "\n")


def prepare(name: str, root: str | Path, url: str | None = None, force: bool = False,
            progress: bool = True, keep_archives: bool = False) -> Path:
    """Download, check and unpack dataset `name` under root; returns the dataset folder.

    url: base URL of a mirror holding the official file names (default: FGLIB_MIRROR, else the
    official sources). A folder already marked as prepared is left alone unless force=True; an
    unmarked complete folder (unpacked by hand) is verified and marked. root may also be the
    dataset folder itself (e.g. .../CUB_200_2011).
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}.")
    source, root = DATASETS[name], Path(root).expanduser()
    if root.name == source.folder:  # the dataset folder was given: its parent is the root
        root = root.parent
    folder = root / source.folder
    if not force and (folder / MARKER).is_file():
        LOG.info("%s is already prepared in %s", name, folder)
        return folder
    if not force and folder.is_dir():
        return _adopt(name, root, folder)
    # with force, the old folder is replaced only once the new one is complete (see _install)
    mirror = _mirror(url)
    if source.manual and not mirror:
        raise ManualDownloadError(f"{name}: " + source.manual.format(base=folder))
    downloads = _download_all(source, root / ".downloads", mirror, force, progress)
    _install(name, root, source, downloads)
    if not keep_archives:
        for path in downloads:
            path.unlink(missing_ok=True)
        if not any((root / ".downloads").iterdir()):
            (root / ".downloads").rmdir()
    LOG.info("%s prepared in %s", name, folder)
    return folder


def _adopt(name: str, root: Path, folder: Path) -> Path:
    """Mark a folder put there by hand, after checking that it opens."""
    try:
        _verify_dataset(name, root)
    except (FileNotFoundError, ValueError) as e:
        raise FileExistsError(f"{folder} exists but is not a complete {name} dataset ({e}). "
                              "Remove it or pass force=True (--force) to download anew.") from e
    _write_marker(folder, name, [])
    return folder


def _download_all(source: DatasetInfo, downloads: Path, mirror: str | None, force: bool,
                  progress: bool) -> list[Path]:
    """Fetch every file of the source (reusing complete, verified earlier downloads)."""
    paths = []
    for remote in source.files:
        dest = downloads / remote.filename
        if force:
            dest.unlink(missing_ok=True)
        url = _url_for(remote, mirror)
        if url is None:
            raise ManualDownloadError(f"{remote.filename} has no official source; pass a mirror.")
        if not dest.is_file():
            fetch(url, dest, remote.md5, remote.sha256, progress)
        paths.append(dest)
    return paths


def _install(name: str, root: Path, source: DatasetInfo, downloads: list[Path]) -> None:
    """Unpack into a staging folder, verify, mark, and rename into place."""
    staging = root / f".fglib-staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staged = staging / source.folder
    try:
        for remote, path in zip(source.files, downloads):
            target = staged / remote.into
            if remote.is_archive:
                _extract_or_discard(path, target, remote.strip)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / remote.filename)
        try:
            _verify_dataset(name, staging)
        except (FileNotFoundError, ValueError) as e:  # e.g. a tar cut at a member boundary
            for path in downloads:
                path.unlink(missing_ok=True)
            raise ArchiveError(f"the downloaded {name} files are incomplete ({e}); they were "
                               "deleted, run again to download them anew.") from None
        _write_marker(staged, name, [p.name for p in downloads])
        final = root / source.folder
        if final.exists():  # force=True: swap the old folder out only now
            os.replace(final, staging / "old")
        os.replace(staged, final)  # atomic: the dataset appears complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_or_discard(archive: Path, target: Path, strip: str) -> None:
    """Extract; a corrupt archive is deleted so that the next run downloads it anew."""
    try:
        extract(archive, target, strip)
    except UnsafeArchiveError:
        raise
    except ArchiveError:
        archive.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """`prepare <name> --root DIR [--force] [--mirror URL] [--no-progress]`; returns exit code."""
    parser = argparse.ArgumentParser(prog="python -m fglib.data.download",
                                     description="Download and unpack an FGVC dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download, verify and unpack a dataset")
    p.add_argument("name", choices=sorted(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="data root (one folder per dataset)")
    p.add_argument("--force", action="store_true", help="download and unpack again")
    p.add_argument("--mirror", default=None, help="base URL serving the official file names")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = prepare(args.name, args.root, url=args.mirror, force=args.force,
                         progress=not args.no_progress, keep_archives=args.keep_archives)
    except (DownloadError, ArchiveError, ManualDownloadError, FileExistsError,
            FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
