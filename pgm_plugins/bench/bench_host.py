"""What a benchmark host is: a factory that builds a model for a :class:`BenchData` and knows
how to feed it, train it with its own recipe, and read its predictions (:class:`HostRun`).

Registered through ``pgm_register_bench_hosts``: ``register(name, factory, description="")``
with ``factory(data: BenchData, seed: int, modalities: tuple[str, ...]) -> HostRun``. The
runner injects the arm's block (or none) into ``run.model`` at ``run.sites``, calls
``run.attach(handle)`` and then only the methods below, so one runner trains every host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from torch import Tensor, nn

from pgm_plugins.bench.data.bench_data import BenchData

__all__ = ["HostFactory", "HostRun", "batch_rows"]


def batch_rows(
    rows: np.ndarray, batch: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    """``rows`` in batches of ``batch``: shuffled when ``rng`` is given (training), in order
    otherwise. In training with ``batch > 1``, a last batch of a single row joins the batch
    before it: one row has no batch statistics (``BatchNorm`` refuses it; MISA's CMD of one
    sample is ``sqrt(0)``, whose gradient is NaN and turns every weight NaN: MOSI ``clean`` fold
    0 at seed 1 has 401 training rows, 25 batches of 16 and one of 1). ``batch=1`` is kept as
    asked, every batch one row."""
    if batch < 1:
        raise ValueError(f"batch must be a positive number of rows; got {batch}.")
    rows = np.asarray(rows)
    order = rows[rng.permutation(len(rows))] if rng is not None else rows
    starts = list(range(0, len(rows), batch))
    if rng is not None and batch > 1 and len(starts) > 1 and len(rows) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield order[start : starts[i + 1] if i + 1 < len(starts) else len(rows)]


class HostRun(Protocol):
    """One host built for one data set and seed (random weights, its own recipe)."""

    model: nn.Module
    #: modality -> layer name where a block goes (None: the adapter's default sites)
    sites: dict[str, str] | None
    #: what differs from the host's source, disclosed in reports
    changes: tuple[str, ...]
    # Optional, read with getattr: ``recipe`` (dict: the host's training settings, recorded
    # under the record's ``train``; its ``batch`` is the default batch size) and
    # ``block_config`` (dict: PgMConfig fields this host needs, e.g. ``task="regression"`` for
    # a host trained on scores; it overrides the suite's ``block`` settings).

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Host parameters by part: one key per modality (its encoder, up to the site) and
        ``"fusion"`` (the rest). Every host parameter in exactly one part."""
        ...

    def attach(self, handle: Any, lr_scale: dict[str, float] | None = None) -> None:
        """Build the optimizer(s): the host's own groups, each modality's encoder part scaled
        by ``lr_scale[modality]`` (default 1), plus ``handle.param_groups`` when a block is
        injected (``handle`` None: the host alone). Called once, before the first step."""
        ...

    def batches(
        self, data: BenchData, rows: np.ndarray, batch: int, rng: np.random.Generator | None
    ) -> Iterator[tuple[Any, Tensor, np.ndarray]]:
        """``(inputs, targets, rows)`` over ``rows``; shuffled when ``rng`` is given (training),
        in order otherwise. ``inputs`` is what ``step`` and ``predict`` take."""
        ...

    def step(self, inputs: Any, targets: Tensor, rows: np.ndarray) -> dict[str, float]:
        """One training step with the host's own losses (+ the block's ``aux_loss``), gradient
        clipping and optimizer(s); returns the loss terms as floats (``"loss"`` the total)."""
        ...

    def predict(self, inputs: Any) -> Tensor:
        """Eval-mode, no-grad outputs: class logits ``[B, C]`` or regression scores ``[B]``."""
        ...

    def next_epoch(self) -> None:
        """Called after every training epoch (hosts with per-epoch state, e.g. Self-MM)."""
        ...


class HostFactory(Protocol):
    def __call__(self, data: BenchData, seed: int, modalities: tuple[str, ...]) -> HostRun: ...
