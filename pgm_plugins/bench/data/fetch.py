"""Generic fetching: download, SHA-256 verification, atomic writes. Knows no data set.

Nothing here runs unless a user asks (``pgm bench fetch NAME``, i.e.
:func:`pgm_plugins.bench.data.catalog.fetch_dataset`): the loaders read local files and never
download at run time. Every file is downloaded into a temporary file next to its destination,
its SHA-256 is checked, and only then is it renamed into place, so an interrupted or corrupted
download leaves nothing behind that a loader could read. Each data set's sources and recipe live
with the data set (``mosi_fetch``, ``av_digits_fetch``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgm_plugins._io import new_file_mode
from pgm_plugins.errors import PgMError

__all__ = [
    "DigestError",
    "FetchError",
    "download",
    "fetch",
    "sha256_bytes",
    "sha256_file",
    "verify_bytes",
    "write_verified",
]

CHUNK = 1 << 16


class DigestError(PgMError, ValueError):
    """A file whose SHA-256 differs from the one recorded for it."""


class FetchError(PgMError, OSError):
    """A download failed (network error, short read); nothing was left at the destination."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_bytes(path: str | os.PathLike[str], data: bytes, expected: str | None) -> None:
    """Raise :class:`DigestError` when ``data`` (the bytes read from ``path``) does not hash to
    ``expected``; no check when ``expected`` is None."""
    if expected is None:
        return
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestError(
            f"{path}: SHA-256 {actual}, expected {expected}. The file differs from the release "
            "this loader knows (modified, truncated or another version). Restore the original "
            "(`sha256sum -c SHA256SUMS` in the data folder lists the files that differ) or fetch "
            "it again with `pgm bench fetch`; `verify=False` reads a modified copy on purpose."
        )


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    timeout: float = 60.0,
    opener: Callable[..., Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` if ``dest`` is not already there with digest ``sha256``.

    The bytes go to a temporary file in ``dest``'s folder; the file is renamed to ``dest`` only
    when its SHA-256 equals ``sha256`` and the server sent every byte it announced. A wrong
    digest raises :class:`DigestError`, a broken or short transfer :class:`FetchError`; in both
    cases nothing is left at ``dest`` or in the folder.
    """
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}.")
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        got = 0
        open_url = opener or urllib.request.urlopen
        try:
            with open_url(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                announced = resp.headers.get("Content-Length")
                for block in iter(lambda: resp.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
                    got += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise FetchError(
                f"download of {url} failed after {got} bytes: {type(exc).__name__}: {exc}. "
                f"Nothing was written to {dest}; run the fetch again."
            ) from exc
        if announced is not None and got != int(announced):
            raise FetchError(
                f"download of {url} stopped after {got} of {announced} bytes; nothing was "
                f"written to {dest}; run the fetch again."
            )
        actual = h.hexdigest()
        if actual != sha256:
            raise DigestError(
                f"{url}: downloaded {got} bytes with SHA-256 {actual}, expected {sha256}; "
                f"nothing was written to {dest}. The source changed or the transfer was "
                "corrupted: check the URL, or report it if the source moved."
            )
        os.chmod(tmp, new_file_mode(dest))  # a temporary file is 0o600: respect the umask
        os.replace(tmp, dest)
    finally:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return dest


def write_verified(dest: Path, data: bytes, expected: str) -> None:
    """Write ``data`` (content regenerated from code) to ``dest`` atomically, only when it hashes
    to ``expected``; a ``dest`` already there with that digest is left untouched (a read-only
    data folder stays so)."""
    from pgm_plugins._io import atomic_write_bytes

    if dest.is_file() and sha256_file(dest) == expected:
        return
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestError(
            f"{dest}: regenerated content has SHA-256 {actual}, expected {expected}; nothing "
            "was written (the generator or numpy's random streams changed)."
        )
    atomic_write_bytes(dest, data)


def download(url: str, dest: Path, timeout: float) -> None:
    """Plain download of ``url`` to ``dest``, for files the caller verifies as a set (a manifest
    digest over many files); a short or broken transfer raises :class:`FetchError`."""
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            announced = resp.headers.get("Content-Length")
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                got += len(block)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise FetchError(f"download of {url} failed: {type(exc).__name__}: {exc}.") from exc
    if announced is not None and got != int(announced):
        raise FetchError(f"download of {url} stopped after {got} of {announced} bytes.")
