"""What a benchmark data set is: :class:`BenchData` (arrays, labels, groups, folds, digest).

A data set registered through ``pgm_register_datasets`` is a factory
``factory(protocol: str | None = None, data_dir: str | None = None, **options) -> BenchData``.
Every host and arm of a suite reads the same :class:`BenchData`, and its ``folds(seed)`` give
every arm the same train / valid / test rows, so cells pair up across arms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["BenchData", "Fold"]

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
