"""``umt``: the Uni-Modal Teacher of Du et al., "On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning", ICML 2023 (arXiv 2305.01233, sec. 4; first in "Improving Multi-Modal
Learning with Uni-Modal Teachers", arXiv 2106.11059): each modality's encoder trained alone
first and frozen, then the multi-modal model trained with its own loss plus a distillation of
each modality's features onto the uni-modal teacher's.

Here the teachers are the ``ume`` training of the same host, fold and seed
(:mod:`pgm_plugins.bench.methods.ume`: every encoder trained by its own head only), built once
as a first stage and cached (:mod:`pgm_plugins.bench.stages`), frozen. The student is the host
with its own recipe and losses; a pass-through module at the sites (:class:`FeatureDistill`,
no parameters, its outputs the inputs themselves) records each modality's site features, and
its auxiliary loss is the distillation::

    w * sum_m MSE(pool(h_m), pool(t_m))

``h_m`` the student's site features, ``t_m`` the teacher's on the same batch (one forward of
the frozen first stage per training step, in :meth:`UniModalTeacher.on_batch`), ``pool`` the
mean over real positions for sequence sites (as the heads read them), ``MSE`` the mean over
the batch and the feature width (BalanceBenchmark's UMT: the MSE between the teacher's and the
student's encoder outputs, summed over modalities, times ``alpha``). The weight ``w`` is chosen
per cell on validation from :data:`WEIGHTS` (``[arm_options.umt] weights`` replaces them): the
grid's size is the arm's tuning budget. The teacher's features are computed without gradients
and its parameters are frozen, so the teachers receive no gradient. docs/method.md compares
the method with PgM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import _Control
from pgm_plugins.bench.methods.heads import check_options
from pgm_plugins.bench.methods.ume import PAPER
from pgm_plugins.block import PgMConfig, PgMOutput
from pgm_plugins.block.mlp import masked_mean
from pgm_plugins.errors import ConfigError

__all__ = ["WEIGHTS", "FeatureDistill", "UniModalTeacher", "distill_loss", "umt_arm"]

#: the distillation weights ``umt`` tries per cell (one training each, the best on validation)
WEIGHTS: tuple[float, ...] = (0.1, 1.0, 10.0)


def _pool(h: Tensor, mask: Tensor | None) -> Tensor:
    return masked_mean(h if h.dim() == 3 else h.unsqueeze(1), mask)


def distill_loss(
    student: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """``sum_m MSE(pool(student_m), pool(teacher_m))`` over the modalities both have (the
    teacher detached); ``masks`` mark the real positions of sequence sites."""
    masks = masks or {}
    common = [m for m in student if m in teacher]
    if not common:
        raise ValueError(
            f"no modality in both the student's sites {sorted(student)} and the teacher's "
            f"{sorted(teacher)}."
        )
    terms = []
    for m in common:
        h, t = student[m], teacher[m].detach()
        if h.shape != t.shape:
            raise ValueError(
                f"modality {m!r}: the student's site features have shape {tuple(h.shape)}, "
                f"the teacher's {tuple(t.shape)}; a teacher must be the same host on the "
                "same batch."
            )
        mask = masks.get(m)
        terms.append(F.mse_loss(_pool(h, mask).float(), _pool(t, mask).float()))
    return torch.stack(terms).sum()


class FeatureDistill(_Control):
    """A pass-through at the sites (the host receives its features unchanged) whose auxiliary
    loss, on a forward with gradients while :attr:`teacher` holds the batch's teacher
    features, is ``weight * distill_loss``."""

    def __init__(self, config: PgMConfig, weight: float) -> None:
        super().__init__()
        self.config = config
        self.weight = float(weight)
        #: the teacher's site features of the current training batch (set per batch)
        self.teacher: dict[str, Tensor] | None = None

    def forward(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> PgMOutput:
        self.check_inputs(inputs, masks)
        losses: dict[str, Tensor] = {}
        if self.teacher is not None and torch.is_grad_enabled():
            losses["distill"] = self.weight * distill_loss(inputs, self.teacher, masks)
        return PgMOutput(dict(inputs), {}, {}, losses, {}, False, self.config)


class UniModalTeacher(ArmRun):
    """One training of ``umt`` at the setting's weight ``w`` (the module docstring)."""

    def block_factory(self) -> Callable[[PgMConfig], nn.Module] | None:
        weight = float(self.ctx.setting["w"])
        return lambda config: FeatureDistill(config, weight)

    def on_batch(self, inputs: Any, targets: Tensor, rows: Any) -> None:
        self.handle.block.teacher = self.first_stages["ume"].features(inputs)

    def record(self) -> dict[str, Any]:
        return {
            "w": float(self.ctx.setting["w"]),
            "distill": "w * sum over modalities of MSE(pooled student, pooled teacher features)",
            "teacher": "ume",
        }


def _settings(ctx: ArmContext) -> list[dict[str, Any]]:
    check_options("umt", ctx.options, {"weights": "the distillation weights tried"})
    weights = ctx.options.get("weights", WEIGHTS)
    if (
        not isinstance(weights, list | tuple)
        or not weights
        or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)
        or any(w < 0 for w in weights)
    ):
        raise ConfigError(
            f"[arm_options.umt] weights must be a non-empty list of numbers >= 0; got "
            f"{weights!r} (default {list(WEIGHTS)})."
        )
    return [{"w": float(w)} for w in weights]


def umt_arm() -> ArmSpec:
    """The ``umt`` arm: first stage ``ume``, its distillation weight tuned on validation."""
    return ArmSpec(
        "umt",
        "uni-modal teacher: the host's own loss + each site's features distilled (MSE, "
        "pooled) onto its uni-modal teacher's (the ume training, frozen); weight tuned on valid",
        make=UniModalTeacher,
        kind="method",
        paper=PAPER + "; Uni-Modal Teacher: Du et al., arXiv 2106.11059",
        settings=_settings,
        block=True,
        first_stage="ume",
    )
