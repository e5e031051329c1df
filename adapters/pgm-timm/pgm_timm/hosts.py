"""Towers from timm's registry by name, and a composite host built from them.

``create_tower("timm:resnet18", in_chans=1)`` is ``timm.create_model("resnet18",
pretrained=False, num_classes=0, in_chans=1)``: random weights, no download, the classifier
removed so the tower returns its pooled pre-logits features. ``TowerFusion`` puts one tower per
modality under ``<modality>_encoder`` and classifies the concatenated features; it is what the
registered host ``timm.fusion`` builds.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins.errors import ConfigError

__all__ = ["PREFIX", "TowerFusion", "create_tower", "fusion_example", "timm_fusion", "tower_width"]

PREFIX = "timm:"
CALLS = ("forward", "features_head")


def create_tower(spec: str, **overrides: Any) -> nn.Module:
    """A timm model named ``"timm:<name>"``, random weights, classifier removed by default.

    ``overrides`` go to ``timm.create_model`` (``in_chans=1``, ``img_size=28``, ``patch_size=7``,
    ``depth=2``, ``num_classes=10``, ...). ``pretrained`` is refused: nothing is downloaded here.
    """
    if not isinstance(spec, str) or not spec.startswith(PREFIX) or len(spec) == len(PREFIX):
        raise ConfigError(
            f"tower {spec!r}: name a timm model as 'timm:<name>', e.g. 'timm:resnet18' "
            "(timm.list_models() lists them)."
        )
    if overrides.get("pretrained"):
        raise ConfigError(
            f"tower {spec!r}: pretrained=True would download weights; pass "
            "checkpoint_path=... for local weights."
        )
    import timm

    name = spec[len(PREFIX) :]
    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        raise ConfigError(
            f"tower {spec!r}: timm has no model {name!r}"
            + (f"; did you mean {', '.join(repr(PREFIX + n) for n in near)}?" if near else ".")
            + " timm.list_models('pattern*') lists the names."
        )
    options = {"num_classes": 0, **overrides, "pretrained": False}
    return timm.create_model(name, **options)


def tower_width(tower: nn.Module) -> int:
    """Width of a tower's pooled pre-logits features."""
    width = getattr(tower, "head_hidden_size", None) or getattr(tower, "num_features", None)
    if not isinstance(width, int):
        raise ConfigError(f"{type(tower).__name__} states no num_features; is it a timm model?")
    return width


class TowerFusion(nn.Module):
    """One timm tower per modality (attribute ``<modality>_encoder``), features concatenated
    into a linear classifier.

    Args:
        towers: modality -> ``"timm:<name>"`` or a built module (ordered: the forward takes the
            inputs in this order, or by modality name as keyword arguments).
        num_classes: classifier outputs.
        tower_options: modality -> ``create_tower`` overrides.
        call: how the towers are called: ``"forward"`` (``tower(x)``) or ``"features_head"``
            (``tower.forward_head(tower.forward_features(x), pre_logits=True)``).
    """

    def __init__(
        self,
        towers: Mapping[str, str | nn.Module],
        num_classes: int = 10,
        tower_options: Mapping[str, Mapping[str, Any]] | None = None,
        call: str = "forward",
    ) -> None:
        super().__init__()
        if call not in CALLS:
            raise ConfigError(f"call={call!r} is not valid; choose one of {CALLS}.")
        options = dict(tower_options or {})
        unknown = [m for m in options if m not in towers]
        if unknown:
            raise ConfigError(
                f"tower_options names {unknown}, which are not towers ({list(towers)})."
            )
        self.modalities = list(towers)
        self.call = call
        width = 0
        for m, spec in towers.items():
            tower = create_tower(spec, **options.get(m, {})) if isinstance(spec, str) else spec
            self.add_module(f"{m}_encoder", tower)
            width += tower_width(tower)
        self.head = nn.Linear(width, num_classes)

    def encode(self, modality: str, x: Tensor) -> Tensor:
        tower = self.get_submodule(f"{modality}_encoder")
        if self.call == "features_head":
            return tower.forward_head(tower.forward_features(x), pre_logits=True)  # type: ignore[operator]
        return tower(x)

    def forward(self, *inputs: Tensor, **named: Tensor) -> Tensor:
        if len(inputs) + len(named) != len(self.modalities):
            raise TypeError(f"TowerFusion takes one input per modality: {self.modalities}.")
        xs = dict(zip(self.modalities, inputs, strict=False)) | named
        feats = [self.encode(m, xs[m]) for m in self.modalities]
        return self.head(torch.cat(feats, dim=-1))


def timm_fusion(
    towers: Mapping[str, str | nn.Module] | None = None,
    tower_options: Mapping[str, Mapping[str, Any]] | None = None,
    num_classes: int = 10,
    call: str = "forward",
) -> nn.Module:
    """The ``timm.fusion`` host (eval mode): by default a ViT on 28x28 grey images and a ResNet
    on 28x28 one-channel spectrograms, both timm's tiny test models."""
    if towers is None:
        towers = {"image": "timm:test_vit", "audio": "timm:test_resnet"}
        defaults = {
            "image": {"img_size": 28, "patch_size": 7, "in_chans": 1},
            "audio": {"in_chans": 1},
        }
        tower_options = {
            m: {**defaults[m], **dict((tower_options or {}).get(m, {}))} for m in towers
        }
    return TowerFusion(towers, num_classes, tower_options, call).eval()


def fusion_example(batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs for the default ``timm.fusion``: two ``[B, 1, 28, 28]`` tensors."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 28, 28, generator=g), torch.randn(batch, 1, 28, 28, generator=g)
