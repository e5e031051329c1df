"""``ume``: the Uni-Modal Ensemble of Du et al., "On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning", ICML 2023 (arXiv 2305.01233, sec. 4): each modality's encoder trained
alone with its own head, no fusion training, and the prediction the ensemble of the uni-modal
models.

Here it is one training per cell: the host with a linear head per modality on its pooled site
features (:class:`~pgm_plugins.bench.arms.UniHeadsControl`), every loss term of the host's own
recipe dropped, so only the heads' terms train, each at weight 1 (the sum over modalities of
each head's task loss: what training each uni-modal model on its own minimises). Each encoder
then gets its own head's gradient only, and the fusion part of the host
(``HostRun.parts()["fusion"]``) gets none, so it never changes. Where a host clips gradients by
their norm, each modality (its encoder part and its head) is clipped on its own at the recipe's
threshold instead of all together, so one modality's gradient never scales another's.

The prediction is the heads' ensemble: the mean of their logits (classification) or of their
scores (regression); early stopping and scoring read it. Two things differ from training each
uni-modal model in its own run: the best epoch is chosen once, on the ensemble's validation
metric, and the encoders share the host's optimizer (AdamW's update is per parameter, so this
does not couple them).

Uni-modal training needs a host whose encoders are disjoint up to the sites: true of
``late_fusion``, ``timm.av`` and the MMSA hosts at their default sites (MulT's temporal
projections ``proj_l/a/v`` -- a convolution per modality, before any cross-modal attention;
MISA's ``project_t/a/v``; Self-MM's and MMIM's encoders; TFN's and LMF's subnets). MulT's
``mmsa.mult.mem`` sites are not: ``trans_*_mem`` reads the cross-modal transformers' outputs,
so a head there trains every modality's projection. docs/method.md compares the method with
PgM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmRun, ArmSpec
from pgm_plugins.bench.arms import block_factory
from pgm_plugins.bench.step import clip_apart

__all__ = ["PAPER", "UniModalEnsemble", "ume_arm"]

PAPER = (
    "Du et al., On Uni-Modal Feature Learning in Supervised Multi-Modal Learning, ICML 2023 "
    "(arXiv 2305.01233)"
)
#: the block change that defines the arm: the heads' terms at full weight (the block averages
#: them over modalities; :meth:`UniModalEnsemble.losses` undoes the mean)
CHANGES: dict[str, Any] = {"lambda_uni": 1.0}


class UniModalEnsemble(ArmRun):
    """One training of ``ume`` (the module docstring): heads at the sites, the host's losses
    dropped, per-modality clipping, the heads' mean as the prediction."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._logits: dict[str, Tensor] = {}
        self._dropped: set[str] = set()
        self._skip = False

    def block_factory(self) -> Callable[[Any], nn.Module] | None:
        return block_factory("uni_heads", CHANGES)

    def attach(self, host: Any, handle: Any) -> None:
        super().attach(host, handle)
        handle.block.register_forward_hook(self._tap)

    def _tap(self, module: nn.Module, args: Any, out: Any) -> None:
        # eval forwards only: what predict() reads (independent mode calls once per modality)
        if not torch.is_grad_enabled():
            self._logits.update(out.logits)

    def losses(self, terms: dict[str, Tensor], stage: Any) -> dict[str, Tensor]:
        """Only the heads' term, each head at weight 1; a stage without the block's term
        (none of the bench's hosts has one) trains nothing (:meth:`backward` skips it)."""
        self._dropped.update(k for k in terms if k != "pgm")
        self._skip = "pgm" not in terms
        if self._skip:
            return {"nothing": next(iter(terms.values())).detach() * 0.0}
        cfg = self.handle.block.config
        return {"uni": terms["pgm"] * (len(cfg.modalities) / cfg.lambda_uni)}

    def backward(self, terms: Mapping[str, Tensor], loss: Tensor, stage: Any) -> bool:
        return self._skip

    def _modality_params(self) -> dict[str, list[nn.Parameter]]:
        parts = self.host.parts()
        heads = self.handle.block.heads
        return {m: [*parts.get(m, []), *heads[m].parameters()] for m in self.ctx.modalities}

    def after_backward(self, stage: Any) -> None:
        """Clip each modality's gradient norm on its own (the recipe's threshold), then take
        the stage's joint clipping off."""
        groups = list(self._modality_params().values())
        seen = {id(p) for group in groups for p in group}
        # the rest: nothing in the bench's hosts, where every trained parameter is a modality's
        rest = [p for p in self.host.model.parameters() if id(p) not in seen]
        clip_apart(stage, [*groups, rest])

    def predict(self, outputs: Tensor, inputs: Any) -> Tensor:
        """The mean of the heads' outputs on the forward that gave ``outputs``."""
        got, self._logits = self._logits, {}
        missing = [m for m in self.ctx.modalities if f"uni.{m}" not in got]
        if missing:
            raise RuntimeError(
                f"ume: the last eval forward gave no head output for {missing}; the host's "
                "forward must reach every site."
            )
        mean = torch.stack([got[f"uni.{m}"].float() for m in self.ctx.modalities]).mean(0)
        if mean.shape[0] != outputs.shape[0]:
            raise RuntimeError(
                f"ume: the heads saw {mean.shape[0]} rows, the host predicted {outputs.shape[0]}."
            )
        return mean[:, 0] if outputs.dim() == 1 else mean

    def record(self) -> dict[str, Any]:
        return {
            "ensemble": "mean of the uni-modal heads' "
            + ("logits" if self.ctx.task == "classification" else "scores"),
            "dropped_host_terms": sorted(self._dropped),
            "clip": "per modality",
        }


def ume_arm() -> ArmSpec:
    """The ``ume`` arm (one setting: the method has no weight to tune)."""
    return ArmSpec(
        "ume",
        "uni-modal ensemble: each encoder trained alone with its own head (no fusion "
        "training), the heads' mean as the prediction",
        make=UniModalEnsemble,
        kind="method",
        paper=PAPER,
        changes=dict(CHANGES),
        block=True,
    )
