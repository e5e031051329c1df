"""The ``timm.towers`` adapter: every timm tower of a composite becomes one modality's site."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from pgm_plugins import Adapter, Site
from pgm_timm.towers import holds_timm_tower, supported_text, tower_sites

__all__ = ["ADAPTER_NAME", "TowerSites", "towers_adapter"]

ADAPTER_NAME = "timm.towers"


class TowerSites:
    """``model -> {modality: Site}`` with the user's modality names (picklable)."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.names = dict(names or {})

    def __call__(self, model: nn.Module) -> dict[str, Site]:
        return tower_sites(model, self.names)


def towers_adapter(
    names: Mapping[str, str] | None = None,
    mode: str = "joint",
    config: Mapping[str, Any] | None = None,
) -> Adapter:
    """The adapter for timm towers in a composite, with optional modality names.

    ``inject(model)`` uses the registered one (modalities named after the towers' attributes);
    ``inject(model, adapter=towers_adapter(names={"image_encoder": "rgb"}))`` names them.
    ``mode="independent"`` (with ``config={"paired": "shared"}``) for a composite that calls its
    towers in separate calls or reads one tower's features before the next tower runs.
    """
    return Adapter(
        ADAPTER_NAME,
        sites=TowerSites(names),
        mode=mode,
        config=dict(config or {}),
        matches=holds_timm_tower,
        description=f"timm towers in a composite, pooled pre-logits features: {supported_text()}",
    )
