"""The exceptions of the data layer, in one place, so that every reader fails the same way.

Why a module of its own: readers, raster decoding, downloads and the prediction tool
(`fed_uml.predict`) all raise and catch these, and none of them should have to import a
reader to do so. Every message names what is wrong and where: the file (`DataError`), the
folder and the setting to change (`DatasetNotFoundError`), the URL or both hashes
(`DownloadError`, `ChecksumError`).
"""

from __future__ import annotations

from pathlib import Path

from fed_uml.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The data set is not where the settings say; the message names the path and the setting."""


class DataError(UserError, ValueError):
    """One input file (or one line of an index file) is bad; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ChecksumError(UserError, ValueError):
    """A downloaded (or already present) file does not have the published checksum."""


class DownloadError(UserError, OSError):
    """A file could not be fetched."""


class StoreError(DataError):
    """A prepared data store cannot be used or written.

    It is incomplete, corrupt, of another format version, or the disk is full; the message names its
    folder and what to do.
    """
