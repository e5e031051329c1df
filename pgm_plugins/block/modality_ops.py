"""How the block applies its per-modality modules: the one thing its two forward paths differ in.

:meth:`PgMBlock.forward <pgm_plugins.block.pgm.PgMBlock.forward>` is written once, in phases
(partition, uni learner, paired learner, decoder and mix, losses, heads), over the per-modality
values of one forward. Those values and the modules that act on them are handled by a
:class:`ModalityOps`:

- :class:`LoopOps` (here): a ``dict`` modality -> tensor, every module called once per modality.
  It takes any input (padding masks, unequal widths and lengths, dropout, hooked or replaced
  submodules) and is the reference.
- :class:`~pgm_plugins.block.stacked.StackedOps`: one ``[M, B*T, d]`` stack of modalities of one
  shape, every per-modality linear map run as one batched product over stacked weights.

A token-wise step that is not a per-modality module (a sum, a concatenation, the shared learner's
network) is written once and run through :meth:`ModalityOps.map`: per modality, or once on the
stack. The design of the block: ``docs/design.md`` ("Stacked path").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pgm_plugins.block.attention import masked_attention
from pgm_plugins.block.losses import masked_mse
from pgm_plugins.block.mlp import masked_mean
from pgm_plugins.block.optim import scale_grad
from pgm_plugins.block.partitioner import code_maps

__all__ = ["LoopOps", "ModalityOps", "SplitCodes", "Values"]

#: every modality's values in one forward: ``dict`` modality -> tensor (:class:`LoopOps`) or one
#: ``[M, B*T, .]`` stack (``StackedOps``); only the ops object that made them reads them
Values = Any


@dataclass
class SplitCodes:
    """What the partition phase hands on: the two parts and, per modality, share and gate."""

    uni: Values  #: u_m
    paired: Values  #: p_m
    shares: dict[str, Tensor]  #: rho_hat_m, 0-dim
    gates: dict[str, Tensor | None]  #: the 'gate' kind's hard 0/1 gate [r], else None


class ModalityOps(Protocol):
    """The operations :class:`~pgm_plugins.block.pgm.PgMBlock` runs over its modalities."""

    order: list[str]  #: the modalities of this forward, in config order
    masks: dict[str, Tensor | None]  #: per modality, ``[B, T]`` real tokens or None

    def gather(self, inputs: Mapping[str, Tensor]) -> Values:
        """The inputs as values."""

    def outputs(self, x: Values) -> dict[str, Tensor]:
        """Values as tensors shaped as the inputs."""

    def tokens(self, x: Values) -> dict[str, Tensor]:
        """Values as token-wise ``[B, T, .]`` tensors (``T = 1`` for vectors)."""

    def rows(self, x: Values) -> dict[str, Tensor]:
        """Pooled ``[B, .]`` values as tensors."""

    def map(self, fn: Callable[..., Tensor], *xs: Values) -> Values:
        """A token-wise function of every modality's values (the same function for each)."""

    def each(self, modules: nn.ModuleDict, *xs: Values) -> Values:
        """Modality m's values through ``modules[m]``."""

    def branches(self, h: Values, kappas: Mapping[tuple[str, str], float]) -> tuple[Values, Values]:
        """``h`` as read by the uni and paired branches: ``scale_grad`` by ``kappas[m, part]``."""

    def code_maps(self, partitioners: nn.ModuleDict) -> Any:
        """Every modality's ``Q`` for this forward (None for 'split')."""

    def encode(self, x: Values, q: Any) -> Values:
        """``x Q``."""

    def decode(self, z: Values, q: Any) -> Values:
        """``z Q^T``."""

    def partition(
        self, partitioners: nn.ModuleDict, h_uni: Values, h_paired: Values, q: Any
    ) -> SplitCodes:
        """Every modality's code split into its uni and paired parts."""

    def learn_paired(self, learner: nn.Module, paired: Values) -> Values:
        """The paired-modal learner over every modality's paired part."""

    def attend(self, a: Values, b: Values, heads: int) -> Values:
        """``c_m``: the mean over the other modalities n of ``Attn(a_m, b_n, b_n)``."""

    def mix(self, decoders: nn.ModuleDict, h: Values, change: Values) -> Values:
        """What the host receives from ``h`` and the decoded change (each decoder's ``mix``)."""

    def keep_padding(self, out: Values, h: Values) -> Values:
        """``out`` with padded positions set back to the input ``h``."""

    def pool(self, x: Values) -> Values:
        """``[B, T, c] -> [B, c]``: the mean over real tokens."""

    def mse(self, a: Values, b: Values) -> dict[str, Tensor]:
        """Per modality, the mean of ``(a - b)^2`` over channels and real tokens."""


class LoopOps:
    """Every per-modality module called once per modality, on a ``dict`` of tensors."""

    def __init__(self, order: Sequence[str], masks: Mapping[str, Tensor | None]) -> None:
        self.order = list(order)
        self.masks: dict[str, Tensor | None] = {m: masks.get(m) for m in self.order}

    def gather(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # vectors stay [B, d] all the way through (every part is token-wise or rank-agnostic):
        # the same numbers as a length-1 sequence, with fewer view and reshape ops per step
        return {m: inputs[m] for m in self.order}

    def outputs(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return x

    def tokens(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: t if t.dim() == 3 else t.unsqueeze(1) for m, t in x.items()}

    def rows(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return x

    def map(self, fn: Callable[..., Tensor], *xs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: fn(*(x[m] for x in xs)) for m in self.order}

    def each(self, modules: nn.ModuleDict, *xs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: modules[m](*(x[m] for x in xs)) for m in self.order}

    def branches(
        self, h: dict[str, Tensor], kappas: Mapping[tuple[str, str], float]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        uni = {m: scale_grad(h[m], kappas[m, "uni"]) for m in self.order}
        paired = {m: scale_grad(h[m], kappas[m, "paired"]) for m in self.order}
        return uni, paired

    def code_maps(self, partitioners: nn.ModuleDict) -> dict[str, Tensor | None]:
        return code_maps({m: partitioners[m] for m in self.order})  # type: ignore[misc]

    def encode(self, x: dict[str, Tensor], q: dict[str, Tensor | None]) -> dict[str, Tensor]:
        return {m: x[m] if (qm := q[m]) is None else x[m] @ qm for m in self.order}

    def decode(self, z: dict[str, Tensor], q: dict[str, Tensor | None]) -> dict[str, Tensor]:
        return {m: z[m] if (qm := q[m]) is None else z[m] @ qm.t() for m in self.order}

    def partition(
        self,
        partitioners: nn.ModuleDict,
        h_uni: dict[str, Tensor],
        h_paired: dict[str, Tensor],
        q: dict[str, Tensor | None],
    ) -> SplitCodes:
        parts = {m: partitioners[m](h_uni[m], h_paired[m], q[m]) for m in self.order}
        return SplitCodes(
            {m: p.uni for m, p in parts.items()},
            {m: p.paired for m, p in parts.items()},
            {m: p.share for m, p in parts.items()},
            {m: p.gate for m, p in parts.items()},
        )

    def learn_paired(self, learner: nn.Module, paired: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = learner(paired, self.masks)  # a module call: its hooks run
        return out

    def attend(self, a: dict[str, Tensor], b: dict[str, Tensor], heads: int) -> dict[str, Tensor]:
        return {
            m: torch.stack(
                [masked_attention(a[m], b[n], b[n], self.masks[n], heads) for n in a if n != m]
            ).mean(0)
            for m in a
        }

    def mix(
        self, decoders: nn.ModuleDict, h: dict[str, Tensor], change: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        return {m: decoders[m].mix_into(h[m], change[m]) for m in self.order}  # type: ignore[operator]

    def keep_padding(self, out: dict[str, Tensor], h: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            m: out[m] if mask is None else torch.where(mask.unsqueeze(-1), out[m], h[m])
            for m, mask in self.masks.items()
        }

    def pool(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: masked_mean(t, self.masks[m]) for m, t in x.items()}

    def mse(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: masked_mse(a[m], b[m], self.masks[m]) for m in self.order}
