"""Which parameters train: ``freeze_host`` and the trainable summary of an injected model.

``freeze_host=True`` freezes every parameter of the host (the PgM block still trains);
``freeze_host="text_encoder"`` or ``["vision.*", "text_encoder"]`` freezes the parameters under
the host modules those names or ``fnmatch`` patterns match. The injection records the names of
the parameters it switched off (those that trained before), so ``remove()`` switches exactly
those back on and a parameter the user had frozen stays frozen.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from pgm_plugins.errors import InjectionError

__all__ = ["FreezeSpec", "TrainableSummary", "host_parameters", "resolve_freeze"]

#: what ``freeze_host`` takes: False (nothing), True (the whole host), or module names / patterns
FreezeSpec = bool | str | Iterable[str]


def _in_block(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def host_parameters(model: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """The host's own parameters by name (each shared tensor once), without the block's."""
    return {n: p for n, p in model.named_parameters() if not _in_block(n, prefix)}


def resolve_freeze(model: nn.Module, spec: Any, prefix: str) -> tuple[str, ...]:
    """The names of the host parameters ``spec`` freezes, validated before anything changes.

    Raises ``InjectionError`` naming every pattern that matches no host module (with the nearest
    module names) or a spec of the wrong type.
    """
    if spec is False or spec is None:
        return ()
    params = host_parameters(model, prefix)
    if spec is True:
        return tuple(params)
    patterns = [spec] if isinstance(spec, str) else spec
    if not isinstance(patterns, Iterable) or isinstance(spec, bytes | Mapping):
        raise InjectionError(
            f"freeze_host={spec!r} is not valid; give True (the whole host), a module name or "
            "pattern ('text_encoder', 'vision.*'), or a list of them."
        )
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise InjectionError(
            f"freeze_host={spec!r} must name host modules: non-empty strings such as "
            "'text_encoder' or 'vision.*' (or True for the whole host)."
        )
    modules = [n for n, _ in model.named_modules() if n and not _in_block(n, prefix)]
    names = modules + list(params)  # a parameter may be named on its own too
    chosen: set[str] = set()
    unmatched: list[str] = []
    for pattern in patterns:
        hits = [m for m in names if m == pattern or fnmatch.fnmatchcase(m, pattern)]
        if not hits:
            unmatched.append(pattern)
        chosen.update(hits)
    if unmatched:
        from pgm_plugins.injection.plan import _near

        lines = [f"{p!r} matches no module{_near(p, modules)}" for p in unmatched]
        raise InjectionError(
            f"freeze_host: {len(unmatched)} of {len(patterns)} names match no module of "
            f"{type(model).__name__}: "
            + "; ".join(lines)
            + ". Give module names as pgm_plugins.list_layers(model) shows them, or fnmatch "
            "patterns ('encoders.*'); True freezes the whole host."
        )
    # every name a tensor has (a tied weight has several) maps to the one parameters() gives
    canonical = {id(p): n for n, p in params.items()}
    frozen = {
        canonical[id(p)]
        for n, p in model.named_parameters(remove_duplicate=False)
        if id(p) in canonical and any(n == c or n.startswith(c + ".") for c in chosen)
    }
    return tuple(n for n in params if n in frozen)


@dataclass(frozen=True)
class TrainableSummary:
    """Parameter counts of an injected model (each shared tensor counted once).

    ``trainable`` / ``total`` cover the whole model, block included; ``block_*`` the PgM block,
    ``host_*`` the rest. ``frozen_by_pgm``: the host parameters ``freeze_host`` switched off.
    """

    trainable: int
    total: int
    block_trainable: int
    block_total: int
    host_trainable: int
    host_total: int
    frozen_by_pgm: tuple[str, ...]

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        # the first line is peft's print_trainable_parameters() wording, for tools that parse it
        return (
            f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || "
            f"trainable%: {self.percent:.4f}\n"
            f"  PgM block: {self.block_trainable:,d} of {self.block_total:,d} trainable; host: "
            f"{self.host_trainable:,d} of {self.host_total:,d} trainable"
            + (
                f" ({len(self.frozen_by_pgm)} host tensors frozen by freeze_host)"
                if self.frozen_by_pgm
                else ""
            )
        )


def summarise(model: nn.Module, prefix: str, frozen: Iterable[str]) -> TrainableSummary:
    """The :class:`TrainableSummary` of ``model`` with its block under ``prefix``."""
    block = {n: p for n, p in model.named_parameters() if _in_block(n, prefix)}
    host = host_parameters(model, prefix)

    def count(ps: Iterable[nn.Parameter], trainable: bool) -> int:
        return sum(p.numel() for p in ps if p.requires_grad or not trainable)

    return TrainableSummary(
        trainable=count(block.values(), True) + count(host.values(), True),
        total=count(block.values(), False) + count(host.values(), False),
        block_trainable=count(block.values(), True),
        block_total=count(block.values(), False),
        host_trainable=count(host.values(), True),
        host_total=count(host.values(), False),
        frozen_by_pgm=tuple(frozen),
    )
