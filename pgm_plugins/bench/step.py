"""The training step, owned by the runner: a host gives its forward and losses as stages, the
:class:`Stepper` runs backward, clipping and the optimizer step of each.

A host's recipe is a generator of :class:`Stage` (``HostRun.stages(inputs, targets, rows)``):
each yielded stage is one backward and one optimizer step; the generator runs the forward that
computes the stage's loss terms and, once resumed after the step, whatever the recipe does after
it (Self-MM's label update, MMIM's memory). One stage per batch is the common case; MMIM's recipe
yields two (its MMILB stage with its own optimizer, then the main loss). Because the runner owns
the step, it can add what no host has to know about: the block's auxiliary loss, mixed precision
(autocast and, for fp16, a gradient scaler), and distributed data parallel.

Per stage, in order: the forward (the generator runs to its next ``yield``, under autocast when
the precision asks); the block's auxiliary loss joins the terms as ``"pgm"``
(``Stage.block_loss``); gradients of the model and of the stage's optimizer set to ``None``; the
terms summed in the order given; backward (scaled for fp16; an arm may run its own); the
optimizer's gradients unscaled; the arm's ``after_backward``; clipping as the stage says; the
optimizer step; the arm's ``after_step``. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "PRECISIONS",
    "Clip",
    "Stage",
    "Stepper",
    "autocast",
    "clip_apart",
    "resolve_device",
]

#: ``--precision`` choices -> the autocast dtype (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Clip:
    """Gradient clipping of one stage: by total norm (``clip_grad_norm_``) or by value
    (``clip_grad_value_``) at ``max``, over the stage optimizer's parameters or every parameter
    of the model (MMIM's first stage clips the whole model)."""

    kind: Literal["norm", "value"]
    max: float
    over: Literal["optimizer", "model"] = "optimizer"

    def __post_init__(self) -> None:
        if self.kind not in ("norm", "value"):
            raise ValueError(f"Clip kind must be 'norm' or 'value'; got {self.kind!r}.")


@dataclass
class Stage:
    """One backward and optimizer step of a host's recipe.

    Attributes:
        terms: the loss terms, summed in this order into the loss (``"loss"`` is reserved).
        optimizer: which of the host's optimizers steps (a key of ``HostRun.optimizers``).
        clip: the recipe's gradient clipping, or None.
        block_loss: add the injected block's auxiliary loss as the term ``"pgm"``.
        block_targets: the targets the block's heads learn (default: the batch's targets).
        report: these terms are the step's reported terms (the last such stage wins).
        targets: set by the :class:`Stepper`: the targets of this stage (``block_targets``, else
            the batch's), for the arm's hooks.
    """

    terms: dict[str, Tensor]
    optimizer: str = "main"
    clip: Clip | None = None
    block_loss: bool = True
    block_targets: Tensor | None = None
    report: bool = True
    targets: Tensor | None = None


def clip_apart(stage: Stage, groups: Sequence[Sequence[nn.Parameter]]) -> None:
    """Run ``stage``'s clipping by norm on each group of parameters on its own (its threshold,
    each group's own norm), then take it off the stage, so one group's gradient never scales
    another's; clipping by value is per element already and is left to the stage."""
    clip = stage.clip
    if clip is None or clip.kind != "norm":
        return
    for group in groups:
        got = [p for p in group if p.grad is not None]
        if got:
            nn.utils.clip_grad_norm_(got, clip.max)
    stage.clip = None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available) as a device;
    an error naming what is visible when CUDA is asked for and absent."""
    text = "cpu" if device is None else str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(
            f"device {text!r} is not a device; valid: cpu, cuda, cuda:N, auto."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {text!r}: CUDA is not available to this torch "
                f"({torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu "
                "or auto."
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {text!r}: this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1})."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device {text!r} is not supported; valid: cpu, cuda, cuda:N, auto.")
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Stepper:
    """Runs a host's stages: one training step per batch (see the module docstring).

    Args:
        model: the host (with its block, if any): its gradients are cleared before each stage.
        optimizers: the host's optimizers by name (``"main"`` for a recipe with one).
        handle: the injected block's handle (its ``aux_loss``), or None.
        device: where the model lives (autocast's device type).
        precision: ``fp32``, ``bf16`` or ``fp16`` (fp16 scales the loss with a ``GradScaler``).
        arm: the arm's run (:class:`pgm_plugins.bench.arm.ArmRun`): its ``losses(terms,
            stage)`` edits each stage's terms, ``backward(terms, loss, stage)`` may run backward
            itself (returning True), ``after_backward(stage)`` acts on the gradients after
            backward and unscaling, before clipping (where a method that modulates gradients
            acts), ``after_step(stage)`` after the optimizer's step (where a method that scales
            a step acts). None: none of these.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        handle: Any = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        arm: Any = None,
    ) -> None:
        if not optimizers:
            raise ValueError("a host gave no optimizers; its optimizers() must return one.")
        self.model = model
        self.optimizers = dict(optimizers)
        self.handle = handle
        self.device = torch.device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
        self.precision = precision
        self.arm = arm
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        try:
            return self.optimizers[stage.optimizer]
        except KeyError:
            raise ValueError(
                f"a stage asks for optimizer {stage.optimizer!r}; the host gave "
                f"{sorted(self.optimizers)}."
            ) from None

    def step(self, stages: Iterator[Stage], targets: Tensor | None = None) -> dict[str, Tensor]:
        """Run every stage of one batch; returns the reported stage's terms and ``"loss"``
        (detached tensors: reading them is the caller's host sync, not the step's)."""
        reported: dict[str, Tensor] = {}
        while True:
            with autocast(self.device, self.precision):
                try:
                    stage = next(stages)
                except StopIteration:
                    break
                terms = dict(stage.terms)
                stage.targets = stage.block_targets if stage.block_targets is not None else targets
                if stage.block_loss and self.handle is not None:
                    extra = self.arm.aux_kwargs() if self.arm is not None else {}
                    terms["pgm"] = self.handle.aux_loss(stage.targets, **extra)
            if self.arm is not None:
                terms = self.arm.losses(terms, stage)
            if not terms:
                raise ValueError("a stage has no loss terms (the host's, or the arm dropped all).")
            opt = self._optimizer(stage)
            self.model.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            values = list(terms.values())
            loss = values[0]
            for term in values[1:]:
                loss = loss + term
            scaled = self.scaler.scale(loss) if self.scaler is not None else loss
            if self.arm is None or not self.arm.backward(terms, scaled, stage):
                scaled.backward()
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            if self.arm is not None:
                self.arm.after_backward(stage)
            if stage.clip is not None:
                self._clip(stage.clip, opt)
            if self.scaler is not None:
                self.scaler.step(opt)
                self.scaler.update()
            else:
                opt.step()
            if self.arm is not None:
                self.arm.after_step(stage)
            if stage.report:
                reported = {k: v.detach() for k, v in terms.items()} | {"loss": loss.detach()}
        return reported

    def _clip(self, clip: Clip, opt: torch.optim.Optimizer) -> None:
        params = (
            list(self.model.parameters())
            if clip.over == "model"
            else [p for g in opt.param_groups for p in g["params"]]
        )
        if clip.kind == "norm":
            nn.utils.clip_grad_norm_(params, clip.max)
        else:
            nn.utils.clip_grad_value_(params, clip.max)
