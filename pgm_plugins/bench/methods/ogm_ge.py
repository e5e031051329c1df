"""``ogm_ge``: on-the-fly gradient modulation with generalisation enhancement.

Peng, Wei, Deng, Wang & Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022 (arXiv 2203.15332), Sec. 3.2-3.3. Per training step, each modality ``m`` gets a score
``s_m = sum_i softmax(z_m(x_i))[y_i]`` (the summed probability of the true class from modality
``m`` alone), the dominant modality's discrepancy ratio ``rho_m`` and the coefficient (the
paper's Eq. 10)::

    k_m = 1 - tanh(alpha * rho_m)   if rho_m > 1,   else 1

The paper applies ``k_u`` to the dominant encoder's gradients under SGD, where the step is the
gradient times the learning rate, and adds the generalisation enhancement (Sec. 3.3):
``g <- k_u * g + h``, ``h ~ N(0, sigma^2)`` with ``sigma`` the standard deviation of that
parameter tensor's gradient (the public implementation's estimate of the SGD noise covariance).

**Under the hosts' Adam(W) the coefficient goes on the step, not the gradient.** Adam divides
the gradient's running mean by its running scale, so a factor ``k`` on every gradient cancels and
the encoder moves as far as without it (measured: k = 0.34 for 200 steps moves the parameters
exactly as far as k = 1). To slow the dominant modality as the paper does under SGD, whatever the
optimizer, the arm scales its *update*: after the optimizer's step, each of its parameters is
set to ``theta_old + k_u (theta_new - theta_old)``; under plain SGD that is the paper's
gradient scaling. Order per step: backward; the recipe's clipping of the host's own gradients
(the probe heads clipped on their own, so their loss never scales the host's gradients); the
noise ``h`` added to every encoder's gradient; the optimizer's step; the dominant encoder's step
scaled by ``k_u``.

How it is generalised (the paper's hosts are linear fusions ``W [a; v] + b``, whose per-modality
logits ``z_m = W_m h_m + b / 2`` come for free):

- **Non-linear fusion** (MLP heads, LMF, MulT, ...): ``z_m`` comes from a linear probe head per
  modality on that modality's pooled site features, *detached* (:class:`ProbeHeads`): the
  module leaves the features unchanged, its heads learn from their own cross-entropy (the step's
  auxiliary terms ``probe.<m>``, weight 1) and give the encoders no gradient, and where the
  recipe clips by norm they are clipped apart from the host, so the only changes to the host's
  training are the slowed step and the noise.
- **More than two modalities**: ``rho_m = s_m / mean_{n != m} s_n`` (for two modalities the
  paper's ``s_a / s_v``); the dominant modality (the largest ratio, when it exceeds 1) is slowed
  by its ``k_m``, the others keep ``k = 1``, as with two. (BalanceBenchmark instead slows every
  modality whose ratio exceeds 1; with a weak third modality that slows both strong ones.)
- **Schedule**: the modulation runs on every step of every epoch (the public implementation
  modulates a chosen epoch window; the bench's epoch caps and early stopping differ per host).

``alpha`` is chosen per cell on validation from ``[arm_options.ogm_ge] alphas`` (default
:data:`ALPHAS`: the public implementation's recommended 0.1 for VGGSound and 0.8 for CREMA-D,
and BalanceBenchmark's 0.3), each value one training of the counted budget. ``noise = false``
turns the generalisation enhancement off (plain OGM). Classification only: the score is a class
probability and the paper gives no regression form, so the runner refuses the arm on the MMSA
hosts' regression tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.methods.heads import (
    ProbeHeads,
    check_options,
    head_logits,
    head_losses,
    positive_numbers,
)
from pgm_plugins.bench.step import clip_apart
from pgm_plugins.errors import ConfigError

if TYPE_CHECKING:
    from pgm_plugins.bench.step import Stage

__all__ = [
    "ALPHAS",
    "OgmGeRun",
    "add_noise_",
    "coefficients",
    "discrepancy_ratios",
    "modality_scores",
    "ogm_ge_arm",
]

NAME = "ogm_ge"
PAPER = (
    "Peng et al., Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022 "
    "(arXiv 2203.15332)"
)
#: the alpha values tried per cell (the arm's tuning budget)
ALPHAS: tuple[float, ...] = (0.1, 0.3, 0.8)
#: ``[arm_options.ogm_ge]`` keys
OPTIONS = {
    "alphas": "the alpha values tried, one training each (default 0.1, 0.3, 0.8)",
    "noise": "add the generalisation-enhancement noise (default true; false: plain OGM)",
}


def modality_scores(logits: Mapping[str, Tensor], targets: Tensor) -> dict[str, float]:
    """``s_m``: the batch's summed softmax probability of the true class from each modality's
    logits ``[B, C]``."""
    y = targets.long().view(-1, 1)
    return {
        m: float(torch.softmax(z.detach().float(), dim=-1).gather(1, y).sum())
        for m, z in logits.items()
    }


def discrepancy_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """``rho_m = s_m / mean of the other modalities' scores`` (``s_a / s_v`` for two); a single
    modality has nothing to compare with (ratio 1)."""
    if len(scores) < 2:
        return {m: 1.0 for m in scores}
    total = sum(scores.values())
    out = {}
    for m, s in scores.items():
        others = (total - s) / (len(scores) - 1)
        out[m] = s / others if others > 0 else math.inf
    return out


def coefficients(scores: Mapping[str, float], alpha: float) -> dict[str, float]:
    """The paper's Eq. 10: the dominant modality ``u`` (the largest ratio) gets
    ``1 - tanh(alpha * rho_u)`` when ``rho_u > 1``; every other modality 1."""
    ratios = discrepancy_ratios(scores)
    out = {m: 1.0 for m in ratios}
    if ratios:
        u = max(ratios, key=lambda m: ratios[m])
        if ratios[u] > 1.0:
            out[u] = 1.0 - math.tanh(alpha * ratios[u])
    return out


def add_noise_(params: Iterable[nn.Parameter]) -> None:
    """In place: each gradient ``g <- g + h``, ``h ~ N(0, std(g)^2)`` (``std`` of that tensor's
    gradient; a one-element tensor gets none): the generalisation enhancement."""
    for p in params:
        g = p.grad
        if g is not None and g.numel() > 1:
            p.grad = g + torch.randn_like(g) * g.float().std().to(g.dtype)


class OgmGeRun(ArmRun):
    """One training of ``ogm_ge`` at ``ctx.setting["alpha"]`` (see the module docstring)."""

    def __init__(self, ctx: ArmContext) -> None:
        super().__init__(ctx)
        check_options(NAME, ctx.options, OPTIONS)
        noise = ctx.options.get("noise", True)
        if not isinstance(noise, bool):
            raise ConfigError(f"[arm_options.{NAME}] noise must be true or false; got {noise!r}.")
        self.noise = noise
        self.alpha = float(ctx.setting.get("alpha", ALPHAS[0]))
        self._k: dict[str, float] | None = None
        self._k_sum = {m: 0.0 for m in ctx.modalities}
        self._slowed = {m: 0 for m in ctx.modalities}
        self._steps = 0
        self._before: list[tuple[nn.Parameter, Tensor, float]] = []

    def block_factory(self) -> Callable[[Any], nn.Module]:
        return ProbeHeads

    def losses(self, terms: dict[str, Tensor], stage: Stage) -> dict[str, Tensor]:
        """Score the modalities from the probe heads of this step's forward, and train the heads
        on their own losses (``probe.<m>`` in place of the block's summed ``pgm`` term)."""
        self._k = None
        if "pgm" not in terms or self.handle is None or stage.targets is None:
            return terms
        scores: dict[str, float] = {}
        for logits in head_logits(self.handle):
            for m, s in modality_scores(logits, stage.targets).items():
                scores[m] = scores.get(m, 0.0) + s
        self._k = coefficients(scores, self.alpha)
        out = {k: v for k, v in terms.items() if k != "pgm"}
        out.update({f"probe.{m}": v for m, v in head_losses(self.handle, stage.targets).items()})
        return out

    def after_backward(self, stage: Stage) -> None:
        """Clip as the recipe does (the host apart from the probe heads), add the noise to every
        encoder's gradient and keep the dominant encoder's parameters to scale its step."""
        if self._k is None:
            return
        # the recipe's clipping, the host apart from the probe heads (their loss is the arm's)
        heads = list(self.handle.block.parameters())
        ids = {id(p) for p in heads}
        clip_apart(stage, [[p for p in self.host.model.parameters() if id(p) not in ids], heads])
        parts = self.host.parts()
        if self.noise:
            for m in self._k:
                add_noise_(parts[m])
        self._before = [
            (p, p.detach().clone(), k)
            for m, k in self._k.items()
            if k < 1.0
            for p in parts[m]
            if p.grad is not None
        ]
        for m, k in self._k.items():
            self._k_sum[m] += k
            self._slowed[m] += int(k < 1.0)
        self._steps += 1
        self._k = None

    def after_step(self, stage: Stage) -> None:
        """The dominant encoder's step scaled by its coefficient:
        ``theta <- theta_old + k (theta - theta_old)``."""
        with torch.no_grad():
            for p, old, k in self._before:
                p.mul_(k).add_(old, alpha=1.0 - k)
        self._before = []

    def record(self) -> dict[str, Any]:
        n = max(self._steps, 1)
        return {
            "alpha": self.alpha,
            "noise": self.noise,
            "slows": "update",
            "coefficient_mean": {m: v / n for m, v in self._k_sum.items()},
            "slowed_share": {m: v / n for m, v in self._slowed.items()},
        }


def _settings(ctx: ArmContext) -> list[dict[str, Any]]:
    check_options(NAME, ctx.options, OPTIONS)
    alphas = positive_numbers(NAME, "alphas", ctx.options.get("alphas", list(ALPHAS)))
    return [{"alpha": a} for a in alphas]


def ogm_ge_arm() -> ArmSpec:
    """The ``ogm_ge`` arm as registered."""
    return ArmSpec(
        NAME,
        "host + OGM-GE: the dominant modality's encoder step slowed (scores from detached "
        "probe heads), plus generalisation noise; alpha chosen on valid",
        make=OgmGeRun,
        kind="method",
        paper=PAPER,
        settings=_settings,
        tasks=("classification",),
        block=True,
    )
