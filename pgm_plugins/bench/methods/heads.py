"""Per-modality heads at the sites, shared by the method arms, and what the arms read of them.

Two modules, both injected at the host's sites and both leaving the features the host receives
unchanged: :class:`~pgm_plugins.bench.arms.UniHeadsControl` (a linear head per modality trained on
the label; its loss reaches the encoder, MMPareto's uni-modal objective) and :class:`ProbeHeads`
(the same heads on the *detached* features: they learn to read each modality and give its
encoder no gradient, OGM-GE's per-modality score). The arms read the heads' logits of the
step's forward from the block's handle (``handle.outputs``, the forwards the step's auxiliary
loss covered, not yet backpropagated) and replace the block's summed auxiliary term ``"pgm"`` by
one term per modality (:func:`head_losses`), so each modality's loss can be told apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from pgm_plugins.bench.arms import UniHeadsControl
from pgm_plugins.block.losses import task_loss
from pgm_plugins.errors import ConfigError, choices_text, did_you_mean

__all__ = ["ProbeHeads", "check_options", "head_logits", "head_losses", "positive_numbers"]


class ProbeHeads(UniHeadsControl):
    """A linear head per modality on the pooled site features, detached: the heads train, the
    encoders get nothing from them, and the host receives its features unchanged."""

    detach = True


def head_logits(handle: Any) -> list[dict[str, Tensor]]:
    """Per forward of the step (oldest first), the heads' logits by modality (``{m: [B, C]}``)."""
    out = []
    for record in handle.outputs:
        got = {k[len("uni.") :]: v for k, v in record.logits.items() if k.startswith("uni.")}
        if got:
            out.append(got)
    return out


def head_losses(handle: Any, targets: Tensor) -> dict[str, Tensor]:
    """Each modality's head loss on the step's forwards (``{m: loss}``, weight 1 each, summed
    over the forwards): the block's task loss (cross-entropy, or its regression loss)."""
    cfg = handle.block.config
    losses: dict[str, Tensor] = {}
    for logits in head_logits(handle):
        for m, z in logits.items():
            value = task_loss(z, targets, cfg.task, cfg.regression_loss)
            losses[m] = losses[m] + value if m in losses else value
    return losses


def check_options(arm: str, options: Mapping[str, Any], valid: Mapping[str, str]) -> None:
    """Refuse ``[arm_options.<arm>]`` keys the arm does not take, naming the valid ones."""
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"[arm_options.{arm}] has no option {key!r}; valid: {choices_text(valid)} ("
                + "; ".join(f"{k}: {v}" for k, v in valid.items())
                + ")."
                + did_you_mean(key, valid)
            )


def positive_numbers(arm: str, key: str, value: Any) -> list[float]:
    """``value`` as a non-empty list of positive numbers, else a clear error."""
    ok = (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise ConfigError(
            f"[arm_options.{arm}] {key} must be a non-empty list of positive numbers; got "
            f"{value!r}."
        )
    return [float(v) for v in value]
