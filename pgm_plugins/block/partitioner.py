"""Modal partitioner: splits ``h_m`` into uni-modal ``u_m`` and paired-modal ``p_m`` features.

``docs/design.md``, "Modal partitioner": the parts are disjoint and the decoder
inverts the partition exactly. Each modality's representation is mapped to a code
``z = h Q`` where ``Q`` (``d x r``) has orthonormal columns (``Q = I`` for ``split``); each channel
of ``z`` belongs to exactly one part (``gate``: masked so that ``u + p = z``; ``project`` /
``split``: slices that ``merge`` concatenates back into ``z``; ``none``: both parts are all of
``z`` and ``merge`` averages them), so ``merge(u, p) Q^T + (h - h Q Q^T) = h`` exactly.
Readings, chosen by ``PgMConfig.partitioner``:

- ``gate``: ``Q`` learned; each code channel has a learned logit, the gate is hard 0/1
  in the forward pass and trained straight-through (sigmoid gradient), so the uni share (the
  fraction of uni channels) is **learned**; it is kept inside ``rho_bounds`` exactly (when more or
  fewer logits are positive than the bounds allow, the channels with the largest logits are
  uni). The logits are parameters, not functions of ``h``: the gate sends no gradient into the
  host.
- ``project`` (default, chosen on validation: ``docs/method.md``): ``Q`` learned, the first
  ``round(rho * r)`` channels are uni (share fixed, chosen per task on validation).
- ``split``: ``Q = I`` (no parameters), the first ``round(rho * d)`` dims of ``h`` are uni.
- ``none``: ``Q`` learned, no partition: both learners see the whole code (a control arm).

Each part is read from its own copy of ``h`` (``h_uni`` / ``h_paired``): the same tensor forward,
carrying the branch's gradient-scale factor backward. ``Q`` is the column-orthonormal factor of a
QR decomposition of a free parameter (signs fixed by ``R``'s diagonal so it is continuous), which
keeps the module a plain ``nn.Module`` that copies and pickles like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins.block.config import PgMConfig

__all__ = ["Partition", "Partitioner", "build_partitioner", "code_maps", "orthonormal"]


@dataclass
class Partition:
    uni: Tensor  #: u_m, [B, T, k_u]
    paired: Tensor  #: p_m, [B, T, k_p]
    share: Tensor  #: 0-dim tensor, the uni-modal share rho_hat (fraction of uni channels)
    gate: Tensor | None = None  #: [r] hard 0/1 gate per code channel ('gate' only)
    gate_soft: Tensor | None = None  #: [r] sigmoid of the gate logits ('gate' only)


def orthonormal(weight: Tensor) -> Tensor:
    """``[..., d, r]`` with orthonormal columns spanning ``weight``'s columns (QR, signs fixed);
    a batch of maps of one shape is decomposed in one call."""
    # QR in float32 at least: CPU kernels lack it for bf16/fp16 (a half-precision host)
    q, r = torch.linalg.qr(
        weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    )
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return (q * signs.unsqueeze(-2)).to(weight.dtype)


def code_maps(partitioners: Mapping[str, Partitioner]) -> dict[str, Tensor | None]:
    """Every partitioner's ``Q`` for one forward: maps of one shape, dtype and device share one
    batched QR (forward and backward), the same numbers as one decomposition each."""
    maps: dict[str, Tensor | None] = {}
    same: dict[tuple[Any, ...], list[str]] = {}
    for m, part in partitioners.items():
        if part.basis is None:
            maps[m] = None
        else:
            b = part.basis
            same.setdefault((tuple(b.shape), b.dtype, b.device), []).append(m)
    for names in same.values():
        if len(names) == 1:
            maps[names[0]] = partitioners[names[0]].q()
            continue
        stacked = torch.stack([partitioners[m].basis for m in names])  # type: ignore[misc]
        for m, q in zip(names, orthonormal(stacked).unbind(0), strict=True):
            maps[m] = q
    return maps


class Partitioner(nn.Module):
    """Code map ``Q`` and channel assignment of one modality."""

    def __init__(
        self,
        dim: int,
        code: int,
        kind: str,
        uni_channels: int,
        tau: float = 1.0,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.dim, self.code, self.kind, self.k, self.tau = dim, code, kind, uni_channels, tau
        # bounds on the number of uni channels of the 'gate' kind
        self.lo = min(code, math.ceil(bounds[0] * code - 1e-9))
        self.hi = max(self.lo, math.floor(bounds[1] * code + 1e-9))
        self.basis: nn.Parameter | None = None
        if kind != "split":
            w = torch.empty(dim, code)
            nn.init.orthogonal_(w)
            self.basis = nn.Parameter(w)
        self.logits: nn.Parameter | None = None
        if kind == "gate":
            # the first round(rho * r) channels start uni, the others paired, close enough to
            # the threshold (+-0.5) that a consistent gradient flips a channel within an epoch
            start = torch.full((code,), -0.5)
            start[:uni_channels] = 0.5
            self.logits = nn.Parameter(start)

    def q(self) -> Tensor | None:
        """``Q`` (``[d, r]``), or None for 'split' (the identity)."""
        return None if self.basis is None else orthonormal(self.basis)

    def encode(self, h: Tensor, q: Tensor | None) -> Tensor:
        return h if q is None else h @ q

    def decode(self, z: Tensor, q: Tensor | None) -> Tensor:
        return z if q is None else z @ q.t()

    def forward(self, h_uni: Tensor, h_paired: Tensor, q: Tensor | None) -> Partition:
        z_u = self.encode(h_uni, q)
        # one code when both branches read the same tensor (no gradient scaling on either)
        z_p = z_u if h_paired is h_uni else self.encode(h_paired, q)
        return self.split(z_u, z_p, self.gates() if self.kind == "gate" else None)

    def split(
        self,
        z_u: Tensor,
        z_p: Tensor,
        gates: tuple[Tensor, Tensor] | None,
        lead: tuple[int, ...] = (),
    ) -> Partition:
        """The code's channels assigned to the uni part (read from ``z_u``) and the paired part
        (from ``z_p``). ``gates``: the 'gate' kind's :meth:`gates`. The stacked path passes the
        codes ``[M, N, r]`` of ``M`` partitioners of this kind and shape, their gates stacked
        ``[M, r]`` and ``lead=(M,)``, and gets their shares ``[M]``."""
        if self.kind == "gate":
            assert gates is not None
            soft, hard = gates
            g = hard + (soft - soft.detach())  # exactly hard forward, sigmoid gradient backward
            if g.dim() > 1:
                g = g.unsqueeze(-2)  # [M, 1, r] against the stack's [M, N, r]
            return Partition(
                uni=z_u * g,
                paired=z_p * (1 - g),
                share=hard.mean(dim=-1),
                gate=hard,
                gate_soft=soft,
            )
        if self.kind == "none":
            return Partition(uni=z_u, paired=z_p, share=z_u.new_full(lead, 0.5))
        share = z_u.new_full(lead, self.k / self.code)
        return Partition(uni=z_u[..., : self.k], paired=z_p[..., self.k :], share=share)

    def gates(self) -> tuple[Tensor, Tensor]:
        """The 'gate' kind's sigmoid of the logits and its hard 0/1 gate (same dtype)."""
        assert self.logits is not None
        soft = torch.sigmoid(self.logits / self.tau)
        return soft, self.hard_gate().to(soft.dtype)

    def hard_gate(self) -> Tensor:
        """0/1 per code channel: positive logits are uni, within [lo, hi] uni channels (the
        largest logits win when the count is outside the bounds)."""
        assert self.logits is not None
        count = (self.logits > 0).sum().clamp(self.lo, self.hi)
        rank = torch.argsort(torch.argsort(self.logits, descending=True))
        return rank < count

    def merge(self, uni: Tensor, paired: Tensor, gate: Tensor | None) -> Tensor:
        """Inverse of the split: the code from its two parts (``uni + paired`` for gates)."""
        if self.kind == "gate":
            assert gate is not None
            return uni * gate + paired * (1 - gate)
        if self.kind == "none":
            return 0.5 * (uni + paired)
        return torch.cat([uni, paired], dim=-1)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, d={self.dim}, r={self.code}, uni_channels(start)={self.k}"


def build_partitioner(config: PgMConfig, modality: str) -> Partitioner:
    d, r = config.modalities[modality], config.code_width(modality)
    if config.partitioner in ("split", "project"):
        k = config.part_widths(modality)[0]
    else:
        k = min(r, max(0, round(config.rho_for(modality) * r)))
    return Partitioner(d, r, config.partitioner, k, config.tau, config.rho_bounds)
