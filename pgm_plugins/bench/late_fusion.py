"""The core bench host ``late_fusion``: one MLP encoder per modality, concatenation, an MLP head.

Takes any :class:`~pgm_plugins.bench.data.BenchData`: a ``[N, d]`` modality goes straight to
its encoder; a ``[N, T, d]`` modality is reduced to ``[N, d]`` by the mean over its real steps
(``lengths``, all steps when absent) when batches are made, then goes to its MLP encoder (no
recurrent layer: the host stays cheap and the same for every data set). Blocks go at the
encoders' outputs (``encoders.<m>``). Loss: cross-entropy (classification) or MSE (regression);
AdamW, gradient-norm clipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgm_plugins.bench.bench_host import ResidentRows, batch_rows
from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.hosts import EncoderFusion, LateFusionHost, host_sites
from pgm_plugins.bench.step import Clip, Stage

__all__ = ["DESCRIPTION", "LateFusionRun", "pooled"]

DESCRIPTION = (
    "late fusion: per-modality MLP encoder (sequences: masked mean over real steps first) -> "
    "concat -> MLP head; AdamW, clipping; blocks at the encoders' outputs"
)


def pooled(data: BenchData, modality: str, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), d]``: the rows of ``modality``, sequences averaged over their real steps."""
    x = data.x[modality][rows]
    if x.ndim == 2:
        return x
    lengths = data.lengths.get(modality)
    if lengths is None:
        return x.mean(axis=1)
    n = lengths[rows].astype(np.int64)
    mask = (np.arange(x.shape[1])[None, :] < n[:, None]).astype(x.dtype)
    return (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)


class LateFusionRun:
    """A :class:`~pgm_plugins.bench.bench_host.HostRun` of :class:`LateFusionHost`."""

    def __init__(
        self,
        data: BenchData,
        seed: int,
        modalities: tuple[str, ...],
        *,
        hidden: int = 32,
        dropout: float = 0.0,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        clip: float = 1.0,
        batch: int = 100,
    ) -> None:
        missing = [m for m in modalities if m not in data.x]
        if missing or not modalities:
            raise ValueError(
                f"late_fusion: modalities {list(modalities)} not all in {data.name}; "
                f"it has {list(data.modalities)}."
            )
        self.modalities = tuple(modalities)
        self.task = data.task
        out_dim = int(data.num_classes or 2) if data.task == "classification" else 1
        torch.manual_seed(seed)
        self.model = self._build(data, hidden, out_dim, dropout)
        self.train_model: nn.Module = self.model  # the training forward (the runner's DDP)
        self.sites: dict[str, str] | None = host_sites(self.model)
        seqs = [m for m in modalities if data.x[m].ndim == 3]
        self.changes: tuple[str, ...] = (
            (f"sequence modalities {seqs} reduced to the mean over real steps",) if seqs else ()
        )
        self.recipe = {
            "lr": lr,
            "weight_decay": weight_decay,
            "batch": batch,
            "clip": clip,
            "hidden": hidden,
            "dropout": dropout,
            "optimizer": "AdamW",
        }
        self.lr, self.weight_decay, self.clip = lr, weight_decay, clip
        self.resident = ResidentRows("cpu")

    def _build(self, data: BenchData, hidden: int, out_dim: int, dropout: float) -> EncoderFusion:
        """The model (``[B, hidden]`` per encoder); subclasses build other encoders."""
        return LateFusionHost(
            {m: data.widths[m] for m in self.modalities}, hidden, out_dim, dropout
        )

    def parts(self) -> dict[str, list[nn.Parameter]]:
        out = {m: list(self.model.encoders[m].parameters()) for m in self.modalities}
        out["fusion"] = list(self.model.head.parameters())
        return out

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.resident = ResidentRows(device)

    def optimizers(
        self, handle: Any, lr_scale: dict[str, float] | None = None
    ) -> dict[str, torch.optim.Optimizer]:
        scale = lr_scale or {}
        groups: list[dict[str, Any]] = [
            {
                "name": part,
                "params": params,
                "lr": self.lr * scale.get(part, 1.0),
                "weight_decay": self.weight_decay,
            }
            for part, params in self.parts().items()
        ]
        if handle is not None:
            groups = handle.param_groups(
                base_lr=self.lr, host_groups=groups, weight_decay=self.weight_decay
            )
        return {"main": torch.optim.AdamW(groups)}

    def arrays(self, data: BenchData) -> dict[str, np.ndarray]:
        """Every row's model inputs (``"x.<modality>"``) and targets (``"y"``) as arrays; what
        :meth:`batches` indexes (on the run's device, made once per data set)."""
        every = np.arange(len(data.y))
        out = {
            f"x.{m}": np.asarray(pooled(data, m, every), dtype=np.float32) for m in self.modalities
        }
        y = np.asarray(data.y)
        out["y"] = y.astype(np.int64) if self.task == "classification" else y.astype(np.float32)
        return out

    def batches(
        self, data: BenchData, rows: np.ndarray, batch: int, rng: np.random.Generator | None
    ) -> Iterator[tuple[Any, Tensor, np.ndarray]]:
        tensors = self.resident.get(data, self.arrays)
        for idx in batch_rows(rows, batch, rng):
            got = self.resident.rows(tensors, idx)
            y = got.pop("y")
            yield {k.removeprefix("x."): v for k, v in got.items()}, y, idx

    def _loss(self, out: Tensor, targets: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(out, targets)
        return F.mse_loss(out[:, 0], targets)

    def stages(self, inputs: Any, targets: Tensor, rows: np.ndarray) -> Iterator[Stage]:
        self.model.train()
        task = self._loss(self.train_model(**inputs), targets)
        yield Stage({"task": task}, clip=Clip("norm", self.clip))

    def predict(self, inputs: Any) -> Tensor:
        self.model.eval()
        with torch.no_grad():
            out = self.model(**inputs)
        return out if self.task == "classification" else out[:, 0]

    def next_epoch(self) -> None:
        return None
