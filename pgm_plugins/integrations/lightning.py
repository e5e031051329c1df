"""``PgMModuleMixin``: a PyTorch Lightning ``LightningModule`` that trains an injected PgM block.

A callback cannot change the loss Lightning backpropagates, so the block's auxiliary loss is
added by the module itself. Put the mixin before ``LightningModule`` in the bases and keep
``training_step`` as it is, returning the task loss::

    class Regressor(PgMModuleMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = LateFusion({"text": 16, "audio": 8})
            pgm_plugins.inject(self.model, "toy.late_fusion", config={"task": "regression"})

        def training_step(self, batch, batch_idx):
            (text, audio), y = batch
            return F.mse_loss(self.model(text, audio), y)  # the mixin adds the aux loss

- Every ``training_step`` a class with the mixin defines returns its loss plus
  ``handle.aux_loss(self.pgm_targets(batch))`` (a returned tensor, or the ``"loss"`` of a
  returned dict), logged as ``pgm_aux``. A subclass's ``training_step`` calling
  ``super().training_step`` adds it once. A step returning None (skipped) leaves nothing for the
  next step. Under manual optimisation nothing is added: add ``self.pgm_aux_loss(batch)`` to the
  loss you pass to ``manual_backward``.
- ``pgm_targets(batch)``: the targets of the block's task heads; by default the second item of
  an ``(inputs, targets)`` batch or ``batch["labels"]``. Override it for other layouts. Not
  called for a block with ``task='none'``.
- ``configure_optimizers`` (unless the class defines its own): AdamW over
  ``self.pgm_param_groups()``: every trainable parameter of the module outside the block at
  ``pgm_host_lr`` (default ``pgm_lr``), the block's per (modality, part) at ``pgm_lr`` times
  ``PgMConfig.lr_mult`` (docs/design.md).
- Gradient accumulation (``Trainer(accumulate_grad_batches=k)``): Lightning divides what
  ``training_step`` returns by ``k``, auxiliary loss included, so the accumulated gradient of
  its per-sample terms equals that of one batch ``k`` times the size; batch-level terms (the
  ``shared`` learner's InfoNCE) see each micro-batch on its own.
- Checkpoints: the block is part of the module, so Lightning's ``.ckpt`` holds it and
  ``load_from_checkpoint`` restores it (``__init__`` injects, the state dict fills the block);
  ``pgm_plugins.save(self.pgm_handle, dir)`` writes the adapter-only checkpoint.

The mixin imports neither ``lightning`` nor ``pytorch_lightning``, so it serves either; the
``lightning`` extra installs ``lightning``, the package Lightning's documentation uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pgm_plugins.injection import PgMHandle
from pgm_plugins.integrations._common import (
    default_targets,
    find_handle,
    module_param_groups,
    targets_for,
)

__all__ = ["PgMModuleMixin"]

_DEPTH = "_pgm_step_depth"


class PgMModuleMixin:
    """Adds the PgM block's auxiliary loss to a ``LightningModule``'s training loss (see the
    module's documentation). Use as ``class M(PgMModuleMixin, LightningModule)``."""

    #: the base learning rate of the default ``configure_optimizers``
    pgm_lr: float = 1e-3
    #: the host's learning rate there (None: ``pgm_lr``)
    pgm_host_lr: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("training_step")
        if step is not None and not getattr(step, "__pgm_adds_aux__", False):
            cls.training_step = _adding_aux(step)  # type: ignore[attr-defined]

    @property
    def pgm_handle(self) -> PgMHandle:
        """The handle of the one PgM block inside this module."""
        cached: PgMHandle | None = self.__dict__.get("_pgm_handle")
        if cached is None or cached.removed:
            cached = find_handle(self)  # type: ignore[arg-type]
            self.__dict__["_pgm_handle"] = cached
        return cached

    def pgm_targets(self, batch: Any) -> Tensor | None:
        """The targets of the block's task heads in ``batch`` (override for your layout)."""
        return default_targets(batch)

    def pgm_aux_loss(self, batch: Any) -> Tensor:
        """The block's auxiliary loss over the training forwards since the last read, with the
        targets ``pgm_targets(batch)``; logged as ``pgm_aux`` while a trainer is attached."""
        handle = self.pgm_handle
        targets = targets_for(handle, batch, self.pgm_targets, "an override of pgm_targets(batch)")
        aux = handle.aux_loss(targets)
        if getattr(self, "_trainer", None) is not None:
            self.log("pgm_aux", aux.detach())  # type: ignore[attr-defined]
        return aux

    def pgm_param_groups(
        self, lr: float | None = None, host_lr: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimizer groups over this module: the host's and the block's per (modality, part)."""
        return module_param_groups(
            self,  # type: ignore[arg-type]
            self.pgm_handle,
            lr=self.pgm_lr if lr is None else lr,
            host_lr=self.pgm_host_lr if host_lr is None else host_lr,
            weight_decay=weight_decay,
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.pgm_param_groups(), lr=self.pgm_lr)

    def _pgm_add_aux(self, out: Any, batch: Any) -> Any:
        if not getattr(self, "automatic_optimization", True):
            return out
        if out is None:  # a skipped step: its forwards must not reach the next step's loss
            if self.pgm_handle.injection.pending():
                self.pgm_handle.loss_terms()
            return out
        if isinstance(out, Tensor):
            return out + self.pgm_aux_loss(batch)
        if isinstance(out, Mapping) and "loss" in out:
            return {**out, "loss": out["loss"] + self.pgm_aux_loss(batch)}
        return out  # Lightning itself says what a training_step may return


def _adding_aux(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` returning its loss plus the auxiliary loss; the outermost call adds it."""

    @functools.wraps(step)
    def training_step(self: PgMModuleMixin, *args: Any, **kwargs: Any) -> Any:
        depth = self.__dict__.get(_DEPTH, 0)
        self.__dict__[_DEPTH] = depth + 1
        try:
            out = step(self, *args, **kwargs)
        finally:
            self.__dict__[_DEPTH] = depth
        if depth:  # called through super() by an overriding training_step
            return out
        batch = args[0] if args else kwargs.get("batch")
        return self._pgm_add_aux(out, batch)

    training_step.__pgm_adds_aux__ = True  # type: ignore[attr-defined]
    return training_step
