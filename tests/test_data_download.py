"""dataset.download=true against a local HTTP server on 127.0.0.1 (no internet in tests)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from fed_uml.data import load_dataset
from fed_uml.data.download import (
    Resource,
    download_url,
    extract_archive,
    fetch_resources,
)
from fed_uml.data.errors import ChecksumError, DownloadError
from fed_uml.data.eurosat import EuroSAT
from tests.fixtures.make_fixtures import dataset_config, make_eurosat_ms


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (port chosen by the OS); yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def eurosat_zip(tmp_path: Path, dest: Path) -> Path:
    """A zip of a tiny EuroSAT MS fixture, class folders at the top, like a published archive."""
    stage = make_eurosat_ms(tmp_path / "stage", per_class_train=1, per_class_test=1)
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(stage).as_posix())
    return dest


def test_download_url_verifies_checksums(served, tmp_path):
    folder, url = served
    (folder / "a.txt").write_bytes(b"hello")
    good_md5 = hashlib.md5(b"hello").hexdigest()
    good_sha = hashlib.sha256(b"hello").hexdigest()
    out = download_url(f"{url}/a.txt", tmp_path / "dl" / "a.txt", md5=good_md5, sha256=good_sha)
    assert out.read_bytes() == b"hello"
    with pytest.raises(ChecksumError) as e:
        download_url(f"{url}/a.txt", tmp_path / "dl" / "b.txt", md5="0" * 32)
    msg = str(e.value)
    assert "b.txt" in msg and "0" * 32 in msg and good_md5 in msg
    assert not (tmp_path / "dl" / "b.txt").exists()
    assert not list((tmp_path / "dl").glob(".*part"))
    with pytest.raises(DownloadError, match="404"):
        download_url(f"{url}/missing.zip", tmp_path / "dl" / "c.zip")


def test_download_true_fetches_and_loads(served, tmp_path, monkeypatch):
    folder, url = served
    archive = eurosat_zip(tmp_path, folder / "EuroSATfixture.zip")
    res = Resource(f"{url}/EuroSATfixture.zip", "EuroSATfixture.zip", md5=md5(archive))
    monkeypatch.setattr(EuroSAT, "RESOURCES", (res,))
    root = tmp_path / "data"
    data = load_dataset(dataset_config("eurosat_ms", root, download=True))
    assert (root / "eurosat_ms" / "Forest").is_dir()
    assert len(data["rgb"].train) + len(data["nir_swir"].train) == 10
    # A second run finds the data and downloads nothing.
    (folder / "EuroSATfixture.zip").unlink()
    load_dataset(dataset_config("eurosat_ms", root, download=True))


def test_checksum_mismatch_stops_the_download(served, tmp_path, monkeypatch):
    folder, url = served
    eurosat_zip(tmp_path, folder / "EuroSATfixture.zip")
    res = Resource(f"{url}/EuroSATfixture.zip", "EuroSATfixture.zip", md5="f" * 32)
    monkeypatch.setattr(EuroSAT, "RESOURCES", (res,))
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="md5 checksum mismatch"):
        load_dataset(dataset_config("eurosat_ms", root, download=True))
    assert not (root / "eurosat_ms" / "EuroSATfixture.zip").exists()
    assert not (root / "eurosat_ms" / "Forest").exists()


def test_archives_are_unpacked_safely(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.txt").write_text("x")
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(src / "x.txt", arcname="inner/x.txt")
    assert (extract_archive(tgz, tmp_path / "out") / "inner" / "x.txt").read_text() == "x"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escaped.txt", "no")
    with pytest.raises(DownloadError, match="outside"):
        extract_archive(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()


def test_present_file_with_a_bad_checksum_is_refused(tmp_path):
    (tmp_path / "split.txt").write_text("stale")
    with pytest.raises(ChecksumError):
        fetch_resources([Resource("http://127.0.0.1:9/never", "split.txt", md5="0" * 32, extract=False)], tmp_path)
    assert not (tmp_path / "split.txt").exists()
