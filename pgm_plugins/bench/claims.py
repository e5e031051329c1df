"""Per-cell claims: which run works on which cell of a suite's results folder.

A claim is an ``fcntl.flock`` on ``<folder>/.claims/<name>.lock`` (``<name>``: the cell's result
file stem, or ``artifact-<digest>`` for a prerequisite), held by the driver process for as long
as the cell runs, whichever executor runs it. The kernel drops the lock when that process dies,
so a killed run frees its cells at once and a second ``pgm bench run`` of the same suite takes
them over; two runs started together each skip what the other holds or finished and so share
the grid. The holder's PID is written into the lock file so the other run can name it.

Only the holder of a cell's claim writes that cell's result file, so a leftover temporary file
of the cell (``.<file>.*.tmp``, from a writer that was killed) is removed when its claim is
taken, never while another run may be writing it. ``docs/architecture.md`` shows where this
sits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["Claim", "Claims"]

CLAIMS_DIR = ".claims"


class Claim:
    """A held claim (an open, locked file descriptor); :meth:`release` lets it go."""

    def __init__(self, name: str, path: Path, fd: int) -> None:
        self.name = name
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the claim go (idempotent). The lock file stays: removing it could let two
        processes lock two different files of one name."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class Claims:
    """The claims of one results folder (``<folder>/.claims``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.root = self.folder / CLAIMS_DIR

    def path(self, name: str) -> Path:
        return self.root / f"{name}.lock"

    def take(self, name: str) -> Claim | None:
        """Claim ``name`` now, or None when another process (or another claim of this one)
        holds it. Never blocks."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return Claim(name, path, fd)

    def holder(self, name: str) -> str | None:
        """The PID (as text) of the process holding ``name``, ``"unknown"`` when it is held but
        names no PID yet, or None when nobody holds it."""
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def clean_temporaries(self, file: Path) -> None:
        """Remove the leftover temporary files of ``file`` (``.<name>.*.tmp`` beside it, as
        :func:`pgm_plugins._io.atomic_write_text` names them); call only while holding its
        claim."""
        for stale in file.parent.glob(f".{file.name}.*.tmp"):
            stale.unlink(missing_ok=True)
