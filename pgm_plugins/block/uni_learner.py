"""Uni-modal learner: one token-wise MLP per modality that sees no other modality.

``docs/design.md``, "Uni-modal learner". It reads only its modality's uni part ``u_m``
and its head (built by the block) is trained on the task label from that alone: the uni-modal
training of the paper, after Du et al., ICML 2023 ("On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning").
"""

from __future__ import annotations

from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP

__all__ = ["UniModalLearner"]


class UniModalLearner(nn.Module):
    """``u~ = MLP(u)``, same width as ``u``, token-wise."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP(in_dim, hidden, in_dim, dropout)

    def forward(self, u: Tensor) -> Tensor:
        return self.net(u)
