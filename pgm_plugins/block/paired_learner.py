"""Paired-modal learner: learns the features that only cross-modal interaction reveals.

``docs/design.md``, "Paired-modal learner": the paired path can represent interactions
such as a product or an XOR of two modalities' factors, for vectors and sequences. Readings,
chosen by ``PgMConfig.paired``:

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

Parameters are split for optimizer groups: ``per_modality(m)`` and ``shared()``. Each learner
is written once, in :meth:`learn`, over a :class:`~pgm_plugins.block.modality_ops.ModalityOps`:
``forward`` runs it per modality, the block's stacked path on a stack of equal-shape modalities.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from pgm_plugins.block.mlp import MLP
from pgm_plugins.block.modality_ops import LoopOps, ModalityOps, Values

__all__ = ["AttentionPairedLearner", "SharedPairedLearner"]


class _PairedLearner(nn.Module, metaclass=ABCMeta):
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

    @abstractmethod
    def learn(self, ops: ModalityOps, paired: Values) -> Values:
        """``p~``: every modality's learned paired part from its paired part ``p``, written once
        for a loop over the modalities and for a stack of them."""

    def forward(
        self, paired: Mapping[str, Tensor], masks: Mapping[str, Tensor | None] | None = None
    ) -> dict[str, Tensor]:
        """``{m: [B, T_m, k_m]} -> {m: [B, T_m, w]}``, one call per modality."""
        out: dict[str, Tensor] = self.learn(LoopOps(list(paired), masks or {}), dict(paired))
        return out


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

    def learn(self, ops: ModalityOps, paired: Values) -> Values:
        """Needs two or more modalities (``needs_pairs``)."""
        a = ops.each(self.proj, paired)
        b = ops.each(self.keys, paired)
        ctx = ops.attend(a, b, self.heads)
        both = ops.map(self._with_reads, a, ctx)
        if self.drop.p > 0:
            both = ops.map(self.drop, both)
        return ops.each(self.out, both)

    def _with_reads(self, a: Tensor, ctx: Tensor) -> Tensor:
        """``[a_m ; a_m * c_m]`` (``bilinear``) or ``[a_m ; c_m]`` (``attention``)."""
        return torch.cat([a, a * ctx if self.multiply else ctx], dim=-1)


class SharedPairedLearner(_PairedLearner):
    def __init__(self, widths: Mapping[str, int], width: int, dropout: float = 0.0) -> None:
        super().__init__(widths, width)
        self.net = MLP(width, width, width, dropout)
        self.norm = nn.LayerNorm(width)

    def shared(self) -> Iterator[nn.Parameter]:
        yield from self.net.parameters()
        yield from self.norm.parameters()

    def learn(self, ops: ModalityOps, paired: Values) -> Values:
        """Any number of modalities: each is read alone."""
        return ops.map(self._residual, ops.each(self.proj, paired))

    def _residual(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))
