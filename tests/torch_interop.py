"""Helpers for the PyTorch interop tests (``test_torch_interop_*.py``: an injected model under
deepcopy, pickling, DDP, compile, threads, checkpointing...): a tiny host, an injected block, a
train step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import pgm_plugins as pp
from pgm_plugins.toy import LateFusion

WIDTHS = {"text": 6, "audio": 4, "video": 5}
SITES = {m: f"encoders.{m}" for m in WIDTHS}


def host(seed: int = 0, hidden: int = 8) -> LateFusion:
    torch.manual_seed(seed)
    return LateFusion(WIDTHS, hidden=hidden)


def inputs(batch: int = 4, seed: int = 1) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, d, generator=g) for d in WIDTHS.values())


def targets(batch: int = 4, seed: int = 2) -> Tensor:
    return torch.randn(batch, generator=torch.Generator().manual_seed(seed))


def injected(seed: int = 0, **config: Any) -> tuple[LateFusion, pp.PgMHandle]:
    """A host with a block whose mixing scalars are non-zero (so the block changes outputs)."""
    model = host(seed)
    cfg = {"task": "regression", "dropout": 0.0, **config}
    handle = pp.inject(model, sites=SITES, config=cfg, example_inputs=inputs())
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:  # the decoders' betas
                p.fill_(0.5)
    return model, handle


def step_loss(model: nn.Module, handle: pp.PgMHandle, x: tuple[Tensor, ...], y: Tensor) -> Tensor:
    return nn.functional.mse_loss(model(*x), y) + handle.aux_loss(y)


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }
