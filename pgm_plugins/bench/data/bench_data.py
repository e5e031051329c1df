"""What a benchmark data set is: :class:`BenchData` (arrays, labels, groups, folds, digest).

A data set registered through ``pgm_register_datasets`` is a factory
``factory(protocol: str | None = None, data_dir: str | None = None, **options) -> BenchData``.
Every host and arm of a suite reads the same :class:`BenchData`, and its ``folds(seed)`` give
every arm the same train / valid / test rows, so cells pair up across arms.

The helpers below are what every built-in factory shares: :func:`check_protocol` (the first
valid protocol is the default), :func:`fixed_folds` (one split for every seed: seeds repeat the
training, not the split), :func:`require_file` (the ``path=`` option of file data sets) and
:func:`sha256_of` (the digest a record stores).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pgm_plugins.errors import ConfigError, UnknownNameError, choices_text, did_you_mean

__all__ = [
    "BenchData",
    "Fold",
    "check_protocol",
    "fixed_folds",
    "require_file",
    "sha256_of",
]

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Fold:
    """Row indices of one (fold, seed): disjoint, and never splitting a group."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    fold: int = 0
    seed: int = 0


@dataclass
class BenchData:
    """One data set under one protocol, as every host and arm of a suite sees it.

    Attributes:
        name, protocol: registered name (``"mosi-utterance"``) and protocol (``"clean"``).
        description: one line for reports (source, size, what was changed).
        x: modality -> float32 ``[N, d]`` (one vector per sample) or ``[N, T, d]`` (sequence).
        lengths: sequence modality -> int64 ``[N]`` real steps, at the front (others absent).
        y: ``[N]`` int64 class labels (classification) or float32 targets (regression).
        task: ``"classification"`` or ``"regression"``.
        num_classes: classes of a classification task (None for regression).
        groups: ``[N]`` group of each row (video, speaker) or None.
        folds: ``seed -> [Fold, ...]``: the protocol's folds for one seed (same for every arm).
        digest: SHA-256 over what was read (file names and bytes, in a fixed order).
        primary: the metric the report leads with (``"acc2"``, ``"acc"``, ``"mae"`` ...).
        changes: every departure from the source data, disclosed in reports.
        extras: protocol-specific facts (context-window order of each row, ground truth of
            the synthetic data, ...); hosts that need them say which keys they read.
        redraw: optional ``(train_rows, rng) -> {modality: [len(train_rows), ...]}``: fresh
            training inputs for one epoch (av-digits re-draws its image pairs within digit).
    """

    name: str
    protocol: str
    description: str
    x: dict[str, np.ndarray]
    y: np.ndarray
    task: Task
    folds: Callable[[int], list[Fold]]
    digest: str
    primary: str
    num_classes: int | None = None
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray | None = None
    changes: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    redraw: Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        n = len(self.y)
        for m, arr in {**self.x, **self.lengths}.items():
            if len(arr) != n:
                raise ValueError(
                    f"{self.name}: modality {m!r} has {len(arr)} rows, the labels {n}; "
                    "every array must have one row per sample."
                )
        if self.task == "classification" and not np.issubdtype(self.y.dtype, np.integer):
            raise ValueError(
                f"{self.name}: a classification task needs integer labels, got {self.y.dtype}."
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.x)

    @property
    def widths(self) -> dict[str, int]:
        return {m: int(a.shape[-1]) for m, a in self.x.items()}

    def summary(self) -> Mapping[str, Any]:
        """What a result record stores about the data (no arrays)."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "description": self.description,
            "rows": len(self),
            "shapes": {m: list(a.shape[1:]) for m, a in self.x.items()},
            "task": self.task,
            "num_classes": self.num_classes,
            "digest": self.digest,
            "primary": self.primary,
            "changes": list(self.changes),
        }


def check_protocol(name: str, given: str | None, valid: tuple[str, ...]) -> str:
    """``given`` (default: the first of ``valid``) after checking it is one of ``valid``."""
    if given is None:
        return valid[0]
    if given not in valid:
        raise UnknownNameError(
            f"data set {name!r} has no protocol {given!r}; valid: {choices_text(valid)}."
            + did_you_mean(str(given), valid)
        )
    return given


def fixed_folds(
    train: np.ndarray, valid: np.ndarray, test: np.ndarray
) -> Callable[[int], list[Fold]]:
    """One fixed split, the same for every seed (seeds repeat the training, not the split)."""

    def folds(seed: int) -> list[Fold]:
        return [Fold(train=train, valid=valid, test=test, fold=0, seed=seed)]

    return folds


def sha256_of(*parts: bytes | str) -> str:
    """SHA-256 over ``parts`` in order (strings as UTF-8)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def require_file(name: str, path: Any) -> Path:
    """The ``path=`` option of data set ``name`` as an existing file, or an error saying how to
    give it / which file is missing."""
    if path is None:
        raise ConfigError(
            f"data set {name!r} needs option path=<file> (in a suite: [options] path = "
            f'"..."; in Python: load_dataset({name!r}, path=...)).'
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"data set {name!r}: file {str(p)!r} not found (option path={str(path)!r}, resolved "
            f"to {p.resolve()})."
        )
    return p
