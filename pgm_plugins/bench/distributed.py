"""One cell under ``torchrun``: what the runner needs to train each cell with torch's
DistributedDataParallel across the ranks of one ``torchrun --nproc_per_node N pgm bench run ...``.

Every rank plans the same cells and trains each together; rank 0 alone claims and writes the
record, the others wait at a barrier. Within a cell:

- **One global shuffle.** The cell's generator draws the global batch order exactly as one
  process does (``batch_rows(rows, batch, rng)``); each global batch is split into ``N``
  contiguous chunks as even as possible (:func:`chunk`), rank ``r`` trains on chunk ``r``.
- **Gradients of the global batch.** A rank's loss is a mean over its chunk; DDP's default
  all-reduce averages the ranks' gradients, which weights rows of a smaller chunk more. The
  runner registers :func:`weighted_allreduce` instead: each rank's gradients are scaled by its
  share of the global batch (``n_r / n``) and summed, which is the one-process gradient of the
  global batch's mean loss for every per-sample term, up to the order of float additions.
  A global batch with fewer rows than ranks gives the ranks left over the batch's last row with
  weight 0 (DDP needs every rank in every step).
- **Same model on every rank.** Every rank builds the host from the cell's seed (DDP also
  broadcasts rank 0's weights at wrapping); batch norm becomes ``nn.SyncBatchNorm`` (statistics
  of the global batch); after wrapping, each rank seeds its global RNG with
  ``seed * 1000 + rank`` so dropout masks differ between ranks.
- **One decision.** The training loss is all-reduced (weighted by chunk sizes, so it is the
  global batch's loss); validation is evaluated on rank 0 and broadcast, so early stopping and
  the best epoch (whose weights are the same on every rank) agree everywhere.

How the PgM block behaves under DDP (its parameters always in the graph, per-sample auxiliary
terms matching one process, batch-level terms per rank) is the README's DDP section.
"""

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Ranks", "chunk", "from_env", "weighted_allreduce"]


@dataclass
class Ranks:
    """This process's place in a ``torchrun`` group.

    Attributes:
        rank: ``RANK`` (0 writes the records).
        world: ``WORLD_SIZE``.
        local: ``LOCAL_RANK`` (the CUDA device index on a GPU machine).
        backend: ``gloo`` (CPU) or ``nccl`` (CUDA), once :meth:`start` ran.
        weight: this rank's share of the current global batch (``n_r / n``), read by the
            gradient hook.
    """

    rank: int
    world: int
    local: int
    backend: str = ""
    weight: float = 1.0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (gloo on CPU, NCCL on CUDA) unless one is initialised;
        returns this rank's device (``cuda:LOCAL_RANK`` on CUDA)."""
        if device.type == "cuda":
            if device.index is not None and device.index != self.local and self.world > 1:
                raise ValueError(
                    f"under torchrun each rank trains on cuda:LOCAL_RANK; got --device {device} "
                    f"on local rank {self.local}. Give --device cuda (or auto), and choose the "
                    "GPUs with CUDA_VISIBLE_DEVICES."
                )
            device = torch.device("cuda", self.local)
            torch.cuda.set_device(device)
        if dist.is_initialized():
            self.backend = str(dist.get_backend())
        else:
            self.backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=self.backend)
            self.started_here = True
        return device

    def stop(self) -> None:
        """Leave the process group when :meth:`start` made it."""
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()
            self.started_here = False

    # ------------------------------------------------------------------ collectives
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled)."""
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def global_loss(self, loss: Tensor, rows: int) -> tuple[float, int]:
        """``(mean loss over the global batch, its rows)`` from each rank's mean over its
        chunk of ``rows`` (a rank with weight 0 counts no rows)."""
        rows = rows if self.weight > 0 else 0
        both = torch.stack(
            [loss.detach().double().cpu() * rows, torch.tensor(float(rows), dtype=torch.float64)]
        )
        if self.backend == "nccl":
            both = both.cuda()
        dist.all_reduce(both)
        total, n = both.cpu().tolist()
        return total / max(n, 1.0), int(n)

    # ------------------------------------------------------------------ the model
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DDP with the weighted gradient reduction (:func:`weighted_allreduce`).
        ``find_unused_parameters=True``: a recipe's forward may leave host parameters out of a
        stage's graph (MMIM's first stage); the block's parameters are always in it."""
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        ddp.register_comm_hook(self, weighted_allreduce)
        return ddp

    def split(self, idx: np.ndarray) -> np.ndarray:
        """This rank's chunk of a global batch; sets :attr:`weight` (see :func:`chunk`)."""
        part, self.weight = chunk(idx, self.rank, self.world)
        return part


def from_env(environ: dict[str, str] | None = None) -> Ranks | None:
    """The :class:`Ranks` that ``torchrun`` describes (``WORLD_SIZE`` > 1, ``RANK``,
    ``LOCAL_RANK``), or None for one process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1:
        return None
    try:
        rank = int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"WORLD_SIZE={world} but RANK / LOCAL_RANK are missing or not numbers "
            f"({exc}); start the run with torchrun (python -m torch.distributed.run)."
        ) from None
    return Ranks(rank=rank, world=world, local=local)


def chunk(idx: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """Rank ``rank``'s contiguous chunk of the global batch ``idx`` (``world`` chunks as even as
    possible, the first ones one row longer) and its weight ``len(chunk) / len(idx)``. A rank
    left without rows gets the batch's last row with weight 0."""
    idx = np.asarray(idx)
    part = np.array_split(idx, world)[rank]
    if len(part) == 0:
        return idx[-1:], 0.0
    return part, len(part) / len(idx)


def weighted_allreduce(state: Ranks, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """A DDP communication hook: the sum over ranks of each rank's gradients times its share of
    the global batch (``state.weight``), instead of DDP's plain mean. (Annotations evaluated at
    definition: DDP checks them, so this module does not defer them.)"""
    buf = bucket.buffer()
    buf.mul_(state.weight)
    work = dist.all_reduce(buf, async_op=True)
    assert work is not None
    return work.get_future().then(_first)


def _first(fut: torch.futures.Future[list[Tensor]]) -> Tensor:
    return fut.value()[0]
