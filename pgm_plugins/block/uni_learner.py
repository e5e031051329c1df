"""Uni-modal learner: one token-wise MLP per modality that sees no other modality.

PGM_METHOD.md section 2. Its head (built by the block) is trained on the task label from this
modality's features alone: the uni-modal training of the paper, after Du et al., ICML 2023.
"""

from __future__ import annotations

from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP

__all__ = ["UniModalLearner"]


class UniModalLearner(nn.Module):
    def __init__(self, in_dim: int, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP(in_dim, width, width, dropout)
        self.norm = nn.LayerNorm(width)

    def forward(self, u: Tensor) -> Tensor:
        return self.norm(self.net(u))
