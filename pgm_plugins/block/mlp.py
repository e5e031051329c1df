"""Small bricks shared by the learners and decoders: a token-wise MLP and masked pooling."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP", "masked_mean", "mean_pool"]


class MLP(nn.Sequential):
    """``Linear -> GELU -> Dropout -> Linear``, applied to the last dimension."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        for module in self:
            # dropout with p=0 returns its input itself: skip the call (fewer ops per step)
            if not (isinstance(module, nn.Dropout) and module.p == 0):
                x = module(x)
        return x


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """``[B, T, d] -> [B, d]``: the mean over real tokens (``mask[b, t]`` True), all if None;
    a ``[B, d]`` vector (one token, no mask) is its own mean."""
    if x.dim() == 2 and mask is None:
        return x
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def mean_pool(x: Tensor) -> Tensor:
    """``[B, T, d] -> [B, d]`` by the mean over every token."""
    return x.mean(dim=1)
