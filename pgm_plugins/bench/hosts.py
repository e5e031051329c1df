"""The late-fusion host of the method study: per-modality encoder MLPs -> concat -> head.

The block (or a control arm) is injected at the encoders' outputs (``encoders.<m>``) through
``pgm_plugins.inject(..., block_factory=...)``, the same engine every other host uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["AudioTower", "EncoderFusion", "LateFusionHost", "host_sites"]


class EncoderFusion(nn.Module):
    """One encoder per modality (``encoders.<m>``, the injection sites), outputs concatenated
    into ``head``; called as ``model(**inputs)``. Subclasses build ``encoders`` and ``head``."""

    encoders: nn.ModuleDict
    head: nn.Module

    def forward(self, **inputs: Tensor) -> Tensor:
        h = [enc(inputs[m]) for m, enc in self.encoders.items()]
        return self.head(torch.cat(h, dim=-1))


class LateFusionHost(EncoderFusion):
    """``encoders.<m>``: ``Linear -> GELU -> Dropout -> Linear -> GELU`` (``[B, hidden]``);
    ``head``: ``Linear(M * hidden, hidden) -> GELU -> Dropout -> Linear(hidden, out_dim)``."""

    def __init__(
        self, widths: Mapping[str, int], hidden: int = 32, out_dim: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.widths = dict(widths)
        self.encoders = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d, hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, hidden),
                    nn.GELU(),
                )
                for m, d in self.widths.items()
            }
        )
        self.head = nn.Sequential(
            nn.Linear(hidden * len(self.widths), hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )


class AudioTower(nn.Module):
    """1-D convolutions over frames ``[B, T, coeffs]`` (e.g. MFCCs), mean- and max-pooled over
    time (``[B, 2 * hidden]``)."""

    def __init__(self, coeffs: int = 20, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(coeffs, hidden, 5, padding=2),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
        )
        self.width = 2 * hidden

    def forward(self, frames: Tensor) -> Tensor:
        h = self.net(frames.transpose(1, 2))
        return torch.cat([h.mean(-1), h.amax(-1)], dim=-1)


def host_sites(host: EncoderFusion) -> dict[str, str]:
    """Injection sites: each encoder's output (``encoders.<m>``)."""
    return {m: f"encoders.{m}" for m in host.encoders}
