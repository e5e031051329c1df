"""A token-wise two-layer MLP, the building brick of the learners and decoders."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP", "mean_pool"]


class MLP(nn.Sequential):
    """``Linear -> GELU -> Dropout -> Linear``, applied to the last dimension."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )


def mean_pool(x: Tensor) -> Tensor:
    """``[B, T, d] -> [B, d]`` by the mean over tokens (what the heads see)."""
    return x.mean(dim=1)
