"""An arm registered by a third-party distribution, through the ``pgm_plugins`` entry point.

``example.weighted_uni_heads``: the host with a linear uni-modal head per modality on its site
features, trained on the label beside the host's own loss (Du et al., "On Uni-Modal Feature
Learning in Supervised Multi-Modal Learning", ICML 2023), with the heads' loss weight ``w``
tuned on validation from ``[arm_options.example.weighted_uni_heads] weights`` (default 0.5, 1,
2): three trainings per cell, counted as its tuning budget. It shows the three things most arms
need: a module injected at the sites (``block_factory``), a loss term changed per stage
(``losses``), and a settings grid; ``record`` adds the weight it trained with to the record.

Run it: ``pgm bench run examples/pgm-example-arm/weighted_uni_heads.toml`` (after ``pip install -e
examples/pgm-example-arm``; ``make setup`` installs it).
"""

from __future__ import annotations

from typing import Any

from pgm_plugins import hookimpl
from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import UniHeadsControl

__all__ = ["WeightedUniHeads", "pgm_register_arms"]

WEIGHTS = (0.5, 1.0, 2.0)


class WeightedUniHeads(ArmRun):
    """Uni-modal heads at the sites; their loss (the block's auxiliary term) times ``w``."""

    def block_factory(self) -> Any:
        return UniHeadsControl

    def losses(self, terms: dict[str, Any], stage: Any) -> dict[str, Any]:
        if "pgm" in terms:
            terms = {**terms, "pgm": float(self.ctx.setting["w"]) * terms["pgm"]}
        return terms

    def record(self) -> dict[str, Any]:
        return {"w": float(self.ctx.setting["w"])}


def _settings(ctx: ArmContext) -> list[dict[str, Any]]:
    weights = ctx.options.get("weights", WEIGHTS)
    if not isinstance(weights, list | tuple) or not weights:
        raise ValueError(f"weights must be a non-empty list of numbers; got {weights!r}.")
    return [{"w": float(w)} for w in weights]


@hookimpl
def pgm_register_arms(register: Any) -> None:
    register(
        ArmSpec(
            "example.weighted_uni_heads",
            "host + uni-modal heads, their loss weight tuned on validation",
            make=WeightedUniHeads,
            kind="control",
            paper="Du et al., On Uni-Modal Feature Learning in Supervised Multi-Modal "
            "Learning, ICML 2023",
            settings=_settings,
            block=True,
        )
    )
