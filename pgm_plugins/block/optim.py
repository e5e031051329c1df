"""Different learning rates across modalities and partitions.

``docs/design.md``, "Learning rates and gradient scales".

Two mechanisms: optimizer groups with their own learning rate for the block's parts, and a
gradient-scaling op (identity forward, ``kappa * grad`` backward) on the branches that leave the
host's ``h_m``, so that the host's encoder of modality m learns from its uni-modal and paired-modal
signals at different rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GradientScale", "make_param_groups", "scale_grad"]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``factor`` in backward.

    ``factor == 1`` returns ``x`` itself (no autograd node); ``factor == 0`` passes zeros back.
    """
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, float(factor))


class GradientScale(nn.Module):
    """Module twin of :func:`scale_grad`."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return scale_grad(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def make_param_groups(
    named_groups: Mapping[str, Iterable[nn.Parameter]],
    base_lr: float,
    lr_of: Mapping[str, float] | None = None,
    **defaults: Any,
) -> list[dict[str, Any]]:
    """Turn ``{group name: params}`` into optimizer groups ``{"name", "params", "lr", ...}``.

    Parameters that do not require grad and empty groups are left out; a parameter that appears
    in two groups is an error (every trainable parameter must land in exactly one).
    """
    seen: dict[int, str] = {}
    groups: list[dict[str, Any]] = []
    for name, params in named_groups.items():
        trainable = []
        for p in params:
            if not p.requires_grad:
                continue
            if id(p) in seen:
                raise ValueError(
                    f"parameter of shape {tuple(p.shape)} is in both groups "
                    f"{seen[id(p)]!r} and {name!r}."
                )
            seen[id(p)] = name
            trainable.append(p)
        if trainable:
            lr = base_lr * (lr_of or {}).get(name, 1.0)
            groups.append({"name": name, "params": trainable, "lr": lr, **defaults})
    return groups
