"""The block's forward for modalities whose modules have one shape, as batched products.

When every modality the block sees has one input shape, ``[B, d]`` or ``[B, T, d]`` without a
mask (MISA's three ``[B, 128]`` projections, MULT's three ``[B, T, 50]`` sequences, a CLIP-like
pair of equal-width embeddings) and the configuration gives them modules of one shape, the
per-modality linear maps of the partitioner, learners, decoders and heads run as one ``baddbmm``
/ ``bmm`` over a ``[M, B*T, d]`` stack instead of ``M`` separate ``addmm`` calls, and the
cross-modal attention as one batched product: the per-step cost of the block is mostly a fixed
cost per aten call, which this divides by about ``M`` (issue 7). The weights are stacked
(``torch.stack``) from the existing parameters at every forward, so the state dict, optimizer
groups and learning-rate multipliers are those of the per-modality path, and so are the numbers
(the same products, batched; tested in float64 against the per-modality path in
``tests/test_block_stacked.py``).

Anything else (padding masks, unequal widths, lengths or shares, dropout while training) takes
the per-modality path in ``pgm.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from pgm_plugins.block.mlp import MLP
from pgm_plugins.block.optim import scale_grad
from pgm_plugins.block.partitioner import Partitioner, orthonormal

if TYPE_CHECKING:
    from pgm_plugins.block.pgm import PgMBlock

__all__ = ["stack_groups", "stackable", "stacked_forward"]


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
        from pgm_plugins.block.decoder import UniPairedDecoder
        from pgm_plugins.block.paired_learner import AttentionPairedLearner, SharedPairedLearner
        from pgm_plugins.block.pgm import PgMBlock
        from pgm_plugins.block.uni_learner import UniModalLearner

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
    """The stacked twin of ``MLP.forward`` (dropout is off: ``stackable`` checked it)."""
    hidden = _linear([m[0] for m in mods], x)
    hidden = mods[0][1](hidden)  # GELU, parameter-free
    return _linear([m[3] for m in mods], hidden)


def _split(x: Tensor, shape: torch.Size) -> tuple[Tensor, ...]:
    """``[M, B*T, d] -> M x [B, (T,) d]``."""
    return x.view(x.shape[0], *shape[:-1], x.shape[-1]).unbind(0)


def _pool(x: Tensor, shape: torch.Size) -> Tensor:
    """``[M, B*T, c] -> [M, B, c]``: ``masked_mean`` with no mask, per modality."""
    if len(shape) == 2:
        return x
    return x.view(x.shape[0], shape[0], shape[1], x.shape[-1]).mean(dim=2)


def _reads(a: Tensor, b: Tensor, shape: torch.Size, heads: int) -> Tensor:
    """``c_m``: the mean over the other modalities n of ``Attn(a_m, b_n, b_n)``, for every m at
    once (``a``, ``b``: ``[M, B*T, w]``; no mask). As ``masked_attention``, in the same order."""
    n, tokens, w = a.shape
    others = [[j for j in range(n) if j != i] for i in range(n)]
    keys = b.flip(0).unsqueeze(1) if n == 2 else b[torch.tensor(others, device=b.device)]
    if len(shape) == 2 or shape[1] == 1:
        # one key each: its softmax weight is exactly 1, every query reads its value
        return keys.mean(1)
    bsz, t = shape[0], shape[1]
    dh = w // heads
    q = a.view(n, 1, bsz, t, w)
    k = keys.view(n, n - 1, bsz, t, w)
    if heads > 1:
        q = q.reshape(n, 1, bsz, t, heads, dh).transpose(-2, -3)
        k = k.reshape(n, n - 1, bsz, t, heads, dh).transpose(-2, -3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    read = torch.softmax(scores, dim=-1) @ k
    if heads > 1:
        read = read.transpose(-2, -3).reshape(n, n - 1, bsz, t, w)
    return read.mean(1).reshape(n, tokens, w)


def stacked_forward(block: PgMBlock, order: Sequence[str], hs: dict[str, Tensor]) -> Any:
    """``PgMBlock.forward`` on stacked equal-shape inputs; returns the same ``PgMOutput``."""
    from pgm_plugins.block.pgm import ModalParts, PgMOutput

    cfg = block.config
    n = len(order)
    n_mod = len(cfg.modalities)
    parts_list: list[Partitioner] = [block.partitioners[m] for m in order]  # type: ignore[misc]
    first = parts_list[0]
    shape = hs[order[0]].shape  # [B, d] or [B, T, d], every modality's
    tokens = shape[0] if len(shape) == 2 else shape[0] * shape[1]
    # token-wise work on [M, B*T, d] (a view of the stack); back to [M, B, (T,) .] at the end
    h = torch.stack([hs[m] for m in order]).view(n, tokens, shape[-1])
    kappas = {(m, br): cfg.kappa(m, br) for m in order for br in ("uni", "paired")}
    if all(k == 1.0 for k in kappas.values()):
        h_uni = h_paired = h  # no gradient scaling on any branch: one stack
    else:
        h_uni = torch.stack([scale_grad(hs[m], kappas[m, "uni"]) for m in order])
        h_paired = torch.stack([scale_grad(hs[m], kappas[m, "paired"]) for m in order])
        h_uni = h_uni.view(n, tokens, shape[-1])
        h_paired = h_paired.view(n, tokens, shape[-1])
    # code maps: one batched QR over the stacked bases (as code_maps does)
    q = (
        None
        if first.basis is None
        else orthonormal(torch.stack([p.basis for p in parts_list if p.basis is not None]))
    )
    z_u = h_uni if q is None else torch.bmm(h_uni, q)
    z_p = z_u if h_paired is h_uni else (h_paired if q is None else torch.bmm(h_paired, q))
    gates: list[Tensor | None] = [None] * n
    if first.kind == "gate":
        soft, hard = (torch.stack(t) for t in zip(*(p.gates() for p in parts_list), strict=True))
        g = (hard + (soft - soft.detach())).unsqueeze(1)  # [M, 1, r]
        uni, paired = z_u * g, z_p * (1 - g)
        share_t = hard.mean(dim=1)
        shares = dict(zip(order, share_t.unbind(0), strict=True))
        gates = list(hard.unbind(0))
    elif first.kind == "none":
        uni, paired = z_u, z_p
        shares = dict(zip(order, z_u.new_full((n,), 0.5).unbind(0), strict=True))
    else:
        uni, paired = z_u[..., : first.k], z_p[..., first.k :]
        shares = dict(zip(order, z_u.new_full((n,), first.k / first.code).unbind(0), strict=True))

    uni_l = _mlp([block.uni_learners[m].net for m in order], uni) if cfg.uni_learner else uni
    learner: Any = block.paired_learner
    paired_l: Tensor | None
    if learner is None:
        paired_l = paired
    elif cfg.paired == "shared":
        x = _linear([learner.proj[m] for m in order], paired)
        paired_l = learner.norm(x + learner.net(x))
    else:
        a = _linear([learner.proj[m] for m in order], paired)
        b = _linear([learner.keys[m] for m in order], paired)
        ctx = _reads(a, b, shape, learner.heads)
        mixed = a * ctx if learner.multiply else ctx
        paired_l = _linear([learner.out[m] for m in order], torch.cat([a, mixed], dim=-1))

    outputs: dict[str, Tensor] = {}
    rebuilt: dict[str, Tensor] = {}
    if block.decoders:
        decs = [block.decoders[m] for m in order]
        code_in = torch.cat([uni_l, paired_l], dim=-1)
        dz = _mlp([d.net for d in decs], code_in)
        change = dz if q is None else torch.bmm(dz, q.transpose(1, 2))
        rebuilt = dict(zip(order, _split(h + change, shape), strict=True))
        if cfg.mix == "gate":
            beta = torch.stack([d.beta for d in decs]).reshape(n, 1, 1)  # type: ignore[misc]
            out = h + beta * change
        else:
            out = h + change
        outputs = dict(zip(order, out.view(n, *shape).unbind(0), strict=True))
    else:
        outputs = {m: hs[m] for m in order}

    losses: dict[str, Tensor] = {}
    if q is not None and cfg.lambda_rec > 0 and cfg.partitioner != "split":
        hd = h.detach()  # the partition's own objective: no gradient into the host
        rec = torch.bmm(torch.bmm(hd, q), q.transpose(1, 2))
        mse = (rec - hd).pow(2).mean(dim=-1).mean(dim=-1)  # [M]
        for m, v in zip(order, mse.unbind(0), strict=True):
            losses[f"rec.{m}"] = (cfg.lambda_rec / n_mod) * v
    paired_pooled = _pool(paired_l, shape)
    if cfg.paired == "shared" and learner is not None and cfg.lambda_align > 0:
        # pooled [B, w] codes are their own mean: the block's own alignment loss takes them
        pooled = dict(zip(order, paired_pooled.unbind(0), strict=True))
        losses["align"] = cfg.lambda_align * block.align_loss(pooled)

    logits: dict[str, Tensor] = {}
    if len(block.uni_heads):
        uni_logits = _linear([block.uni_heads[m] for m in order], _pool(uni_l, shape))
        logits = {f"uni.{m}": t for m, t in zip(order, uni_logits.unbind(0), strict=True)}
    if len(block.paired_heads):
        assert block.paired_bias is not None
        each = _linear([block.paired_heads[m] for m in order], paired_pooled)
        total = block.paired_bias.expand(each.shape[1], cfg.out_dim)
        for t in each.unbind(0):
            total = total + t
        logits["paired"] = total

    # parts are token-wise, [B, T, .] (T = 1 for vectors)
    seq = (shape[0], shape[1] if len(shape) == 3 else 1)
    uni_d, paired_in, uni_ld, paired_d = (
        dict(zip(order, t.view(n, *seq, t.shape[-1]).unbind(0), strict=True))
        for t in (uni, paired, uni_l, paired_l)
    )
    parts = {
        m: ModalParts(
            uni_d[m],
            paired_in[m],
            uni_ld[m],
            paired_d[m],
            rebuilt[m].view(*seq, -1) if m in rebuilt else None,
            gates[i],
            None,
        )
        for i, m in enumerate(order)
    }
    return PgMOutput(outputs, parts, shares, losses, logits, False, cfg)
