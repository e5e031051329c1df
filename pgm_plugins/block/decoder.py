"""Uni-paired modal decoder: rebuilds ``h_m`` from its learned uni and paired parts.

``docs/design.md``, "Uni-paired decoder": reconstruction and the mix agree. The
partition is invertible (``partitioner.py``): with ``Q`` column-orthonormal, ``h = z Q^T + (h - h Q
Q^T)`` exactly. The decoder maps both learned parts to a change of the code, ``dz = D([u~ ; p~])``,
and the rebuilt representation is ``h_hat = h + dz Q^T``: exactly ``h`` when the learners add
nothing, so no reconstruction loss pulls the change toward zero (the old ``||h_hat - h||`` did,
fighting the mix). What the host receives depends on ``mix``:

- ``gate`` (default): ``h + beta * (h_hat - h)``, ``beta`` a learnable scalar from 0 (ReZero /
  LoRA habit): the identity at initialisation;
- ``replace``: ``h_hat`` (the paper's literal reading); not the identity at initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP

__all__ = ["UniPairedDecoder"]


class UniPairedDecoder(nn.Module):
    def __init__(
        self,
        uni_dim: int,
        paired_dim: int,
        code_dim: int,
        hidden: int,
        mix: str = "gate",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mix = mix
        self.paired_dim = paired_dim
        self.net = MLP(uni_dim + paired_dim, hidden, code_dim, dropout)
        self.beta = nn.Parameter(torch.zeros(())) if mix == "gate" else None

    def forward(self, uni: Tensor, paired: Tensor | None = None) -> Tensor:
        """The code change ``dz``; ``paired=None`` (paired path skipped) decodes with zeros."""
        if paired is None:
            paired = uni.new_zeros(*uni.shape[:-1], self.paired_dim)
        return self.net(torch.cat([uni, paired], dim=-1))

    def mix_into(self, h: Tensor, change: Tensor) -> Tensor:
        """What the host receives from ``h`` and ``h_hat - h`` (``change``)."""
        if self.beta is None:
            return h + change
        return h + self.beta * change
