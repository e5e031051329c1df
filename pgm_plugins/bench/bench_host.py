"""What a benchmark host is: a factory that builds a model for a :class:`BenchData` and knows
how to feed it, which losses its own recipe trains, and how to read its predictions
(:class:`HostRun`).

Registered through ``pgm_register_bench_hosts``: ``register(name, factory, description="")``
with ``factory(data: BenchData, seed: int, modalities: tuple[str, ...]) -> HostRun``. The
runner injects the arm's block (or none) into ``run.model`` at ``run.sites``, moves the run to
its device (``run.to(device)``), asks for its optimizers (``run.optimizers(handle)``) and then
trains it: the host gives each batch's forward and loss terms as stages
(:class:`~pgm_plugins.bench.step.Stage`), and the runner owns backward, clipping and the
optimizer steps (:class:`~pgm_plugins.bench.step.Stepper`), so it can add mixed precision,
distributed data parallel and the block's auxiliary loss to every host alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.step import Stage

__all__ = ["HostFactory", "HostRun", "ResidentRows", "batch_rows", "to_device"]


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
    #: what :meth:`stages` calls for the training forward: ``model`` itself, unless the runner
    #: replaces it (under torchrun, by ``model`` in DistributedDataParallel, whose forward
    #: synchronises the gradients); ``predict`` keeps calling ``model``
    train_model: nn.Module
    # Optional, read with getattr: ``recipe`` (dict: the host's training settings, recorded
    # under the record's ``train``; its ``batch`` is the default batch size) and
    # ``block_config`` (dict: PgMConfig fields this host needs, e.g. ``task="regression"`` for
    # a host trained on scores; it overrides the suite's ``block`` settings).

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Host parameters by part: one key per modality (its encoder, up to the site) and
        ``"fusion"`` (the rest). Every host parameter in exactly one part."""
        ...

    def to(self, device: torch.device) -> None:
        """Move the model, and whatever the host keeps beside it, to ``device``. Called once,
        after the block is injected and before :meth:`optimizers`; ``batches`` then yields
        tensors on ``device`` (data moved once per cell where they fit)."""
        ...

    def optimizers(
        self, handle: Any, lr_scale: dict[str, float] | None = None
    ) -> dict[str, torch.optim.Optimizer]:
        """The recipe's optimizer(s) by name (``"main"`` when there is one): the host's own
        groups, each modality's encoder part scaled by ``lr_scale[modality]`` (default 1), plus
        ``handle.param_groups`` when a block is injected (``handle`` None: the host alone).
        Called once, before the first step."""
        ...

    def batches(
        self, data: BenchData, rows: np.ndarray, batch: int, rng: np.random.Generator | None
    ) -> Iterator[tuple[Any, Tensor, np.ndarray]]:
        """``(inputs, targets, rows)`` over ``rows``; shuffled when ``rng`` is given (training),
        in order otherwise. ``inputs`` is what ``stages`` and ``predict`` take."""
        ...

    def stages(self, inputs: Any, targets: Tensor, rows: np.ndarray) -> Iterator[Stage]:
        """One training step's forward(s) and loss terms, as a generator of stages (one per
        backward; most recipes have one). The runner clears gradients, adds the block's
        ``aux_loss``, runs backward, the stage's clipping and its optimizer's step, then
        resumes the generator (work after the step, e.g. a label update, goes after the
        ``yield``). Put the model in training mode first."""
        ...

    def predict(self, inputs: Any) -> Tensor:
        """Eval-mode, no-grad outputs: class logits ``[B, C]`` or regression scores ``[B]``."""
        ...

    def next_epoch(self) -> None:
        """Called after every training epoch (hosts with per-epoch state, e.g. Self-MM)."""
        ...


class HostFactory(Protocol):
    def __call__(self, data: BenchData, seed: int, modalities: tuple[str, ...]) -> HostRun: ...


def to_device(obj: Any, device: torch.device, keep: Callable[[Tensor], bool] | None = None) -> Any:
    """``obj`` with every tensor in it (nested tuples, lists, dicts) on ``device``, except those
    ``keep`` says stay where they are (e.g. sequence lengths, which ``pack_padded_sequence``
    wants on the CPU)."""
    if isinstance(obj, Tensor):
        return obj if keep is not None and keep(obj) else obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device, keep) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device, keep) for v in obj)
    return obj


class ResidentRows:
    """A data set's arrays as tensors on a device, made once and indexed by rows per batch.

    ``get(data, make)`` returns ``make(data)`` (name -> array over every row) as tensors on the
    device, kept while the same ``data`` object comes back (a data set redrawn each epoch is a
    new object: the previous two are kept, training and evaluation data). On CUDA the arrays
    stay on the host when they would take more than ``fraction`` of the free device memory;
    ``rows`` then moves each batch instead."""

    def __init__(self, device: torch.device | str = "cpu", fraction: float = 0.25) -> None:
        self.device = torch.device(device)
        self.fraction = fraction
        # (data, tensors): the data object is held, so its id cannot be reused while kept
        self._kept: list[tuple[Any, dict[str, Tensor]]] = []

    def get(self, data: Any, make: Any) -> dict[str, Tensor]:
        for held, tensors in self._kept:
            if held is data:
                return tensors
        arrays = {k: np.ascontiguousarray(v) for k, v in make(data).items()}
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        if self.device.type != "cpu" and self._fits(sum(v.nbytes for v in arrays.values())):
            tensors = {k: v.to(self.device) for k, v in tensors.items()}
        self._kept = [*self._kept[-1:], (data, tensors)]
        return tensors

    def _fits(self, nbytes: int) -> bool:
        if self.device.type != "cuda":
            return True
        free, _ = torch.cuda.mem_get_info(self.device)
        return nbytes <= self.fraction * free

    def rows(self, tensors: dict[str, Tensor], idx: np.ndarray) -> dict[str, Tensor]:
        """The rows ``idx`` of every tensor, on the device."""
        index = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        where = {index.device: index}  # one index per device the tensors live on
        out = {}
        for k, t in tensors.items():
            at = where.setdefault(t.device, index.to(t.device))
            out[k] = t[at].to(self.device, non_blocking=True)
        return out
