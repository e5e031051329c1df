"""Prerequisites: artifacts a cell needs that are built once and reused (a first training stage
whose trained model later cells start from, say).

A cell declares them through :meth:`pgm_plugins.bench.runner.Runner.prerequisites`. The grid
(``pgm_plugins.bench.executors.run_grid``) builds every missing one before the cells that need
it, claimed like a cell (``artifact-<digest>`` in ``.claims``) so two runs of one suite build it
once, on whichever executor runs the grid. The build function writes its files into a fresh
temporary folder; the driver renames that folder to ``<folder>/artifacts/<digest>/`` when the
build succeeds, so the folder appears whole or not at all and a second run finds it and reuses
it. A folder that lost one of the files the prerequisite declares (``files``: a copy that left
large files behind, a hand clean-up) is not built: the next run moves it aside and builds it
again. On a Ray cluster the results folder must be on a file system the workers share.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACTS_DIR", "Prerequisite"]

ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True, eq=False)
class Prerequisite:
    """An artifact identified by ``key`` (JSON-ready: what shapes it), built by ``build``.

    ``build``: ``"module:function"``, a function importable in every worker, called as
    ``function(runner, prerequisite, out)`` with the worker's
    :class:`~pgm_plugins.bench.runner.Runner` and an empty folder ``out`` to write into. A
    reference, not a function object, so a prerequisite pickles to any worker. ``files``: the
    files (names inside the folder) a built artifact must hold, none of them empty; not part of
    the digest."""

    key: dict[str, Any]
    build: str
    description: str = field(default="", compare=False)
    files: tuple[str, ...] = field(default=(), compare=False)

    @property
    def digest(self) -> str:
        """SHA-256 (first 32 hex) of the key and the build reference, as canonical JSON."""
        text = json.dumps(
            {"key": self.key, "build": self.build},
            sort_keys=True,
            default=str,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def claim(self) -> str:
        """The name of its claim (see :mod:`pgm_plugins.bench.claims`)."""
        return f"artifact-{self.digest}"

    def path(self, folder: str | Path) -> Path:
        """Where the built artifact lives: ``<folder>/artifacts/<digest>/``."""
        return Path(folder) / ARTIFACTS_DIR / self.digest

    def missing(self, folder: str | Path) -> list[str]:
        """The declared ``files`` the built folder lacks (or holds empty): every one of them
        when the folder is not there, none when it is whole."""
        path = self.path(folder)
        return [n for n in self.files if not (path / n).is_file() or (path / n).stat().st_size == 0]

    def built(self, folder: str | Path) -> bool:
        """Whether the artifact is built and whole under ``folder`` (see :meth:`missing`)."""
        return self.path(folder).is_dir() and not self.missing(folder)

    def discard_damaged(self, folder: str | Path) -> list[str]:
        """Remove a built folder that is not whole (call it holding the prerequisite's claim),
        so it can be built again; returns the files it lacked (empty when there was nothing to
        remove). It is renamed aside first, so a kill part-way leaves no half-removed folder
        under the artifact's name."""
        path = self.path(folder)
        if not path.is_dir():
            return []
        lacking = self.missing(folder)
        if lacking:
            aside = path.parent / f".{path.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            os.replace(path, aside)
            shutil.rmtree(aside, ignore_errors=True)
        return lacking

    def text(self) -> str:
        return f"prerequisite {self.description or self.digest[:12]}"

    def function(self) -> Callable[..., Any]:
        """The build function ``build`` names (imported now)."""
        module, sep, name = self.build.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"prerequisite build reference {self.build!r}: give 'module:function'")
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise ValueError(f"prerequisite build reference {self.build!r} is not callable")
        return target
