"""Reading export files: fingerprints, decompression, and telling a text file from a binary."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import zlib
from pathlib import Path

from isal import igzip, isal_zlib

HASH_CHUNK = 1 << 20
_MAX_SHOWN = 80  # longest value quoted in a rejection reason


class UnreadableFile(Exception):
    """The file cannot be read at all; nothing of it is loaded."""


def fingerprint(path: Path) -> tuple[str, int]:
    """sha256 hex of the file's bytes as stored (streamed) and its size."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Fingerprint:
    """sha256 and size of a file's stored bytes, fed while the file is read (see open_binary)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._digest.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _HashingReader(io.RawIOBase):
    """A stored file whose bytes go to a Fingerprint as they are read."""

    def __init__(self, raw: io.RawIOBase, fingerprint: Fingerprint) -> None:
        self.raw, self.fingerprint = raw, fingerprint

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        if count:
            with memoryview(buffer) as view:
                self.fingerprint.update(view[:count])
        return count

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_binary(path: Path, fingerprint: Fingerprint | None = None) -> io.BufferedIOBase:
    """The file's bytes, decompressed when its name ends in .gz.

    With ``fingerprint``, every stored byte read (compressed bytes for .gz) is hashed on the
    way, so that reading the whole file once also gives its fingerprint. ``fileobj`` of
    the returned object is the stored file (its ``tell`` is how far reading has come).
    """
    stored: io.RawIOBase = open(path, "rb", buffering=0)
    if fingerprint is not None:
        stored = _HashingReader(stored, fingerprint)
    if path.name.endswith(".gz"):
        return _GzipOwning(stored)
    return stored


# Errors of a corrupt or truncated .gz file (the loader reports the file, not a crash).
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, isal_zlib.error)


class _GzipOwning(igzip.IGzipFile):
    """A gzip reader over ``stored`` that closes it too. ISA-L's inflate (python-isal, the
    same API as the standard gzip module) decompresses about 2-3 times faster than zlib."""

    def __init__(self, stored: io.RawIOBase) -> None:
        super().__init__(fileobj=stored, mode="rb")
        self._stored = stored

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stored.close()


def os_error_message(path: Path, exc: BaseException) -> str:
    """What went wrong reading ``path`` and what to do about it."""
    if isinstance(exc, PermissionError):
        return (
            f"cannot read {path}: permission denied; give the loader read access to the "
            "file (or move it out of the landing directory) and run the load again"
        )
    if isinstance(exc, GZIP_ERRORS) or path.name.endswith(".gz"):
        return (
            f"cannot decompress {path}: {exc or type(exc).__name__} (corrupt or truncated "
            "gzip); copy or export the file again, then run the load again"
        )
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot read {path}: {detail}; check the file and run the load again"


def binary_hint(head: bytes, what: str) -> str | None:
    """What to do about a file whose first bytes are not text, or None if they are."""
    if head.startswith(b"\x1f\x8b"):
        if what == "JSON Lines":
            return "it looks gzip-compressed: name it .jsonl.gz"
        return "it looks gzip-compressed: decompress it first"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it looks UTF-16 encoded: export it again as UTF-8"
    if head.startswith(b"PK\x03\x04"):
        return f"it looks like a zip archive or an Excel workbook: export it as {what}"
    if b"\x00" in head:
        return f"replace it with a {what} export or move it out of the landing directory"
    return None


def shown(value: object) -> str:
    """A value quoted in a message, cut to at most 80 characters."""
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
