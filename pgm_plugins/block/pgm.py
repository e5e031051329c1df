"""``PgMBlock``: the four parts of PgM composed into one ``nn.Module``.

PgM-style block, reconstructed from the paper's description (arXiv 2507.11661, "PgM: Partitioner
Guided Modal Learning Framework", ACM MM 2025; only its abstract could be read). Reference design
and where it departs from the paper: ``../shared/design/PGM_METHOD.md``.

``block({"text": h_t, "audio": h_a})`` takes each modality's representation, ``[B, d_m]`` or
``[B, T_m, d_m]`` (widths and lengths may differ; ``masks={m: [B, T_m] bool}`` marks real
tokens), partitions it, runs the uni-modal and paired-modal learners, rebuilds it with the decoder
and returns a :class:`PgMOutput` with the rebuilt representations, the parts, the uni shares and
the auxiliary loss terms. The design, and the evidence that chose it: ``docs/method.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor, nn

from pgm_plugins.block.config import PgMConfig
from pgm_plugins.block.decoder import UniPairedDecoder
from pgm_plugins.block.losses import (
    check_targets,
    cmd_loss,
    info_nce_loss,
    masked_mse,
    sum_terms,
    task_loss,
)
from pgm_plugins.block.mlp import masked_mean
from pgm_plugins.block.optim import make_param_groups, scale_grad
from pgm_plugins.block.paired_learner import (
    AttentionPairedLearner,
    SharedPairedLearner,
    _PairedLearner,
)
from pgm_plugins.block.partitioner import Partitioner, build_partitioner, code_maps
from pgm_plugins.block.stacked import stack_groups, stackable, stacked_forward
from pgm_plugins.block.uni_learner import UniModalLearner
from pgm_plugins.errors import (
    InputError,
    NonFiniteError,
    UnknownNameError,
    choices_text,
    did_you_mean,
)

__all__ = ["ModalParts", "PgMBlock", "PgMOutput"]


@dataclass
class ModalParts:
    """One modality's tensors from the last forward (token-wise, ``[B, T, .]``)."""

    uni: Tensor  #: u_m, the partitioner's uni-modal features
    paired: Tensor  #: p_m, the partitioner's paired-modal features
    uni_learned: Tensor  #: u~_m, after the uni-modal learner
    paired_learned: Tensor | None  #: p~_m, after the paired-modal learner (None when skipped)
    rebuilt: Tensor | None  #: h_hat_m, the decoder's output (None without decoder)
    gate: Tensor | None = None  #: [r] hard 0/1 channel gate of the 'gate' partitioner
    mask: Tensor | None = None  #: [B, T] real tokens (None: every token is real)

    def detach(self) -> ModalParts:
        def d(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return ModalParts(
            self.uni.detach(),
            self.paired.detach(),
            self.uni_learned.detach(),
            d(self.paired_learned),
            d(self.rebuilt),
            d(self.gate),
            self.mask,
        )


@overload
def _tokens(t: Tensor) -> Tensor: ...
@overload
def _tokens(t: None) -> None: ...
def _tokens(t: Tensor | None) -> Tensor | None:
    """A vector modality's tensor as a length-1 sequence (``ModalParts`` are token-wise)."""
    return t if t is None or t.dim() == 3 else t.unsqueeze(1)


def _check_finite(inputs: Mapping[str, Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming the first modality holding NaN or inf.

    One host sync per forward, not one per modality: NaN and inf carry into a sum, so a finite
    sum of every input proves them all finite; a non-finite one (or a finite input large enough
    to overflow it) is checked modality by modality."""
    total: Tensor | None = None
    for h in inputs.values():
        s = h.sum(dtype=torch.float32) if h.dtype in (torch.float16, torch.bfloat16) else h.sum()
        total = s if total is None else total + s
    if total is None or bool(torch.isfinite(total)):
        return
    for m, h in inputs.items():
        if not bool(torch.isfinite(h).all()):
            raise NonFiniteError(
                f"modality {m!r} holds NaN or inf values "
                f"({int((~torch.isfinite(h)).sum())} of {h.numel()})."
            )


@dataclass
class PgMOutput:
    """What one forward of :class:`PgMBlock` returns."""

    outputs: dict[str, Tensor]  #: what the host receives per modality, shaped as the inputs
    parts: dict[str, ModalParts]
    shares: dict[str, Tensor]  #: uni-modal share rho_hat_m per modality (0-dim tensors)
    losses: dict[str, Tensor]  #: label-free loss terms, already weighted by their lambda
    logits: dict[str, Tensor]  #: head outputs: 'uni.<m>' and 'paired'
    paired_skipped: bool = False  #: True when the paired path could not run (one modality)
    config: PgMConfig | None = field(default=None, repr=False)

    def share_values(self) -> dict[str, float]:
        """The uni-modal shares as plain floats (detached), for logs and plots."""
        return {m: float(s.detach()) for m, s in self.shares.items()}

    def loss_terms(self, targets: Tensor | None = None) -> dict[str, Tensor]:
        """Every auxiliary loss term by name, weighted; label terms only when ``targets`` given."""
        terms = dict(self.losses)
        if targets is None or not self.logits:
            if targets is not None and self.config is not None and not self.config.has_labels:
                raise InputError(
                    "targets were given but the block's task is 'none'; configure "
                    "task='regression' or 'classification' to train its heads."
                )
            return terms
        cfg = self.config
        assert cfg is not None
        batch = next(iter(self.logits.values())).shape[0]
        y = check_targets(targets, cfg.task, batch, cfg.num_classes)
        n_mod = len(cfg.modalities)  # weights do not grow with the number of modalities
        for name, logits in self.logits.items():
            weight = cfg.lambda_paired if name == "paired" else cfg.lambda_uni / n_mod
            terms[f"task.{name}"] = weight * task_loss(logits, y, cfg.task, cfg.regression_loss)
        return terms

    def aux_loss(self, targets: Tensor | None = None) -> Tensor:
        """Sum of :meth:`loss_terms`: add it to the host's task loss."""
        return sum_terms(self.loss_terms(targets), next(iter(self.outputs.values())))


class PgMBlock(nn.Module):
    """Modal partitioner, uni-modal learner, paired-modal learner and uni-paired decoder."""

    def __init__(self, config: PgMConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        names = list(cfg.modalities)
        widths = {m: cfg.part_widths(m) for m in names}
        self.partitioners = nn.ModuleDict({m: build_partitioner(cfg, m) for m in names})
        self.uni_learners = nn.ModuleDict(
            {m: UniModalLearner(widths[m][0], cfg.uni_hidden(m), cfg.dropout) for m in names}
            if cfg.uni_learner
            else {}
        )
        uni_out = {m: widths[m][0] for m in names}
        paired_in = {m: widths[m][1] for m in names}
        w = cfg.paired_dim()
        self.paired_learner: nn.Module | None = None
        if cfg.paired_learner:
            self.paired_learner = (
                SharedPairedLearner(paired_in, w, cfg.dropout)
                if cfg.paired == "shared"
                else AttentionPairedLearner(
                    paired_in, w, cfg.heads, cfg.dropout, multiply=cfg.paired == "bilinear"
                )
            )
        paired_out = {m: w if cfg.paired_learner else paired_in[m] for m in names}
        self.uni_heads = nn.ModuleDict(
            {m: nn.Linear(uni_out[m], cfg.out_dim) for m in names}
            if cfg.has_labels and cfg.lambda_uni > 0
            else {}
        )
        # the paired head sees every modality's paired part: sum_m W_m pool(p~_m) + b, one
        # weight per modality so that each lands in that modality's optimizer group
        self.paired_heads = nn.ModuleDict(
            {m: nn.Linear(paired_out[m], cfg.out_dim, bias=False) for m in names}
            if cfg.has_labels and cfg.lambda_paired > 0
            else {}
        )
        self.paired_bias = (
            nn.Parameter(torch.zeros(cfg.out_dim)) if len(self.paired_heads) else None
        )
        self.decoders = nn.ModuleDict(
            {
                m: UniPairedDecoder(
                    uni_out[m],
                    paired_out[m],
                    cfg.code_width(m),
                    cfg.decoder_hidden(m),
                    cfg.mix,
                    cfg.dropout,
                )
                for m in names
            }
            if cfg.decoder
            else {}
        )
        self._paired_out = paired_out
        #: modalities run as one stacked computation when they arrive with one shape, unmasked
        #: (``stacked.py``); None: every forward takes the per-modality path
        self._stack_group = stack_groups(cfg)

    # ------------------------------------------------------------------ forward
    def check_inputs(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> None:
        """Raise :class:`InputError` for anything the block cannot take, naming the modality."""
        cfg = self.config
        if not isinstance(inputs, Mapping) or not inputs:
            raise InputError(
                f"PgMBlock takes a non-empty mapping modality -> tensor; got "
                f"{type(inputs).__name__}. Configured: {choices_text(cfg.modalities)}."
            )
        unknown = [m for m in inputs if m not in cfg.modalities]
        if unknown:
            raise UnknownNameError(
                f"modality {unknown[0]!r} is not in the block's config; configured: "
                f"{choices_text(cfg.modalities)}." + did_you_mean(unknown[0], cfg.modalities)
            )
        batch = None
        for m, h in inputs.items():
            if not isinstance(h, Tensor) or h.dim() not in (2, 3):
                shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
                raise InputError(f"modality {m!r}: expected [B, d] or [B, T, d], got {shape}.")
            if h.shape[-1] != cfg.modalities[m]:
                raise InputError(
                    f"modality {m!r} has width {h.shape[-1]} (shape {tuple(h.shape)}) but the "
                    f"config says {cfg.modalities[m]}; fix PgMConfig.modalities[{m!r}] or the "
                    "layout of the input."
                )
            if h.dim() == 3 and h.shape[1] == 0:
                raise InputError(
                    f"modality {m!r} is a sequence of length 0 (shape {tuple(h.shape)}); give at "
                    "least one token (mark padding with masks= instead of dropping every token)."
                )
            if batch is not None and h.shape[0] != batch:
                raise InputError(f"modality {m!r} has batch size {h.shape[0]}, others {batch}.")
            batch = h.shape[0]
        # a data-dependent check cannot be traced; eager training stays protected
        if cfg.check_finite and not torch.compiler.is_compiling():
            _check_finite(inputs)
        for m, mask in (masks or {}).items():
            if m not in inputs:
                raise InputError(
                    f"masks has modality {m!r} but the inputs do not; inputs: "
                    f"{choices_text(inputs)}." + did_you_mean(m, inputs)
                )
            h = inputs[m]
            want = (h.shape[0], h.shape[1]) if h.dim() == 3 else None
            if want is None or not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = (
                    f"{tuple(mask.shape)} {mask.dtype}"
                    if isinstance(mask, Tensor)
                    else type(mask).__name__
                )
                raise InputError(
                    f"mask of modality {m!r} must be a bool tensor [B, T] for a [B, T, d] input "
                    f"(True = real token); got {got} for an input of shape {tuple(h.shape)}."
                )
            if tuple(mask.shape) != want:
                raise InputError(
                    f"mask of modality {m!r} has shape {tuple(mask.shape)}; the input "
                    f"{tuple(h.shape)} needs {want}."
                )

    def forward(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> PgMOutput:
        self.check_inputs(inputs, masks)
        cfg = self.config
        masks = dict(masks or {})
        # vectors stay [B, d] all the way through (every part is token-wise or rank-agnostic):
        # the same numbers as a length-1 sequence, with fewer view and reshape ops per step
        hs = dict(inputs)
        order = [m for m in cfg.modalities if m in hs]  # config order, whatever the caller's
        mk: dict[str, Tensor | None] = {m: masks.get(m) for m in order}
        n_mod = len(cfg.modalities)
        if stackable(self, order, hs, masks):
            stacked: PgMOutput = stacked_forward(self, order, hs)
            return stacked

        parts_of = {}
        qs = code_maps({m: self.partitioners[m] for m in order})  # type: ignore[misc]
        for m in order:
            part: Partitioner = self.partitioners[m]  # type: ignore[assignment]
            h = hs[m]
            h_uni = scale_grad(h, cfg.kappa(m, "uni"))
            h_paired = scale_grad(h, cfg.kappa(m, "paired"))
            parts_of[m] = part(h_uni, h_paired, qs[m])
        uni_learned = {
            m: self.uni_learners[m](parts_of[m].uni) if cfg.uni_learner else parts_of[m].uni
            for m in order
        }
        paired_in = {m: parts_of[m].paired for m in order}
        skipped = False
        paired_learned: dict[str, Tensor]
        if self.paired_learner is None:
            paired_learned = paired_in
        elif getattr(self.paired_learner, "needs_pairs", False) and len(order) < 2:
            paired_learned, skipped = {}, True
        else:
            paired_learned = self.paired_learner(paired_in, mk)

        outputs, rebuilt = {}, {}
        for m in order:
            h = hs[m]
            if self.decoders:
                dec: UniPairedDecoder = self.decoders[m]  # type: ignore[assignment]
                part = self.partitioners[m]  # type: ignore[assignment]
                change = part.decode(dec(uni_learned[m], paired_learned.get(m)), qs[m])
                rebuilt[m] = h + change
                out = dec.mix_into(h, change)
                if mk[m] is not None:  # padded positions: the input, unchanged
                    out = torch.where(mk[m].unsqueeze(-1), out, h)  # type: ignore[union-attr]
            else:
                out = h
            outputs[m] = out

        losses: dict[str, Tensor] = {}
        for m in order:
            part = self.partitioners[m]  # type: ignore[assignment]
            q = qs[m]
            if q is not None and cfg.lambda_rec > 0 and cfg.partitioner != "split":
                h = hs[m].detach()  # the partition's own objective: no gradient into the host
                losses[f"rec.{m}"] = (cfg.lambda_rec / n_mod) * masked_mse(
                    part.decode(part.encode(h, q), q), h, mk[m]
                )
        if (
            cfg.paired == "shared"
            and self.paired_learner is not None
            and len(order) > 1
            and cfg.lambda_align > 0
        ):
            losses["align"] = cfg.lambda_align * self.align_loss(paired_learned, mk)

        logits = {
            f"uni.{m}": self.uni_heads[m](masked_mean(uni_learned[m], mk[m]))
            for m in order
            if m in self.uni_heads
        }
        if len(self.paired_heads) and len(order) > 1 and not skipped:
            logits["paired"] = self.paired_logits(paired_learned, mk)

        parts = {
            m: ModalParts(
                _tokens(parts_of[m].uni),
                _tokens(parts_of[m].paired),
                _tokens(uni_learned[m]),
                _tokens(paired_learned.get(m)),
                _tokens(rebuilt.get(m)),
                parts_of[m].gate,
                mk[m],
            )
            for m in order
        }
        shares = {m: parts_of[m].share for m in order}
        return PgMOutput(outputs, parts, shares, losses, logits, skipped, cfg)

    def paired_logits(
        self,
        paired_learned: Mapping[str, Tensor],
        masks: Mapping[str, Tensor | None] | None = None,
    ) -> Tensor:
        """The paired head over every modality's pooled paired code (missing ones count 0).

        Public so that an engine running one modality per call (independent mode) can train the
        head across the calls of one step from the parts' ``paired_learned``.
        """
        masks = masks or {}
        assert self.paired_bias is not None
        ref = next(iter(paired_learned.values()))
        total = self.paired_bias.expand(ref.shape[0], self.config.out_dim)  # 0 + b == b
        for m, p in paired_learned.items():
            total = total + self.paired_heads[m](masked_mean(p, masks.get(m)))
        return total

    def align_loss(
        self,
        paired_learned: Mapping[str, Tensor],
        masks: Mapping[str, Tensor | None] | None = None,
    ) -> Tensor:
        """Mean alignment loss over every pair of modalities' pooled paired codes."""
        masks = masks or {}
        pooled = [masked_mean(p, masks.get(m)) for m, p in paired_learned.items()]
        terms = []
        for i in range(len(pooled)):
            for j in range(i + 1, len(pooled)):
                if self.config.align == "cmd":
                    terms.append(cmd_loss(pooled[i], pooled[j]))
                else:
                    terms.append(info_nce_loss(pooled[i], pooled[j], self.config.align_temperature))
        return torch.stack(terms).mean()

    # ------------------------------------------------------------------ optimisation
    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Group name -> the block's parameters in it; every parameter lands in exactly one.

        One group per (modality, part) for parts ``uni`` (learner and head), ``paired`` (the
        learner's per-modality modules and the paired head's weight on this modality),
        ``partitioner`` (``Q`` and the gate logits) and ``decoder`` (``D`` and ``beta``), plus
        ``paired.shared`` (the weight-shared network of the 'shared' learner, the head's bias).
        """
        groups: dict[str, list[nn.Parameter]] = {}
        learner: _PairedLearner | None = self.paired_learner  # type: ignore[assignment]
        for m in self.config.modalities:
            uni: list[nn.Parameter] = []
            if m in self.uni_learners:
                uni += self.uni_learners[m].parameters()
            if m in self.uni_heads:
                uni += self.uni_heads[m].parameters()
            groups[f"{m}.uni"] = uni
            paired = list(learner.per_modality(m)) if learner is not None else []
            if m in self.paired_heads:
                paired += self.paired_heads[m].parameters()
            groups[f"{m}.paired"] = paired
            groups[f"{m}.partitioner"] = list(self.partitioners[m].parameters())
            groups[f"{m}.decoder"] = (
                list(self.decoders[m].parameters()) if m in self.decoders else []
            )
        groups["paired.shared"] = [
            *(learner.shared() if learner is not None else ()),
            *([self.paired_bias] if self.paired_bias is not None else []),
        ]
        grouped = {id(p) for ps in groups.values() for p in ps}
        missing = [n for n, p in self.named_parameters() if id(p) not in grouped]
        assert not missing, f"parameters in no optimizer group: {missing}"
        return groups

    def param_groups(self, base_lr: float, **defaults: Any) -> list[dict[str, Any]]:
        """Optimizer groups ``{"name", "params", "lr"}``, one per (modality, part) and
        ``paired.shared``, each at ``base_lr * lr_mult[name]`` (``base_lr`` everywhere when
        ``separate_lrs=False``). ``defaults`` (e.g. ``weight_decay``) are copied into every group.
        """
        lr_of = {name: self.config.lr_multiplier(name) for name in self.config.group_names()}
        return make_param_groups(self.named_param_groups(), base_lr, lr_of, **defaults)

    def betas(self) -> dict[str, float]:
        """The decoders' mixing scalars (``mix='gate'``): how far each output moved from ``h``."""
        return {
            m: float(d.beta.detach())
            for m, d in self.decoders.items()
            if isinstance(d, UniPairedDecoder) and d.beta is not None
        }
