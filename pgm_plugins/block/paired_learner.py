"""Paired-modal learner: learns the features that only cross-modal interaction reveals.

PGM_METHOD.md section 3, reworked (issue 8) so the paired path can represent interactions such as
a product or an XOR of two modalities' factors, for vectors and sequences. Readings, chosen by
``PgMConfig.paired``:

- ``bilinear`` (default): each modality's paired part gives queries ``a_m = A_m p_m`` and keys /
  values ``b_m = B_m p_m`` (common width ``w``). Token ``t`` of modality m reads the other
  modalities' **real** tokens by masked attention, ``c_m = mean_{n != m} Attn(a_m, b_n, b_n)``,
  and the learner keeps ``p~_m = O_m [a_m ; a_m * c_m]``: the elementwise product is a factorised
  bilinear interaction (as in MFB / LMF), present even for ``[B, d]`` inputs (one token: ``c_m =
  b_n``), where softmax attention alone would be affine.
- ``attention``: the same modules with ``c_m`` added instead of multiplied (``O_m [a_m ; c_m]``):
  affine for vectors. Kept as the ablation that shows what the product adds.
- ``shared``: one weight-shared network over each modality's ``A_m p_m``, kept aligned across
  modalities of one sample by the block's alignment loss. Needs no other modality in the same
  call, so it is the learner for independent mode (dual encoders), where paired learning lives in
  the alignment loss (and in the paired head only when the modalities meet in one call).

Parameters are split for optimizer groups: ``per_modality(m)`` and ``shared()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP

__all__ = ["AttentionPairedLearner", "SharedPairedLearner", "masked_attention"]


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, heads: int
) -> Tensor:
    """Multi-head scaled dot-product attention without projections.

    ``q [B, Tq, w]``, ``k, v [B, Tk, w]``, ``key_mask [B, Tk]`` (True = real token). A sample with
    no real key reads zeros. ``[B, w]`` queries or keys/values are one token each; the result has
    ``q``'s shape.
    """
    if k.dim() == 2 or (k.shape[1] == 1 and key_mask is None):
        # one real key: its softmax weight is exactly 1 and the scores' gradient exactly 0, so
        # every query reads v (the same numbers as the general path, without its ops)
        v1 = v if v.dim() == 2 else v[:, 0]
        return v1 if q.dim() == 2 else v1.unsqueeze(1).expand(q.shape)
    if q.dim() == 2:
        return masked_attention(q.unsqueeze(1), k, v, key_mask, heads).squeeze(1)
    b, tq, w = q.shape
    tk = k.shape[1]
    dh = w // heads
    if heads == 1:  # no head axis to split off: the same products with fewer view ops
        qh, kh, vh = q, k, v
    else:
        qh = q.reshape(b, tq, heads, dh).transpose(1, 2)
        kh = k.reshape(b, tk, heads, dh).transpose(1, 2)
        vh = v.reshape(b, tk, heads, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh)  # [B, H, Tq, Tk] ([B, Tq, Tk] for 1)
    if key_mask is not None:
        keep = key_mask[:, None, :] if heads == 1 else key_mask[:, None, None, :]
        scores = scores.masked_fill(~keep, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.where(keep, weights, torch.zeros_like(weights))  # all-masked rows: 0
    else:
        weights = torch.softmax(scores, dim=-1)
    if heads == 1:
        return weights @ vh
    return (weights @ vh).transpose(1, 2).reshape(b, tq, w)


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
    """``bilinear`` (``multiply=True``) and ``attention`` (``multiply=False``) learners."""

    needs_pairs = True

    def __init__(
        self,
        widths: Mapping[str, int],
        width: int,
        heads: int = 1,
        dropout: float = 0.0,
        multiply: bool = True,
    ) -> None:
        super().__init__(widths, width)
        self.heads, self.multiply = heads, multiply
        self.keys = nn.ModuleDict({m: nn.Linear(d, width) for m, d in widths.items()})
        self.out = nn.ModuleDict({m: nn.Linear(2 * width, width) for m in widths})
        self.drop = nn.Dropout(dropout)

    def per_modality(self, modality: str) -> Iterator[nn.Parameter]:
        yield from super().per_modality(modality)
        yield from self.keys[modality].parameters()
        yield from self.out[modality].parameters()

    def forward(
        self, paired: Mapping[str, Tensor], masks: Mapping[str, Tensor | None] | None = None
    ) -> dict[str, Tensor]:
        """``{m: [B, T_m, k_m]} -> {m: [B, T_m, w]}``; needs two or more modalities."""
        masks = masks or {}
        a = {m: self.proj[m](p) for m, p in paired.items()}
        b = {m: self.keys[m](p) for m, p in paired.items()}
        out = {}
        for m, q in a.items():
            reads = [masked_attention(q, b[n], b[n], masks.get(n), self.heads) for n in a if n != m]
            ctx = torch.stack(reads).mean(0)
            mixed = q * ctx if self.multiply else ctx
            both = torch.cat([q, mixed], dim=-1)
            out[m] = self.out[m](self.drop(both) if self.drop.p > 0 else both)
        return out


class SharedPairedLearner(_PairedLearner):
    def __init__(self, widths: Mapping[str, int], width: int, dropout: float = 0.0) -> None:
        super().__init__(widths, width)
        self.net = MLP(width, width, width, dropout)
        self.norm = nn.LayerNorm(width)

    def shared(self) -> Iterator[nn.Parameter]:
        yield from self.net.parameters()
        yield from self.norm.parameters()

    def forward(
        self, paired: Mapping[str, Tensor], masks: Mapping[str, Tensor | None] | None = None
    ) -> dict[str, Tensor]:
        """``{m: [B, T_m, k_m]} -> {m: [B, T_m, w]}``; any number of modalities."""
        out = {}
        for m, p in paired.items():
            x = self.proj[m](p)
            out[m] = self.norm(x + self.net(x))
        return out
