"""Uni-paired modal decoder: rebuilds ``h_m`` from its learned uni and paired parts.

PGM_METHOD.md section 4. ``h_hat = D([u~ ; p~])``, trained with a reconstruction loss against
``stopgrad(h)``. What the host receives depends on ``mix``:

- ``gate`` (default, our departure from the paper's literal reading): ``h + beta * (h_hat - h)``
  with a learnable scalar ``beta`` that starts at 0, so an injected block is exactly the identity
  at initialisation (the ReZero / LoRA habit) and a pretrained host keeps its outputs until
  training moves ``beta``;
- ``replace``: ``h_hat`` (the paper's literal reading).
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
        out_dim: int,
        hidden: int,
        mix: str = "gate",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mix = mix
        self.paired_dim = paired_dim
        self.net = MLP(uni_dim + paired_dim, hidden, out_dim, dropout)
        self.beta = nn.Parameter(torch.zeros(())) if mix == "gate" else None

    def forward(self, uni: Tensor, paired: Tensor | None, h: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(what the host receives, h_hat)``; ``paired=None`` decodes with zeros there."""
        if paired is None:  # the paired path was skipped (one modality present)
            paired = uni.new_zeros(*uni.shape[:-1], self.paired_dim)
        h_hat = self.net(torch.cat([uni, paired], dim=-1))
        if self.beta is None:
            return h_hat, h_hat
        return h + self.beta * (h_hat - h), h_hat
