"""`dataset.download=true`: fetch a data set's files from their official URLs, check, unpack.

Why here and not in each reader: every data set needs the same three steps (download to a
temporary name, verify the checksum, unpack safely) and the same failure behaviour: a file
whose checksum does not match is deleted and reported with both hashes, never used.

Each reader lists its files as `Resource` class constants (URL, file name, md5 and/or
sha256, whether to unpack). Files already present and verified are not fetched again.
Archives are unpacked into the data set's folder under the data root; zip, tar, tar.gz,
tar.bz2 and tar.xz are supported with the standard library, tar.zst needs the optional
package `zstandard`. Members that would land outside the target folder are refused. The
errors raised (`DownloadError`, `ChecksumError`) are those of `fed_uml.data.errors`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fed_uml.data.errors import ChecksumError, DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of a data set as published: where it is and what its checksum must be."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = True


def file_hash(path: str | Path, algorithm: str) -> str:
    """Hex digest of the file at `path` with `algorithm` (a `hashlib` name), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise ChecksumError naming the file and both hashes when a published checksum differs."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_hash(path, algorithm)
            if actual.lower() != expected.lower():
                raise ChecksumError(
                    f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual} "
                    "(the file was removed; it is corrupt, incomplete or not the published version)"
                )


def download_url(url: str, dest: str | Path, md5: str | None = None, sha256: str | None = None,
                 timeout: float = 60.0) -> Path:
    """Download `url` to the file `dest` through a temporary name; verify before renaming."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "fed-uml"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out, CHUNK)
            except Exception as e:  # URLError, HTTPError, timeouts
                raise DownloadError(f"cannot download {url} to {dest}: {e}") from e
        try:
            verify(tmp, md5, sha256)
        except ChecksumError as e:
            raise ChecksumError(str(e).replace(tmp, str(dest)) + f" [source: {url}]") from None
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _inside(target: Path, member: str) -> bool:
    dest = (target / member).resolve()
    return dest == target.resolve() or target.resolve() in dest.parents


def extract_archive(path: str | Path, target: str | Path) -> Path:
    """Unpack a zip or tar archive into `target`, refusing members that escape it."""
    path, target = Path(path), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for m in z.namelist():
                if not _inside(target, m):
                    raise DownloadError(f"{path}: archive member {m!r} would be written outside {target}")
            z.extractall(target)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(path) as t:
            t.extractall(target, filter="data")
    elif name.endswith(".tar.zst"):
        try:
            import zstandard
        except ImportError as e:
            raise DownloadError(
                f"{path}: unpacking .tar.zst needs the package 'zstandard' (pip install zstandard), "
                f"or unpack it by hand into {target}"
            ) from e
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as t:
                t.extractall(target, filter="data")
    else:
        raise DownloadError(f"{path}: unknown archive type")
    return target


def fetch_resources(resources: Iterable[Resource], target: str | Path) -> Path:
    """Download (if needed), verify and unpack every resource into the folder `target`."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for r in resources:
        dest = target / r.filename
        if not (r.md5 or r.sha256):
            log.warning("%s has no published checksum; it is used unverified", r.url)
        if dest.exists():
            log.info("verifying %s", dest)
            try:
                verify(dest, r.md5, r.sha256)
            except ChecksumError:
                dest.unlink()
                raise
        else:
            log.info("downloading %s to %s", r.url, dest)
            download_url(r.url, dest, r.md5, r.sha256)
        if r.extract:
            log.info("unpacking %s", dest)
            extract_archive(dest, target)
    return target
