"""The PgM objective's terms as pure functions (``docs/design.md``, "Losses").

Pure, so that the benchmark harness and tests call them without a block. They take ``[B, d]``
codes (sequence codes are pooled or flattened by the caller), except :func:`masked_mse`, which
takes ``[B, T, d]`` with a ``[B, T]`` mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from pgm_plugins.errors import InputError

__all__ = [
    "check_targets",
    "cmd_loss",
    "info_nce_loss",
    "masked_mse",
    "sum_terms",
    "task_loss",
    "teacher_loss",
]


def check_targets(targets: Tensor, task: str, batch: int, num_classes: int | None = None) -> Tensor:
    """Validate ``targets`` for ``task`` and return them as ``[B]`` (float or long).

    Regression takes ``[B]`` or ``[B, 1]`` floats; classification ``[B]`` integer class ids in
    ``[0, num_classes)``.
    """
    if not isinstance(targets, Tensor):
        raise InputError(f"targets must be a torch.Tensor, got {type(targets).__name__}.")
    if task == "regression":
        if targets.shape not in ((batch,), (batch, 1)):
            raise InputError(
                f"regression targets have shape {tuple(targets.shape)}; expected "
                f"({batch},) or ({batch}, 1) for a batch of {batch}."
            )
        return targets.reshape(batch).float()
    if task == "classification":
        if (
            targets.shape != (batch,)
            or targets.dtype.is_floating_point
            or targets.dtype == torch.bool
        ):
            raise InputError(
                f"classification targets have shape {tuple(targets.shape)} and dtype "
                f"{targets.dtype}; expected integer class ids of shape ({batch},)."
            )
        if (
            num_classes is not None
            and targets.numel()
            and (int(targets.min()) < 0 or int(targets.max()) >= num_classes)
        ):
            raise InputError(
                f"classification targets range over [{int(targets.min())}, "
                f"{int(targets.max())}]; valid class ids are 0..{num_classes - 1}."
            )
        return targets.long()
    raise InputError(
        f"task={task!r} has no labels; do not pass targets (or configure "
        "task='regression' / 'classification')."
    )


def task_loss(logits: Tensor, targets: Tensor, task: str, regression_loss: str = "mse") -> Tensor:
    """The task's own loss: L1 or MSE for regression (``[B, 1]`` logits), else cross-entropy."""
    if task == "classification":
        return F.cross_entropy(logits, targets)
    pred = logits.reshape(-1)
    if regression_loss == "mse":
        return F.mse_loss(pred, targets)
    return F.l1_loss(pred, targets)


def teacher_loss(pred: Tensor, teacher: Tensor, eps: float = 1e-5) -> Tensor:
    """Distillation of a frozen teacher's features into a student's prediction of them.

    ``pred`` and ``teacher`` are ``[B, c]``; the teacher is detached and standardised over the
    batch per channel, ``t' = (t - mean_B t) / sqrt(var_B t + eps)`` (biased variance, so one
    row gives zeros, not NaN), and the loss is ``mean_B mean_c (pred - t')^2``, in float32.

    Why this form: the target is fixed, so nothing the student does can shrink it; a learned map
    on the teacher's side, or a loss on raw features, could be lowered by scaling both sides
    towards 0 (collapse) or be dominated by the teacher's largest channels. Standardised, every
    channel counts alike and the term's scale (about 1 for a student that predicts nothing)
    does not depend on the teacher's feature scale, so one weight means the same on every host.
    """
    t = teacher.detach().float()
    t = (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + eps)
    return (pred.float() - t).pow(2).mean()


def masked_mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``(a - b)^2`` over channels and real tokens (``mask [B, T]`` True), all if None."""
    sq = (a - b).pow(2).mean(dim=-1)
    if mask is None:
        return sq.mean()
    w = mask.to(sq.dtype)
    return (sq * w).sum() / w.sum().clamp_min(1.0)


def info_nce_loss(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between row-aligned codes ``a[i] <-> b[i]`` over the batch."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def cmd_loss(a: Tensor, b: Tensor, n_moments: int = 5) -> Tensor:
    """Central moment discrepancy (Zellinger et al., 2017), as MISA's similarity loss."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    ca, cb = a - mean_a, b - mean_b
    total = torch.linalg.vector_norm(mean_a - mean_b)
    for k in range(2, n_moments + 1):
        total = total + torch.linalg.vector_norm(ca.pow(k).mean(0) - cb.pow(k).mean(0))
    return total


def sum_terms(terms: Mapping[str, Tensor], like: Tensor) -> Tensor:
    """The sum of weighted loss terms; a 0-dim zero on ``like``'s device when there are none."""
    if not terms:
        return like.new_zeros(())
    return torch.stack(list(terms.values())).sum()
