"""A tiny late-fusion host and a synthetic task with known uni-modal and paired-modal structure.

Used by the demo, the overhead benchmark, the docs and the tests, and registered as the built-in
host ``toy.late_fusion`` / data set ``synthetic.uni_paired``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["LateFusion", "make_uni_paired"]


class LateFusion(nn.Module):
    """One encoder per modality (``encoders.<m>``, output ``[B, hidden]``) and a fusion head."""

    def __init__(
        self, widths: Mapping[str, int] | None = None, hidden: int = 32, out_dim: int = 1
    ) -> None:
        super().__init__()
        widths = dict(widths or {"text": 16, "audio": 8})
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, hidden), nn.GELU()) for m, d in widths.items()}
        )
        self.fusion = nn.Sequential(
            nn.Linear(hidden * len(widths), hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, *inputs: Tensor, **named: Tensor) -> Tensor:
        xs = dict(zip(self.encoders, inputs, strict=False)) | named
        h = [enc(xs[m]) for m, enc in self.encoders.items()]
        return self.fusion(torch.cat(h, dim=-1)).squeeze(-1)


def make_uni_paired(
    n: int, seed: int = 0, widths: Mapping[str, int] | None = None, noise: float = 0.3
) -> tuple[dict[str, Tensor], Tensor]:
    """``y = z_a + z_b + 1.5 * p_a * p_b``: one factor per modality readable alone, and a product
    of two factors (one from each of the first two modalities) learnable only jointly. Each
    modality observes its two factors through a fixed random mixing plus noise."""
    widths = dict(widths or {"text": 16, "audio": 8})
    g = torch.Generator().manual_seed(seed)
    mix = torch.Generator().manual_seed(1234)  # the same mixing for every split
    uni = {m: torch.randn(n, generator=g) for m in widths}
    pair = {m: torch.randn(n, generator=g) for m in widths}
    a, b = list(widths)[:2]
    y = sum(uni.values(), torch.zeros(n)) + 1.5 * pair[a] * pair[b]
    x = {
        m: torch.stack([uni[m], pair[m]], 1) @ torch.randn(2, d, generator=mix)
        + noise * torch.randn(n, d, generator=g)
        for m, d in widths.items()
    }
    return x, y
