"""The block's per-modality modules as batched products, for modalities of one shape.

When every modality the block sees has one input shape, ``[B, d]`` or ``[B, T, d]`` without a
mask (MISA's three ``[B, 128]`` projections, MULT's three ``[B, T, 50]`` sequences, a CLIP-like
pair of equal-width embeddings) and the configuration gives them modules of one shape,
:class:`StackedOps` runs the block's one forward over a ``[M, B*T, d]`` stack: the per-modality
linear maps of the partitioner, learners, decoders and heads as one ``baddbmm`` / ``bmm`` over
weights stacked (``torch.stack``) from the existing parameters at every forward, the
cross-modal attention as one batched product. The block's per-step cost is mostly a fixed cost
per aten call, which this divides by about ``M``; the state dict, optimizer groups and
learning-rate multipliers are those of the per-modality path, and so are the numbers (the same
products, batched; tested in float64 against :class:`~pgm_plugins.block.modality_ops.LoopOps`
in ``tests/test_block_stacked.py``).

Anything else (padding masks, unequal widths, lengths or shares, dropout while training, hooked
or replaced submodules) takes :class:`~pgm_plugins.block.modality_ops.LoopOps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from pgm_plugins.block.attention import stacked_reads
from pgm_plugins.block.decoder import UniPairedDecoder
from pgm_plugins.block.mlp import MLP
from pgm_plugins.block.modality_ops import SplitCodes
from pgm_plugins.block.optim import scale_grad
from pgm_plugins.block.partitioner import Partitioner, orthonormal
from pgm_plugins.block.uni_learner import UniModalLearner

if TYPE_CHECKING:
    from pgm_plugins.block.pgm import PgMBlock

__all__ = ["StackedOps", "stack_groups", "stackable"]


def stack_groups(config: Any) -> frozenset[str] | None:
    """The modalities whose modules all have one shape, when every configured modality does
    (equal widths, equal uni share); None otherwise. Decided once per block."""
    names = list(config.modalities)
    if len(names) < 2:
        return None
    key = {(config.modalities[m], config.code_width(m), config.part_widths(m)) for m in names}
    return frozenset(names) if len(key) == 1 else None


def stackable(
    block: PgMBlock, order: Sequence[str], hs: dict[str, Tensor], masks: dict[str, Any]
) -> bool:
    """Whether this forward can take the stacked path."""
    group = getattr(block, "_stack_group", None)
    if group is None or len(order) != len(group) or masks:
        return False
    if block.training and block.config.dropout > 0:
        return False  # dropout draws would differ from the per-modality path's
    first = hs[order[0]]
    if not all(hs[m].shape == first.shape and hs[m].dtype == first.dtype for m in order):
        return False
    return _plain(block)


_OWN_TYPES: frozenset[type] = frozenset()


def _own_types() -> frozenset[type]:
    global _OWN_TYPES
    if not _OWN_TYPES:
        from pgm_plugins.block.paired_learner import AttentionPairedLearner, SharedPairedLearner
        from pgm_plugins.block.pgm import PgMBlock

        _OWN_TYPES = frozenset(
            {
                PgMBlock,
                nn.ModuleDict,
                Partitioner,
                UniModalLearner,
                MLP,
                nn.Linear,
                nn.GELU,
                nn.Dropout,
                nn.LayerNorm,
                AttentionPairedLearner,
                SharedPairedLearner,
                UniPairedDecoder,
            }
        )
    return _OWN_TYPES


def _plain(block: PgMBlock) -> bool:
    """Whether the block's submodules are its own, unhooked: the stacked path reads their
    weights directly, so a replaced module (an adapter wrapping a Linear, say) or a forward hook
    on one (which would not run) sends the forward down the per-modality path."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return False
    own = _own_types()
    stack: list[nn.Module] = [block]
    while stack:
        module = stack.pop()
        if module is None:
            continue
        if type(module) not in own or module._forward_hooks or module._forward_pre_hooks:
            return False
        stack.extend(module._modules.values())  # type: ignore[arg-type]
    return True


def _linear(mods: Sequence[Any], x: Tensor) -> Tensor:
    """``[M, N, in] -> [M, N, out]``: modality ``i``'s rows through ``mods[i]``."""
    w = torch.stack([m.weight for m in mods]).transpose(1, 2)
    if mods[0].bias is None:
        return torch.bmm(x, w)
    b = torch.stack([m.bias for m in mods]).unsqueeze(1)
    return torch.baddbmm(b, x, w)


def _mlp(mods: Sequence[Any], x: Tensor) -> Tensor:
    """``MLP.forward`` over the stack (dropout is off: ``stackable`` checked it)."""
    hidden = _linear([m[0] for m in mods], x)
    hidden = mods[0][1](hidden)  # GELU, parameter-free
    return _linear([m[3] for m in mods], hidden)


class StackedOps:
    """Modalities of one input shape as one ``[M, B*T, d]`` stack; every per-modality module
    of one kind run as one batched product over its modalities' stacked weights."""

    def __init__(self, order: Sequence[str], shape: torch.Size) -> None:
        self.order = list(order)
        self.masks: dict[str, Tensor | None] = dict.fromkeys(self.order)
        self.shape = shape  #: every modality's input shape, [B, d] or [B, T, d]
        self.rows_per_modality = shape[0] if len(shape) == 2 else shape[0] * shape[1]
        self._inputs: list[Tensor] = []

    # ------------------------------------------------------------------ layout
    def gather(self, inputs: Mapping[str, Tensor]) -> Tensor:
        self._inputs = [inputs[m] for m in self.order]
        return torch.stack(self._inputs).view(len(self.order), self.rows_per_modality, -1)

    def _unbind(self, x: Tensor, *lead: int) -> dict[str, Tensor]:
        return dict(
            zip(self.order, x.view(len(self.order), *lead, x.shape[-1]).unbind(0), strict=True)
        )

    def outputs(self, x: Tensor) -> dict[str, Tensor]:
        return self._unbind(x, *self.shape[:-1])

    def tokens(self, x: Tensor) -> dict[str, Tensor]:
        return self._unbind(x, self.shape[0], self.shape[1] if len(self.shape) == 3 else 1)

    def rows(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.order, x.unbind(0), strict=True))

    # ------------------------------------------------------------------ modules
    def map(self, fn: Callable[..., Tensor], *xs: Tensor) -> Tensor:
        return fn(*xs)

    def each(self, modules: nn.ModuleDict, *xs: Tensor) -> Tensor:
        mods = [modules[m] for m in self.order]
        kind = type(mods[0])
        if kind is nn.Linear:
            return _linear(mods, xs[0])
        if kind is UniModalLearner:
            return _mlp([m.net for m in mods], xs[0])
        if kind is UniPairedDecoder:
            return _mlp([m.net for m in mods], torch.cat(xs, dim=-1))
        raise TypeError(f"no stacked form of {kind.__name__} (stackable() admits none)")

    def branches(self, h: Tensor, kappas: Mapping[tuple[str, str], float]) -> tuple[Tensor, Tensor]:
        if all(k == 1.0 for k in kappas.values()):
            return h, h  # no gradient scaling on any branch: one stack
        n, rows = len(self.order), self.rows_per_modality
        uni = [
            scale_grad(x, kappas[m, "uni"]) for m, x in zip(self.order, self._inputs, strict=True)
        ]
        paired = [
            scale_grad(x, kappas[m, "paired"])
            for m, x in zip(self.order, self._inputs, strict=True)
        ]
        return torch.stack(uni).view(n, rows, -1), torch.stack(paired).view(n, rows, -1)

    def code_maps(self, partitioners: nn.ModuleDict) -> Tensor | None:
        """``[M, d, r]``: one batched QR over the stacked bases (as ``code_maps`` does)."""
        bases = [partitioners[m].basis for m in self.order]
        if bases[0] is None:
            return None
        return orthonormal(torch.stack(bases))  # type: ignore[arg-type]

    def encode(self, x: Tensor, q: Tensor | None) -> Tensor:
        return x if q is None else torch.bmm(x, q)

    def decode(self, z: Tensor, q: Tensor | None) -> Tensor:
        return z if q is None else torch.bmm(z, q.transpose(1, 2))

    def partition(
        self,
        partitioners: nn.ModuleDict,
        h_uni: Tensor,
        h_paired: Tensor,
        q: Tensor | None,
    ) -> SplitCodes:
        parts: list[Partitioner] = [partitioners[m] for m in self.order]  # type: ignore[misc]
        z_u = self.encode(h_uni, q)
        z_p = z_u if h_paired is h_uni else self.encode(h_paired, q)
        gates = None
        if parts[0].kind == "gate":
            soft, hard = (torch.stack(t) for t in zip(*(p.gates() for p in parts), strict=True))
            gates = (soft, hard)
        split = parts[0].split(z_u, z_p, gates, lead=(len(parts),))
        each_gate = [None] * len(parts) if split.gate is None else split.gate.unbind(0)
        return SplitCodes(
            split.uni,
            split.paired,
            dict(zip(self.order, split.share.unbind(0), strict=True)),
            dict(zip(self.order, each_gate, strict=True)),
        )

    def learn_paired(self, learner: nn.Module, paired: Tensor) -> Tensor:
        out: Tensor = learner.learn(self, paired)  # type: ignore[operator]
        return out

    def attend(self, a: Tensor, b: Tensor, heads: int) -> Tensor:
        return stacked_reads(a, b, tuple(self.shape), heads)

    def mix(self, decoders: nn.ModuleDict, h: Tensor, change: Tensor) -> Tensor:
        first: UniPairedDecoder = decoders[self.order[0]]  # type: ignore[assignment]
        if first.beta is None:
            return h + change
        beta = torch.stack([decoders[m].beta for m in self.order])  # type: ignore[misc]
        return h + beta.reshape(len(self.order), 1, 1) * change

    def keep_padding(self, out: Tensor, h: Tensor) -> Tensor:
        return out  # no masks: stackable() sends masked inputs down the per-modality path

    def pool(self, x: Tensor) -> Tensor:
        """``[M, B*T, c] -> [M, B, c]``: ``masked_mean`` with no mask, per modality."""
        if len(self.shape) == 2:
            return x
        return x.view(x.shape[0], self.shape[0], self.shape[1], x.shape[-1]).mean(dim=2)

    def mse(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return dict(
            zip(self.order, (a - b).pow(2).mean(dim=-1).mean(dim=-1).unbind(0), strict=True)
        )
