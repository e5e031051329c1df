"""Modal partitioner: splits ``h_m`` into uni-modal ``u_m`` and paired-modal ``p_m`` features.

PGM_METHOD.md section 1. Three readings of the paper's partitioner, chosen by
``PgMConfig.partitioner``:

- ``gate`` (default): ``g = sigmoid((W h + b) / tau)``, ``u = g * h``, ``p = (1 - g) * h``; the uni
  share is ``mean(g)``, pulled toward ``rho`` by a loss. The bias starts at ``tau * logit(rho)`` so
  the share starts near its target.
- ``split``: the first ``round(rho * d)`` dimensions are uni-modal, the rest paired (exact share).
- ``project``: ``u = W_u h`` (``round(rho * d)`` wide), ``p = W_p h`` (the rest), kept apart by a
  soft-orthogonality penalty.

Every partitioner reads the uni part from ``h_uni`` and the paired part from ``h_paired``: the same
tensor as ``h`` in the forward pass, carrying different gradient-scale factors backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pgm_plugins.block.config import PgMConfig
from pgm_plugins.block.losses import difference_loss

__all__ = [
    "GatePartitioner",
    "Partition",
    "ProjectPartitioner",
    "SplitPartitioner",
    "build_partitioner",
]


@dataclass
class Partition:
    uni: Tensor
    paired: Tensor
    share: Tensor  #: 0-dim tensor, the uni-modal share rho_hat
    gate: Tensor | None = None
    orth: Tensor | None = None  #: orthogonality penalty ('project' only)


class GatePartitioner(nn.Module):
    def __init__(self, dim: int, rho: float, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau
        self.gate = nn.Linear(dim, dim)
        nn.init.normal_(self.gate.weight, std=0.02)
        start = min(max(rho, 0.02), 0.98)
        nn.init.constant_(self.gate.bias, tau * math.log(start / (1 - start)))

    def forward(self, h: Tensor, h_uni: Tensor, h_paired: Tensor) -> Partition:
        g = torch.sigmoid(self.gate(h) / self.tau)
        return Partition(uni=g * h_uni, paired=(1 - g) * h_paired, share=g.mean(), gate=g)


class SplitPartitioner(nn.Module):
    def __init__(self, dim: int, uni_width: int) -> None:
        super().__init__()
        self.dim, self.k = dim, uni_width

    def forward(self, h: Tensor, h_uni: Tensor, h_paired: Tensor) -> Partition:
        share = torch.tensor(self.k / self.dim, device=h.device, dtype=h.dtype)
        return Partition(uni=h_uni[..., : self.k], paired=h_paired[..., self.k :], share=share)

    def extra_repr(self) -> str:
        return f"uni=[:{self.k}], paired=[{self.k}:{self.dim}]"


class ProjectPartitioner(nn.Module):
    def __init__(self, dim: int, uni_width: int, paired_width: int) -> None:
        super().__init__()
        self.to_uni = nn.Linear(dim, uni_width)
        self.to_paired = nn.Linear(dim, paired_width)

    def forward(self, h: Tensor, h_uni: Tensor, h_paired: Tensor) -> Partition:
        u, p = self.to_uni(h_uni), self.to_paired(h_paired)
        k, d = self.to_uni.out_features, self.to_uni.in_features
        share = torch.tensor(k / d, device=h.device, dtype=h.dtype)
        return Partition(uni=u, paired=p, share=share, orth=difference_loss(u, p))


def build_partitioner(config: PgMConfig, modality: str) -> nn.Module:
    d = config.modalities[modality]
    if config.partitioner == "gate":
        return GatePartitioner(d, config.rho_for(modality), config.tau)
    du, dp = config.part_widths(modality)
    if config.partitioner == "split":
        return SplitPartitioner(d, du)
    return ProjectPartitioner(d, du, dp)
