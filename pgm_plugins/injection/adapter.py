"""``Adapter``: what one model family needs for injection (sites, defaults, how to recognise it).

Plugins register adapters through the ``pgm_register_adapters`` hook; ``inject`` also takes an
``Adapter`` object directly, with no registry involved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pgm_plugins.errors import InjectionError
from pgm_plugins.injection.site import Junction, Site

__all__ = ["Adapter"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
SiteSpec = Site | str | Mapping[str, Any]


@dataclass(frozen=True)
class Adapter:
    """Sites and block defaults for one model family.

    Attributes:
        name: registry name, lower case, dotted by zoo (``"mmsa.mult"``, ``"hf.clip"``).
        sites: modality -> site, or a callable ``model -> {modality: site}`` for families whose
            layer names depend on the instance.
        junction: alternatively one layer carrying all modalities.
        mode: ``"joint"`` (all modalities in one forward) or ``"independent"`` (dual encoders).
        config: default ``PgMConfig`` fields (the user's config overrides them).
        matches: ``model -> bool``; lets ``pgm_plugins.match_adapter`` recognise the family.
        description: one line for ``pgm adapters``.
        allow_single: the family has one modality on purpose (mmf's unimodal baselines), so a
            plan with this adapter may build a one-modality block without the caller's
            ``allow_single=True``; otherwise a plan with fewer than two modalities is an error.
    """

    name: str
    sites: Mapping[str, SiteSpec] | Callable[[nn.Module], Mapping[str, SiteSpec]] = field(
        default_factory=dict
    )
    junction: Junction | None = None
    mode: str = "joint"
    config: Mapping[str, Any] = field(default_factory=dict)
    matches: Callable[[nn.Module], bool] | None = None
    description: str = ""
    allow_single: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise InjectionError(
                f"adapter name {self.name!r} must be lower case letters, digits, "
                "'.', '_' or '-', starting with a letter or digit."
            )
        if self.mode not in ("joint", "independent"):
            raise InjectionError(
                f"adapter {self.name!r}: mode={self.mode!r} is not valid; choose "
                "'joint' or 'independent'."
            )
        if not self.sites and self.junction is None:
            raise InjectionError(f"adapter {self.name!r} names neither sites nor a junction.")

    def sites_for(self, model: nn.Module) -> dict[str, SiteSpec]:
        sites = self.sites(model) if callable(self.sites) else self.sites
        return dict(sites)
