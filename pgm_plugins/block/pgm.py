"""``PgMBlock``: the four parts of PgM composed into one ``nn.Module``.

PgM-style block, reconstructed from the paper's description (arXiv 2507.11661, "PgM: Partitioner
Guided Modal Learning Framework", ACM MM 2025; only its abstract could be read). The design and
where it departs from the paper: ``docs/design.md``; the evidence that chose it:
``docs/method.md``.

``block({"text": h_t, "audio": h_a})`` takes each modality's representation, ``[B, d_m]`` or
``[B, T_m, d_m]`` (widths and lengths may differ; ``masks={m: [B, T_m] bool}`` marks real
tokens), partitions it, runs the uni-modal and paired-modal learners, rebuilds it with the decoder
and returns a :class:`PgMOutput` with the rebuilt representations, the parts, the uni shares and
the auxiliary loss terms. :meth:`PgMBlock.forward` is written once, in phases, over a
:class:`~pgm_plugins.block.modality_ops.ModalityOps`: one module call per modality, or one
batched product over a stack of equal-shape modalities (``stacked.py``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins.block.config import PgMConfig
from pgm_plugins.block.decoder import UniPairedDecoder
from pgm_plugins.block.finite import DeferredFiniteCheck, check_finite_now
from pgm_plugins.block.losses import (
    check_targets,
    cmd_loss,
    info_nce_loss,
    sum_terms,
    task_loss,
    teacher_loss,
)
from pgm_plugins.block.mlp import masked_mean
from pgm_plugins.block.modality_ops import LoopOps, ModalityOps, SplitCodes, Values
from pgm_plugins.block.optim import make_param_groups
from pgm_plugins.block.paired_learner import (
    AttentionPairedLearner,
    SharedPairedLearner,
    _PairedLearner,
)
from pgm_plugins.block.partitioner import build_partitioner
from pgm_plugins.block.stacked import StackedOps, stack_groups, stackable
from pgm_plugins.block.uni_learner import UniModalLearner
from pgm_plugins.errors import (
    InputError,
    UnknownNameError,
    choices_text,
    did_you_mean,
)

__all__ = ["PART_NAMES", "ModalParts", "PgMBlock", "PgMOutput"]

#: the two parts of a modality's code, as :meth:`PgMBlock.replaced_parts` names them
PART_NAMES = ("uni", "paired")

_NON_LEAF_GRAD = "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed"


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
    #: each modality's prediction of its teacher's features from its pooled uni part
    #: (``lambda_teacher > 0``); None: the block has no teacher path
    teacher_preds: dict[str, Tensor] | None = None

    def share_values(self) -> dict[str, float]:
        """The uni-modal shares as plain floats (detached), for logs and plots."""
        return {m: float(s.detach()) for m, s in self.shares.items()}

    def loss_terms(
        self, targets: Tensor | None = None, teacher: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Every auxiliary loss term by name, weighted; label terms only when ``targets`` given.

        ``teacher``: each modality's teacher features for this batch (``[B, c]`` or
        ``[B, T, c]``, ``c = config.teacher_width(m)``), required when ``lambda_teacher > 0``
        and refused otherwise; they give the terms ``teacher.<m>`` (docs/design.md, "Losses").
        """
        terms = dict(self.losses)
        distilled = self.teacher_terms(teacher)
        if targets is None or not self.logits:
            if targets is not None and self.config is not None and not self.config.has_labels:
                raise InputError(
                    "targets were given but the block's task is 'none'; configure "
                    "task='regression' or 'classification' to train its heads."
                )
            return terms | distilled
        cfg = self.config
        assert cfg is not None
        batch = next(iter(self.logits.values())).shape[0]
        y = check_targets(targets, cfg.task, batch, cfg.num_classes)
        n_mod = len(cfg.modalities)  # weights do not grow with the number of modalities
        for name, logits in self.logits.items():
            weight = cfg.lambda_paired if name == "paired" else cfg.lambda_uni / n_mod
            terms[f"task.{name}"] = weight * task_loss(logits, y, cfg.task, cfg.regression_loss)
        return terms | distilled

    def teacher_terms(self, teacher: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """``teacher.<m>``: ``(lambda_teacher / M) * teacher_loss(P_m(pool u~_m), pool t_m)``
        for every modality of this forward; ``{}`` for a block without a teacher path (and
        ``teacher=None``). Checked whole before any term is computed."""
        if self.teacher_preds is None:
            if teacher is not None:
                weight = None if self.config is None else self.config.lambda_teacher
                raise InputError(
                    f"teacher= was given but this block has no teacher path (lambda_teacher="
                    f"{weight}); configure lambda_teacher > 0 (e.g. 0.5) to distil the teacher "
                    "into the uni parts, or drop teacher=."
                )
            return {}
        cfg = self.config
        assert cfg is not None
        if teacher is None:
            raise InputError(
                f"lambda_teacher={cfg.lambda_teacher} needs the teacher's features: call "
                "aux_loss(targets, teacher={modality: features}) with one [B, c] or [B, T, c] "
                f"tensor per modality of the forward ({choices_text(self.teacher_preds)}), or "
                "set lambda_teacher=0."
            )
        if not isinstance(teacher, Mapping):
            raise InputError(
                f"teacher= must be a mapping modality -> tensor, got {type(teacher).__name__}."
            )
        unknown = [m for m in teacher if m not in cfg.modalities]
        if unknown:
            raise UnknownNameError(
                f"teacher= names modality {unknown[0]!r}, which is not configured; configured: "
                f"{choices_text(cfg.modalities)}." + did_you_mean(str(unknown[0]), cfg.modalities)
            )
        missing = [m for m in self.teacher_preds if m not in teacher]
        if missing:
            raise InputError(
                f"teacher= has no features for modality {missing[0]!r} of this forward; "
                f"give one tensor per modality: {choices_text(self.teacher_preds)}."
            )
        pooled: dict[str, Tensor] = {}
        for m, pred in self.teacher_preds.items():
            t = teacher[m]
            width = cfg.teacher_width(m)
            if not isinstance(t, Tensor) or t.dim() not in (2, 3):
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise InputError(
                    f"teacher features of modality {m!r}: expected [B, {width}] or "
                    f"[B, T, {width}], got {shape}."
                )
            if t.shape[0] != pred.shape[0] or t.shape[-1] != width:
                raise InputError(
                    f"teacher features of modality {m!r} have shape {tuple(t.shape)}; this "
                    f"forward needs batch {pred.shape[0]} and width {width} (set "
                    f"PgMConfig.teacher_widths[{m!r}] for a teacher of another width)."
                )
            mask = self.parts[m].mask if m in self.parts else None
            if t.dim() == 3:
                fits = mask is not None and tuple(mask.shape) == tuple(t.shape[:2])
                t = masked_mean(t, mask if fits else None)
            pooled[m] = t
        weight = cfg.lambda_teacher / len(cfg.modalities)
        return {
            f"teacher.{m}": weight * teacher_loss(pred, pooled[m])
            for m, pred in self.teacher_preds.items()
        }

    def aux_loss(
        self, targets: Tensor | None = None, teacher: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Sum of :meth:`loss_terms`: add it to the host's task loss."""
        return sum_terms(self.loss_terms(targets, teacher), next(iter(self.outputs.values())))


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
        # the teacher maps P_m: pooled u~_m -> the teacher's width (a FitNets-style regressor on
        # the student's side, so the fixed teacher target cannot collapse)
        self.teacher_heads = nn.ModuleDict(
            {m: nn.Linear(uni_out[m], cfg.teacher_width(m)) for m in names}
            if cfg.lambda_teacher > 0
            else {}
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
        #: (modality, part) -> the vector that replaces that part in every forward, set only
        #: inside :meth:`replaced_parts`
        self._replaced: dict[tuple[str, str], Tensor] = {}

    @contextlib.contextmanager
    def replaced_parts(self, vectors: Mapping[str, Tensor]) -> Iterator[None]:
        """Within the block, every forward uses a fixed vector for the named parts.

        ``vectors``: ``{"<modality>.uni" | "<modality>.paired": tensor [k]}``, ``k`` the
        part's width (:meth:`PgMConfig.part_widths`). The partition's ``u_m`` / ``p_m`` is
        replaced, at every token and row, by the vector before the learners, the decoder, the
        losses and the heads read it: what the model does without that part's information
        (the bench's part contributions replace a part by its mean over the training rows).
        Forwards inside take the eager per-modality path (never the stacked or compiled one).
        Validated before anything changes.
        """
        cfg = self.config
        parsed: dict[tuple[str, str], Tensor] = {}
        for name, vec in vectors.items():
            m, _, part = str(name).rpartition(".")
            valid = [f"{n}.{p}" for n in cfg.modalities for p in PART_NAMES]
            if m not in cfg.modalities or part not in PART_NAMES:
                raise UnknownNameError(
                    f"no part {name!r} in the block; valid: {choices_text(valid)}."
                    + did_you_mean(str(name), valid)
                )
            width = cfg.part_widths(m)[PART_NAMES.index(part)]
            if not isinstance(vec, Tensor) or tuple(vec.shape) != (width,):
                shape = tuple(vec.shape) if isinstance(vec, Tensor) else type(vec).__name__
                raise InputError(
                    f"part {name!r} is {width} wide: give a tensor of shape ({width},), got "
                    f"{shape}."
                )
            parsed[m, part] = vec
        before = self._replaced
        self._replaced = {**before, **parsed}
        try:
            yield
        finally:
            self._replaced = before

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
            if cfg.check_finite == "deferred" and next(iter(inputs.values())).is_cuda:
                self._finite_check().submit(inputs)
            else:
                check_finite_now(inputs)
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
        order = [m for m in self.config.modalities if m in inputs]
        given = dict(masks or {})
        # replaced parts (``replaced_parts``): the eager per-modality path, the reference
        stacked = not self._replaced and stackable(self, order, dict(inputs), given)
        if (
            self.config.compile is not False
            and not self._replaced
            and not torch.compiler.is_compiling()
        ):
            with warnings.catch_warnings():
                # dynamo reads ``.grad`` of every input tensor it wraps, which warns for a host's
                # activations (non-leaf tensors); nothing of ours reads it
                warnings.filterwarnings("ignore", _NON_LEAF_GRAD, UserWarning)
                got = self._compiled_phases()(dict(inputs), given, stacked)
        else:
            got = self._phases(dict(inputs), given, stacked)
        loop_masks = {m: given.get(m) for m in order}
        parts = {
            m: ModalParts(
                got["uni"][m],
                got["paired"][m],
                got["uni_learned"][m],
                got["paired_learned"].get(m),
                got["rebuilt"].get(m),
                got["gates"][m],
                None if stacked else loop_masks[m],
            )
            for m in order
        }
        return PgMOutput(
            got["outputs"],
            parts,
            got["shares"],
            got["losses"],
            got["logits"],
            got["skipped"],
            self.config,
            got["teacher_preds"],
        )

    def _phases(
        self, inputs: dict[str, Tensor], masks: dict[str, Tensor], stacked: bool
    ) -> dict[str, Any]:
        """Every tensor of one forward, in plain containers (what ``torch.compile`` traces when
        ``config.compile`` is set: the input checks and the :class:`PgMOutput` stay eager)."""
        order = [m for m in self.config.modalities if m in inputs]
        ops: ModalityOps = (
            StackedOps(order, inputs[order[0]].shape) if stacked else LoopOps(order, masks)
        )
        h = ops.gather(inputs)
        q = ops.code_maps(self.partitioners)
        split = self._partition(ops, h, q)
        uni_learned = self._learn_uni(ops, split.uni)
        paired_learned, skipped = self._learn_paired(ops, split.paired)
        outputs, rebuilt = self._decode(ops, inputs, h, q, uni_learned, paired_learned)
        paired_pooled = self._pool_paired(ops, paired_learned)
        return {
            "outputs": outputs,
            "uni": ops.tokens(split.uni),
            "paired": ops.tokens(split.paired),
            "uni_learned": ops.tokens(uni_learned),
            "paired_learned": {} if paired_learned is None else ops.tokens(paired_learned),
            "rebuilt": {} if rebuilt is None else ops.tokens(rebuilt),
            "gates": split.gates,
            "shares": split.shares,
            "losses": self._losses(ops, h, q, paired_pooled),
            "logits": self._logits(ops, uni_learned, paired_pooled),
            "skipped": skipped,
            "teacher_preds": self._teacher_preds(ops, uni_learned),
        }

    def _compiled_phases(self) -> Any:
        """``torch.compile(self._phases, **options)``, made at the first compiled forward and
        kept out of copies and pickles (a copy compiles its own)."""
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            options = self.config.compile
            compiled = torch.compile(self._phases, **(options if isinstance(options, dict) else {}))
            self.__dict__["_compiled"] = compiled
        return compiled

    def _finite_check(self) -> DeferredFiniteCheck:
        check = self.__dict__.get("_deferred_finite")
        if check is None:
            check = self.__dict__["_deferred_finite"] = DeferredFiniteCheck()
        return check

    def raise_if_nonfinite(self) -> None:
        """With ``check_finite='deferred'`` on a GPU: wait for the finite checks not read yet
        and raise :class:`~pgm_plugins.errors.NonFiniteError` if any input held NaN or inf (call
        it at the end of an epoch or before saving). Nothing to do otherwise."""
        check = self.__dict__.get("_deferred_finite")
        if check is not None:
            check.flush()

    def __getstate__(self) -> dict[str, Any]:
        # the compiled function and queued device flags belong to this object, not to copies
        state = dict(self.__dict__)
        state.pop("_compiled", None)
        state.pop("_deferred_finite", None)
        return state

    # the phases of one forward, each over every modality through ``ops``
    def _partition(self, ops: ModalityOps, h: Values, q: Any) -> SplitCodes:
        """``u_m`` and ``p_m``, each read from its own gradient-scaled copy of ``h_m``."""
        cfg = self.config
        kappas = {(m, b): cfg.kappa(m, b) for m in ops.order for b in ("uni", "paired")}
        h_uni, h_paired = ops.branches(h, kappas)
        split = ops.partition(self.partitioners, h_uni, h_paired, q)
        for (m, part), vec in self._replaced.items():  # only on the per-modality path
            if m in ops.order:
                values = split.uni if part == "uni" else split.paired
                values[m] = vec.to(values[m]).expand_as(values[m])
        return split

    def _learn_uni(self, ops: ModalityOps, uni: Values) -> Values:
        """``u~_m``: each modality's uni part through its own learner (or as it is)."""
        return ops.each(self.uni_learners, uni) if self.config.uni_learner else uni

    def _learn_paired(self, ops: ModalityOps, paired: Values) -> tuple[Values | None, bool]:
        """``p~_m`` and whether the paired path was skipped (a learner that needs pairs, one
        modality in this call)."""
        if self.paired_learner is None:
            return paired, False
        if getattr(self.paired_learner, "needs_pairs", False) and len(ops.order) < 2:
            return None, True
        return ops.learn_paired(self.paired_learner, paired), False

    def _decode(
        self,
        ops: ModalityOps,
        inputs: Mapping[str, Tensor],
        h: Values,
        q: Any,
        uni: Values,
        paired: Values | None,
    ) -> tuple[dict[str, Tensor], Values | None]:
        """What the host receives, and ``h_hat_m = h_m + D([u~_m ; p~_m]) Q^T`` (None without
        decoder). Padded positions hand the input back unchanged."""
        if not self.decoders:
            return {m: inputs[m] for m in ops.order}, None
        code = (
            ops.each(self.decoders, uni) if paired is None else ops.each(self.decoders, uni, paired)
        )
        change = ops.decode(code, q)
        rebuilt = ops.map(torch.add, h, change)
        out = ops.keep_padding(ops.mix(self.decoders, h, change), h)
        return ops.outputs(out), rebuilt

    def _aligns(self, ops: ModalityOps) -> bool:
        """Whether this forward has an alignment loss ('shared' learner, two or more modalities)."""
        cfg = self.config
        return (
            cfg.paired == "shared"
            and self.paired_learner is not None
            and len(ops.order) > 1
            and cfg.lambda_align > 0
        )

    def _pool_paired(self, ops: ModalityOps, paired_learned: Values | None) -> Values | None:
        """Every pooled ``p~_m``, once for the paired head and the alignment loss; None when
        neither reads it (or the paired path was skipped)."""
        if paired_learned is None or not (len(self.paired_heads) or self._aligns(ops)):
            return None
        return ops.pool(paired_learned)

    def _losses(
        self, ops: ModalityOps, h: Values, q: Any, paired_pooled: Values | None
    ) -> dict[str, Tensor]:
        """The label-free terms: each partition's reconstruction, the 'shared' alignment."""
        cfg = self.config
        losses: dict[str, Tensor] = {}
        if q is not None and cfg.lambda_rec > 0 and cfg.partitioner != "split":
            hd = ops.map(Tensor.detach, h)  # the partition's own objective: no gradient into h
            errors = ops.mse(ops.decode(ops.encode(hd, q), q), hd)
            for m, err in errors.items():
                losses[f"rec.{m}"] = (cfg.lambda_rec / len(cfg.modalities)) * err
        if self._aligns(ops):
            assert paired_pooled is not None
            losses["align"] = cfg.lambda_align * self.align_loss(ops.rows(paired_pooled))
        return losses

    def _logits(
        self, ops: ModalityOps, uni: Values, paired_pooled: Values | None
    ) -> dict[str, Tensor]:
        """The uni heads on each pooled ``u~_m``, the paired head on every pooled ``p~_m``."""
        logits: dict[str, Tensor] = {}
        if len(self.uni_heads):
            heads = ops.rows(ops.each(self.uni_heads, ops.pool(uni)))
            logits = {f"uni.{m}": t for m, t in heads.items()}
        if len(self.paired_heads) and len(ops.order) > 1 and paired_pooled is not None:
            logits["paired"] = self._paired_sum(
                ops.rows(ops.each(self.paired_heads, paired_pooled))
            )
        return logits

    def _teacher_preds(self, ops: ModalityOps, uni: Values) -> dict[str, Tensor] | None:
        """``P_m(pool u~_m)`` per modality (None without a teacher path): one ``Linear`` per
        modality on its rows, since teacher widths may differ where the stack does not."""
        if not len(self.teacher_heads):
            return None
        pooled = ops.rows(ops.pool(uni))
        return {m: self.teacher_heads[m](pooled[m]) for m in ops.order}

    def _paired_sum(self, per_modality: Mapping[str, Tensor]) -> Tensor:
        """``sum_m W_m pool(p~_m) + b`` from the ``W_m pool(p~_m)``."""
        assert self.paired_bias is not None
        ref = next(iter(per_modality.values()))
        total = self.paired_bias.expand(ref.shape[0], self.config.out_dim)  # 0 + b == b
        for t in per_modality.values():
            total = total + t
        return total

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
        return self._paired_sum(
            {
                m: self.paired_heads[m](masked_mean(p, masks.get(m)))
                for m, p in paired_learned.items()
            }
        )

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

        One group per (modality, part) for parts ``uni`` (learner, head and teacher map),
        ``paired`` (the learner's per-modality modules and the paired head's weight on this
        modality),
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
            if m in self.teacher_heads:
                uni += self.teacher_heads[m].parameters()
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
