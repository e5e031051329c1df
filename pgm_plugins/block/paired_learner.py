"""Paired-modal learner: learns the features that only cross-modal interaction reveals.

PGM_METHOD.md section 3. Two readings, chosen by ``PgMConfig.paired``:

- ``attention`` (default): each modality's paired part, projected to a common width, attends to
  every other modality's: ``p~_m = LN(p'_m + mean_{n != m} Attn(q=p'_m, k=v=p'_n))``, one
  attention module per ordered pair (as MulT's crossmodal transformers). Needs the modalities
  together; with one modality present the block skips the paired path.
- ``shared``: one weight-shared network over every modality's projected ``p'_m``, kept aligned
  across modalities of the same sample by InfoNCE (or CMD) in the block's loss. Runs on one
  modality at a time, so it fits dual encoders that embed modalities in separate calls.

Parameters are split for optimizer groups: ``per_modality(m)`` (the modality's projection, its
attention as query and its norm) and ``shared()`` (the shared network).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP

__all__ = ["AttentionPairedLearner", "SharedPairedLearner"]


class _PairedLearner(nn.Module):
    #: whether the learner needs at least two modalities in one call
    needs_pairs = False

    def __init__(self, widths: Mapping[str, int], width: int) -> None:
        super().__init__()
        self.width = width
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in widths.items()})

    def per_modality(self, modality: str) -> Iterator[nn.Parameter]:
        yield from self.proj[modality].parameters()

    def shared(self) -> Iterator[nn.Parameter]:
        yield from ()


class AttentionPairedLearner(_PairedLearner):
    needs_pairs = True

    def __init__(
        self, widths: Mapping[str, int], width: int, heads: int, dropout: float = 0.0
    ) -> None:
        super().__init__(widths, width)
        names = list(widths)
        self.attn = nn.ModuleDict(
            {
                f"{q}__{k}": nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
                for q in names
                for k in names
                if q != k
            }
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in names})

    def per_modality(self, modality: str) -> Iterator[nn.Parameter]:
        yield from super().per_modality(modality)
        for key, module in self.attn.items():
            if key.split("__")[0] == modality:
                yield from module.parameters()
        yield from self.norm[modality].parameters()

    def forward(self, paired: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: [B, T_m, d_pm]} -> {m: [B, T_m, width]}``; needs two or more modalities."""
        proj = {m: self.proj[m](p) for m, p in paired.items()}
        out = {}
        for m, q in proj.items():
            msgs = [
                self.attn[f"{m}__{n}"](q, kv, kv, need_weights=False)[0]
                for n, kv in proj.items()
                if n != m
            ]
            out[m] = self.norm[m](q + torch.stack(msgs).mean(0))
        return out


class SharedPairedLearner(_PairedLearner):
    def __init__(self, widths: Mapping[str, int], width: int, dropout: float = 0.0) -> None:
        super().__init__(widths, width)
        self.net = MLP(width, width, width, dropout)
        self.norm = nn.LayerNorm(width)

    def shared(self) -> Iterator[nn.Parameter]:
        yield from self.net.parameters()
        yield from self.norm.parameters()

    def forward(self, paired: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: [B, T_m, d_pm]} -> {m: [B, T_m, width]}``; any number of modalities."""
        out = {}
        for m, p in paired.items():
            x = self.proj[m](p)
            out[m] = self.norm(x + self.net(x))
        return out
