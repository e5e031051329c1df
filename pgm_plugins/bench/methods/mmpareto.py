"""``mmpareto``: uni-modal heads whose gradients are integrated with the multimodal one per encoder.

Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024
(arXiv 2405.17730), Sec. 4. The host trains its own (multimodal) loss ``L_mm`` and a linear
uni-modal head per modality on its site features trains ``L_m`` (weight 1 each, the paper's
``L_mm + sum_m L_m``; the heads are :class:`~pgm_plugins.bench.arms.UniHeadsControl`, as in the
``uni_heads`` arm). For the encoder of each modality ``m`` the two gradients
``g_mm = dL_mm/dtheta_m`` and ``g_m = dL_m/dtheta_m`` are integrated rather than summed:

- **direction**: no conflict (``cos(g_mm, g_m) >= 0``): equal weights ``(1/2, 1/2)``; conflict
  (``cos < 0``): the two-gradient min-norm (MGDA) weights ``(w, 1 - w)``,
  ``w = argmin_{w in [0, 1]} ||w g_mm + (1 - w) g_m||`` (:func:`min_norm_weights`), a direction
  that descends on both losses. The integrated gradient is ``g = 2 (w g_mm + (1 - w) g_m)``
  (the plain sum when there is no conflict).
- **magnitude**: the paper keeps the magnitude up for generalisation (the multimodal loss's
  gradient is smaller and less noisy than the uni-modal one): when ``||g||`` falls below
  ``||g_mm + g_m||`` it is rescaled to that norm, and the result is multiplied by ``gamma``
  (:data:`GAMMAS`: the public implementation's and BalanceBenchmark's 1.5). Under the hosts'
  Adam(W) this has no lasting effect (Adam's step does not follow the gradient's norm, so the
  step length SGD loses to the integration is not lost there): the direction rule is what acts.
  It is kept as written, not moved onto the step (as ``ogm_ge`` moves its coefficient).

It runs in the arm's ``backward``: per-loss gradients of the encoders' parameters with
``torch.autograd.grad``, then one backward of the plain sum for every other parameter (fusion,
heads), whose encoder gradients are then replaced by the integrated ones. Norms and cosines are
taken over each encoder's whole parameter vector (``HostRun.parts()[m]``, the paper's
``theta_m``; the public implementation rescales per tensor).

Both tasks: the rule integrates the gradients of two losses and never reads a class probability,
so on the regression hosts it runs with regression heads (the block's regression loss), a direct
carry-over that neither the paper nor BalanceBenchmark evaluates. ``gamma`` comes from
``[arm_options.mmpareto] gammas`` (default one value: a tuning budget of 1, the method has no
other knob).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import UniHeadsControl
from pgm_plugins.bench.methods.heads import check_options, head_losses, positive_numbers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pgm_plugins.bench.step import Stage

__all__ = ["GAMMAS", "MMParetoRun", "integrate", "min_norm_weights", "mmpareto_arm"]

NAME = "mmpareto"
PAPER = (
    "Wei & Hu, MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance, "
    "ICML 2024 (arXiv 2405.17730)"
)
#: the magnitude factors tried per cell (one: the method's budget is 1)
GAMMAS: tuple[float, ...] = (1.5,)
OPTIONS = {"gammas": "the magnitude factors gamma tried, one training each (default 1.5)"}


def min_norm_weights(g1: Tensor, g2: Tensor) -> tuple[float, float]:
    """``(w, 1 - w)`` with ``w`` in ``[0, 1]`` minimising ``||w g1 + (1 - w) g2||``: the
    two-gradient min-norm point of MGDA, in closed form
    ``w = clip((g2 - g1) . g2 / ||g1 - g2||^2, 0, 1)`` (equal gradients: 1/2 each)."""
    a, b = g1.double().reshape(-1), g2.double().reshape(-1)
    diff = a - b
    denom = float(diff @ diff)
    if denom == 0.0:
        return 0.5, 0.5
    w = min(max(float((b - a) @ b) / denom, 0.0), 1.0)
    return w, 1.0 - w


def integrate(
    g_mm: Tensor, g_uni: Tensor, gamma: float = GAMMAS[0]
) -> tuple[Tensor, dict[str, Any]]:
    """The integrated gradient of one encoder from its multimodal and uni-modal gradients
    (flat vectors), and what was decided (``conflict``, ``weights``)."""
    norm_mm, norm_uni = float(g_mm.norm()), float(g_uni.norm())
    cos = float(g_mm @ g_uni) / (norm_mm * norm_uni) if norm_mm > 0 and norm_uni > 0 else 1.0
    conflict = cos < 0.0
    w = min_norm_weights(g_mm, g_uni) if conflict else (0.5, 0.5)
    g = 2.0 * (w[0] * g_mm + w[1] * g_uni)
    plain = float((g_mm + g_uni).norm())
    now = float(g.norm())
    if now > 0.0 and plain > now:
        g = g * (plain / now)
    return gamma * g, {"conflict": conflict, "weights": w, "cos": cos}


def _flat(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]
    )


class MMParetoRun(ArmRun):
    """One training of ``mmpareto`` at ``ctx.setting["gamma"]`` (see the module docstring)."""

    def __init__(self, ctx: ArmContext) -> None:
        super().__init__(ctx)
        check_options(NAME, ctx.options, OPTIONS)
        self.gamma = float(ctx.setting.get("gamma", GAMMAS[0]))
        self._steps = {m: 0 for m in ctx.modalities}
        self._conflicts = {m: 0 for m in ctx.modalities}
        self._w_mm = {m: 0.0 for m in ctx.modalities}

    def block_factory(self) -> Callable[[Any], nn.Module]:
        return UniHeadsControl

    def losses(self, terms: dict[str, Tensor], stage: Stage) -> dict[str, Tensor]:
        """The block's summed ``pgm`` term split into one uni-modal loss per modality
        (``uni.<m>``, weight 1 each)."""
        if "pgm" not in terms or self.handle is None or stage.targets is None:
            return terms
        out = {k: v for k, v in terms.items() if k != "pgm"}
        out.update({f"uni.{m}": v for m, v in head_losses(self.handle, stage.targets).items()})
        return out

    def backward(self, terms: Mapping[str, Tensor], loss: Tensor, stage: Stage) -> bool:
        """Per-loss encoder gradients, one backward of the sum, then each encoder's gradient
        replaced by the integrated one. ``loss`` may be scaled (fp16): every gradient is taken
        at the same scale, so the grad scaler's unscaling stays right."""
        uni = {m: terms[f"uni.{m}"] for m in self.ctx.modalities if f"uni.{m}" in terms}
        multi = [v for k, v in terms.items() if not k.startswith("uni.")]
        if not uni or not multi:
            return False
        parts = self.host.parts()
        enc = {m: [p for p in parts[m] if p.requires_grad] for m in uni}
        enc = {m: ps for m, ps in enc.items() if ps}
        if not enc:
            return False
        total = sum(terms.values(), start=torch.zeros((), device=loss.device)).detach()
        scale = torch.where(total != 0, loss.detach() / total, torch.ones_like(total))
        l_mm = sum(multi[1:], start=multi[0]) * scale
        every = [p for ps in enc.values() for p in ps]
        g_mm_all = torch.autograd.grad(l_mm, every, retain_graph=True, allow_unused=True)
        g_mm: dict[str, Tensor] = {}
        at = 0
        for m, ps in enc.items():
            g_mm[m] = _flat(g_mm_all[at : at + len(ps)], ps)
            at += len(ps)
        g_uni = {
            m: _flat(
                torch.autograd.grad(uni[m] * scale, ps, retain_graph=True, allow_unused=True), ps
            )
            for m, ps in enc.items()
        }
        loss.backward()
        for m, ps in enc.items():
            g, info = integrate(g_mm[m], g_uni[m], self.gamma)
            at = 0
            for p in ps:
                piece = g[at : at + p.numel()].view_as(p).to(p.dtype)
                at += p.numel()
                p.grad = piece
            self._steps[m] += 1
            if info["conflict"]:
                self._conflicts[m] += 1
                self._w_mm[m] += info["weights"][0]
        return True

    def record(self) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "conflict_share": {m: self._conflicts[m] / max(n, 1) for m, n in self._steps.items()},
            "conflict_multimodal_weight": {
                m: (self._w_mm[m] / c if c else None) for m, c in self._conflicts.items()
            },
        }


def _settings(ctx: ArmContext) -> list[dict[str, Any]]:
    check_options(NAME, ctx.options, OPTIONS)
    gammas = positive_numbers(NAME, "gammas", ctx.options.get("gammas", list(GAMMAS)))
    return [{"gamma": g} for g in gammas]


def mmpareto_arm() -> ArmSpec:
    """The ``mmpareto`` arm as registered."""
    return ArmSpec(
        NAME,
        "host + uni-modal heads, each encoder's multimodal and uni-modal gradients integrated "
        "by MMPareto (min-norm on conflict, magnitude kept)",
        make=MMParetoRun,
        kind="method",
        paper=PAPER,
        settings=_settings,
        block=True,
    )
