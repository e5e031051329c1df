"""``pgm-guided``: the PgM block guided by uni-modal training, the second reading of PgM
(Hu et al., "PgM: Partitioner Guided Modal Learning Framework", ACM MM 2025, arXiv 2507.11661;
its framing from Du et al., ICML 2023, arXiv 2305.01233: "uni-modal features can be learned from
uni-modal training").

The first reading (the ``pgm`` arm) leaves the split between uni-modal and paired-modal features
to the heads' losses; it earned nothing over simpler methods (docs/method.md). Here the split is
guided by what uni-modal training actually learns:

- the first stage is ``ume`` (each encoder of the same host trained alone with its own head),
  trained once per host, fold and seed and reused frozen; its site features for the batch are
  the teacher (read in :meth:`GuidedArm.on_batch`);
- the PgM block, with ``lambda_teacher > 0``, distils them into the **uni part** of each
  modality's code only (``PgMConfig.lambda_teacher``, docs/design.md "Losses": a linear map from
  the pooled uni part predicts the teacher's features, standardised per batch); the paired
  learner gets no gradient from that term (the partitioner does: moving the uni columns moves
  the paired ones they are orthogonal to) and learns the rest through the cross-modal
  interaction;
- the uni / paired balance (``rho``) per modality and the distillation weight are selected on
  validation, per cell: the abstract's "distribution adjustment to suit diverse downstream
  tasks", where the first reading kept ``rho = 0.5`` everywhere.

Settings grid (:func:`guided_grid`; its size is the arm's counted tuning budget): every modality
at ``rho = 0.5`` with each weight of ``weights``, then, at the base weight, one modality at a
time at each rho of ``rhos`` (a coordinate grid, as ``mslr``'s): ``len(weights) + M *
len(rhos)`` settings, 9 for three modalities. A suite may change them in
``[arm_options.pgm-guided]`` (``rhos``, ``weights``, ``weight``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import block_factory
from pgm_plugins.bench.methods.heads import check_options

__all__ = ["GUIDED_RHOS", "GUIDED_WEIGHTS", "GuidedArm", "guided_arm", "guided_grid"]

PAPER = (
    "Hu et al., PgM: Partitioner Guided Modal Learning Framework, ACM MM 2025 (arXiv "
    "2507.11661), guided by uni-modal training as Du et al., ICML 2023 (arXiv 2305.01233)"
)
#: the uni shares tried per modality, one modality at a time (the others at 0.5)
GUIDED_RHOS: tuple[float, ...] = (0.25, 0.75)
#: the distillation weights tried at rho 0.5 everywhere; the base weight is the first
GUIDED_WEIGHTS: tuple[float, ...] = (0.3, 0.1, 1.0)


def guided_grid(
    modalities: Sequence[str],
    rhos: Sequence[float] = GUIDED_RHOS,
    weights: Sequence[float] = GUIDED_WEIGHTS,
    weight: float | None = None,
) -> list[dict[str, Any]]:
    """The settings of ``pgm-guided``: ``{"rho": {m: share}, "lambda_teacher": w}``, each weight
    at rho 0.5 everywhere, then each modality at each of ``rhos`` at the base ``weight``
    (default: the first of ``weights``). Raises ValueError for an empty, out-of-range or
    zero-weight grid (a zero weight is the ``pgm`` arm)."""
    weights = [float(w) for w in weights]
    rhos = [float(r) for r in rhos]
    base = float(weights[0] if weight is None and weights else weight or 0.0)
    if not weights or not all(w > 0 for w in [*weights, base]):
        raise ValueError(
            f"pgm-guided: weights={weights} (base {base}) must be numbers > 0 (the weight 0 is "
            "the 'pgm' arm)."
        )
    if not all(0.0 < r < 1.0 for r in rhos):
        raise ValueError(f"pgm-guided: rhos={rhos} must lie strictly between 0 and 1.")
    half = {m: 0.5 for m in modalities}
    grid = [{"rho": dict(half), "lambda_teacher": w} for w in weights]
    for m in modalities:
        for r in rhos:
            if r != 0.5:
                grid.append({"rho": {**half, m: r}, "lambda_teacher": base})
    return grid


#: ``[arm_options.pgm-guided]`` keys
OPTIONS = {
    "rhos": "the uni shares tried per modality, the others at 0.5",
    "weights": "the teacher weights tried at rho 0.5",
    "weight": "the teacher weight of the rho settings (default: the first of weights)",
}


def _settings(ctx: ArmContext) -> list[dict[str, Any]]:
    opts = ctx.options
    check_options("pgm-guided", opts, OPTIONS)
    return guided_grid(
        ctx.modalities,
        tuple(opts.get("rhos", GUIDED_RHOS)),
        tuple(opts.get("weights", GUIDED_WEIGHTS)),
        opts.get("weight"),
    )


class GuidedArm(ArmRun):
    """One training of ``pgm-guided`` at one setting of its grid (the module docstring);
    ``first_stage`` names the first stage whose site features are the teacher."""

    def __init__(self, ctx: ArmContext, first_stage: str = "ume") -> None:
        super().__init__(ctx)
        self.first_stage = first_stage
        self._teacher: dict[str, Tensor] | None = None

    @property
    def setting(self) -> dict[str, Any]:
        """This training's setting; the grid's first when none is given (the runner's check
        that the block fits the host builds it without one)."""
        return dict(self.ctx.setting) or _settings(self.ctx)[0]

    def block_factory(self) -> Callable[[Any], nn.Module] | None:
        setting = self.setting
        return block_factory(
            "pgm", {"rho": dict(setting["rho"]), "lambda_teacher": setting["lambda_teacher"]}
        )

    def on_batch(self, inputs: Any, targets: Tensor, rows: Any) -> None:
        """The teacher's site features for this batch (a frozen eval forward)."""
        self._teacher = self.first_stages[self.first_stage].features(inputs)

    def aux_kwargs(self) -> dict[str, Any]:
        if self._teacher is None:
            raise RuntimeError(
                "pgm-guided: a training step ran before on_batch read the teacher's features."
            )
        return {"teacher": self._teacher}

    def record(self) -> dict[str, Any]:
        setting = self.setting
        return {
            "rho": dict(setting["rho"]),
            "lambda_teacher": setting["lambda_teacher"],
            "teacher": self.first_stage,
        }


def guided_arm(name: str = "pgm-guided", first_stage: str = "ume") -> ArmSpec:
    """The ``pgm-guided`` arm; ``first_stage`` names the arm whose trained model is the teacher
    (any arm that injects a module at the host's sites)."""

    return ArmSpec(
        name,
        f"host + PgM block guided by uni-modal training: the {first_stage} first stage's site "
        "features distilled into each uni part; rho per modality and the weight chosen on valid",
        make=functools.partial(GuidedArm, first_stage=first_stage),
        kind="pgm",
        paper=PAPER,
        settings=_settings,
        block=True,
        first_stage=first_stage,
    )
