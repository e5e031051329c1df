"""``PgMTrainer``: a Hugging Face ``transformers.Trainer`` that trains an injected PgM block.

Three things differ from the ``Trainer`` it subclasses, and nothing else:

- ``compute_loss`` adds the block's auxiliary loss (``handle.aux_loss(targets)``) to the
  model's loss in training; evaluation losses stay the model's own, comparable with the host's.
- ``create_optimizer`` builds the optimizer ``TrainingArguments.optim`` names over the block's
  own parameter groups (per modality and part, each at the trainer's learning rate times
  ``PgMConfig.lr_mult``, docs/design.md) and the host's (the Trainer's weight-decay split).
- ``save_model``, and so every ``checkpoint-N``, also writes the adapter-only checkpoint to a
  ``pgm/`` folder inside it (``pgm_plugins.save``; read it back with ``pgm_plugins.load``).

Gradient accumulation: the auxiliary loss is a per-batch mean, like a model's own loss. Where the
Trainer divides the loss by the accumulation steps (a model that does not take
``num_items_in_batch``), the auxiliary loss is divided with it; where the model's loss is
already normalised over the accumulated batch (``num_items_in_batch``, ``compute_loss_func``),
``PgMTrainer`` divides the auxiliary loss by the steps itself. Either way the accumulated
gradient of the per-sample terms (reconstruction, the heads' task losses) equals that of one
batch of the same size; batch-level terms (the ``shared`` learner's InfoNCE) see each
micro-batch on its own.

Needs the ``hf`` extra: ``pip install 'pgm-plugins[hf]'`` (``transformers`` and ``accelerate``,
which ``Trainer`` needs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pgm_plugins.errors import ConfigError
from pgm_plugins.injection import PgMHandle, save
from pgm_plugins.integrations._common import (
    TargetsFn,
    default_targets,
    find_handle,
    module_param_groups,
    require,
    targets_for,
)

_transformers = require("transformers", "hf", "pgm_plugins.integrations.hf")
require("accelerate", "hf", "transformers.Trainer")

__all__ = ["PGM_CHECKPOINT_DIR", "PgMTrainer"]

#: the adapter-only checkpoint's folder inside each of the trainer's checkpoints
PGM_CHECKPOINT_DIR = "pgm"


class PgMTrainer(_transformers.Trainer):  # type: ignore[name-defined]
    """A ``transformers.Trainer`` whose loss includes the PgM block's auxiliary loss.

    Args:
        *args, **kwargs: as for ``transformers.Trainer`` (``model`` holds the injected block).
        pgm_handle: the block to train; default: the one block inside ``model``.
        pgm_targets: picks the targets of the block's task heads from a batch; default:
            ``inputs["labels"]``. Not called for a block with ``task='none'``.
        pgm_host_lr: the host's learning rate; default: ``args.learning_rate``, the base of
            the block's groups too.
    """

    def __init__(
        self,
        *args: Any,
        pgm_handle: PgMHandle | None = None,
        pgm_targets: TargetsFn | None = None,
        pgm_host_lr: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pgm_handle = pgm_handle if pgm_handle is not None else find_handle(self.model)
        self.pgm_targets = pgm_targets or default_targets
        self.pgm_host_lr = pgm_host_lr
        self._pgm_aux: list[float] = []

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
        **kwargs: Any,
    ) -> Any:
        training = model.training and torch.is_grad_enabled()
        # read before the Trainer's compute_loss, which may pop the labels
        targets = (
            targets_for(self.pgm_handle, inputs, self.pgm_targets, "PgMTrainer(pgm_targets=...)")
            if training
            else None
        )
        if num_items_in_batch is not None:
            kwargs["num_items_in_batch"] = num_items_in_batch
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if training:
            aux = self.pgm_handle.aux_loss(targets)
            if self._loss_is_scaled_for_accumulation(num_items_in_batch):
                aux = aux / self._accumulation_steps()
            self._pgm_aux.append(float(aux.detach()))
            loss = loss + aux
        return (loss, outputs) if return_outputs else loss

    def _loss_is_scaled_for_accumulation(self, num_items_in_batch: Any) -> bool:
        """Whether the Trainer will leave the loss undivided by the accumulation steps (the
        condition of ``Trainer.training_step``)."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is not None:
            return bool(scaled)
        return bool(
            (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
            or getattr(self, "compute_loss_func", None) is not None
        )

    def _accumulation_steps(self) -> int:
        steps = getattr(self, "current_gradient_accumulation_steps", None)
        return int(steps or self.args.gradient_accumulation_steps)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds ``pgm_aux``: the auxiliary loss's mean over the steps since the last log (as
        added, after any division for gradient accumulation)."""
        if self._pgm_aux and "loss" in logs:
            logs = {**logs, "pgm_aux": sum(self._pgm_aux) / len(self._pgm_aux)}
            self._pgm_aux = []
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        """The optimizer ``args.optim`` names, over the host's and the block's groups; an
        optimizer passed as ``optimizers=`` is used as it is."""
        given = getattr(self, "optimizer", None)
        if given is not None:
            return given
        model = args[0] if args else kwargs.get("model") or self.model
        cls, opt_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        if "params" in opt_kwargs or "model" in opt_kwargs or not isinstance(cls, type):
            raise ConfigError(
                f"optim={self.args.optim!r} builds its own parameter groups, which would drop "
                "the PgM block's per-part learning rates. Use a plain optimizer (adamw_torch, "
                "sgd, adafactor, ...), or pass your own as optimizers=(optimizer, None), built "
                "over handle.param_groups(lr)."
            )
        decay = set(self.get_decay_parameter_names(model))
        groups = module_param_groups(
            model,
            self.pgm_handle,
            lr=self.args.learning_rate,
            host_lr=self.pgm_host_lr,
            weight_decay=self.args.weight_decay,
            no_decay=lambda name: name not in decay,
        )
        optimizer = cls(groups, **opt_kwargs)
        self.optimizer = optimizer
        return optimizer

    # ------------------------------------------------------------------ checkpoints
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's save (also of each ``checkpoint-N``), plus the adapter-only checkpoint in
        ``<output_dir>/pgm`` (on the main process)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            target = Path(output_dir if output_dir is not None else self.args.output_dir)
            save(self.pgm_handle, target / PGM_CHECKPOINT_DIR)
