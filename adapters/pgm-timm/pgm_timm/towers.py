"""Finding timm towers inside a composite model and the site of their pooled pre-logits features.

A *tower* is a timm model (a class of ``timm.models``, with ``forward_features`` /
``forward_head``, or a ``features_only`` wrapper) used as one modality's encoder inside a model
the user wrote. For each supported family the site is the last module of ``forward_head`` that
runs before the classifier, whichever way the tower is called:

- ``tower(x)`` (``forward`` = ``forward_features`` then ``forward_head``),
- ``tower.forward_head(tower.forward_features(x), pre_logits=True)``,
- ``tower.forward_head(tower.forward_features(x))``,

so the block sees exactly ``forward_head(..., pre_logits=True)``: ``[B, num_features]`` (for
MobileNetV3, ``[B, head_hidden_size]``). Recognition compares class paths as strings: nothing here
imports timm.

``features_only`` towers that return a list of feature maps (``FeatureListNet``, the EfficientNet /
MobileNetV3 feature nets) get a site at their last map, ``[B, C, H, W]`` (layout ``BDHW``: the block
sees the H x W positions as tokens and hands the map back); ``FeatureDictNet`` and the hook / getter
wrappers are recognised and refused with the ways around it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from pgm_plugins import Site
from pgm_plugins.errors import InjectionError

__all__ = [
    "FAMILIES",
    "FEATURE_NETS",
    "Tower",
    "class_path",
    "find_towers",
    "holds_timm_tower",
    "is_timm_model",
    "modality_name",
    "supported_text",
    "tower_sites",
]

#: class path -> (family label, path of the pre-logits module inside the tower)
FAMILIES: dict[str, tuple[str, str]] = {
    "timm.models.vision_transformer.VisionTransformer": ("ViT / DeiT", "head_drop"),
    "timm.models.vision_transformer_relpos.VisionTransformerRelPos": (
        "ViT relative-position",
        "head_drop",
    ),
    "timm.models.resnet.ResNet": ("ResNet / ResNeXt", "global_pool"),
    "timm.models.efficientnet.EfficientNet": ("EfficientNet / MobileNetV2", "global_pool"),
    "timm.models.mobilenetv3.MobileNetV3": ("MobileNetV3", "flatten"),
    "timm.models.convnext.ConvNeXt": ("ConvNeXt", "head.drop"),
    "timm.models.regnet.RegNet": ("RegNet", "head.drop"),
    "timm.models.byobnet.ByobNet": ("ByobNet (RepVGG, GerNet, ...)", "head.drop"),
    "timm.models.maxxvit.MaxxVit": ("MaxViT / CoAtNet", "head.drop"),
    "timm.models.nfnet.NormFreeNet": ("NFNet", "head.drop"),
}

#: ``features_only`` wrappers whose output is a list of maps: the site is the last map (BDHW)
LIST_FEATURE_NETS = {
    "timm.models._features.FeatureListNet",
    "timm.models.efficientnet.EfficientNetFeatures",
    "timm.models.mobilenetv3.MobileNetV3Features",
}
#: every ``features_only`` wrapper
FEATURE_NETS = {
    "timm.models._features.FeatureListNet",
    "timm.models._features.FeatureDictNet",
    "timm.models._features.FeatureHookNet",
    "timm.models._features.FeatureGetterNet",
    "timm.models.efficientnet.EfficientNetFeatures",
    "timm.models.mobilenetv3.MobileNetV3Features",
}

_SUFFIXES = ("_encoder", "_tower", "_backbone", "_trunk", "_net", "_model", "_enc")
_PREFIXES = ("encoder_", "tower_", "backbone_")


def class_path(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def is_timm_model(module: Any) -> bool:
    """A whole timm model (a tower), not one of timm's layers or blocks."""
    path = class_path(module)
    if not path.startswith("timm.models."):
        return False
    if path in FAMILIES or path in FEATURE_NETS:
        return True
    return callable(getattr(module, "forward_head", None)) and callable(
        getattr(module, "forward_features", None)
    )


def supported_text() -> str:
    """The supported families, for ``pgm adapters`` and error messages."""
    return ", ".join(dict.fromkeys(label for label, _ in FAMILIES.values()))


def modality_name(path: str) -> str:
    """``image_encoder`` -> ``image``, ``towers.audio`` -> ``audio``, ``""`` -> ``image``."""
    if not path:
        return "image"
    name = path.rsplit(".", 1)[-1]
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    if not name.isidentifier():
        name = "m_" + name if ("m_" + name).isidentifier() else path.replace(".", "_")
    return name


@dataclass(frozen=True)
class Tower:
    """A timm tower found in a model."""

    path: str  #: dotted module path of the tower ("" when the model is the tower)
    modality: str
    class_path: str
    family: str | None  #: family label, None when unsupported
    site: Site | None  #: the pre-logits site (path relative to the model), None when refused
    problem: str | None = None  #: why no site, when there is none

    def describe(self) -> str:
        where = self.path or "(the model itself)"
        what = self.family or "unsupported"
        site = self.site.layer if self.site is not None else self.problem
        return f"{where}: {self.class_path.rsplit('.', 1)[-1]} [{what}] -> {site}"


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Every timm tower under ``module``, not descending into a tower."""
    if is_timm_model(module):
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _feature_site(tower: nn.Module, path: str) -> Site | None:
    """The last feature map of a list-returning ``features_only`` tower, channels first."""
    if class_path(tower) not in LIST_FEATURE_NETS:
        return None
    info = getattr(tower, "feature_info", None)
    try:
        channels = int(info.channels()[-1]) if info is not None else None
        fmt = getattr(tower, "output_fmt", "NCHW")
    except (AttributeError, IndexError, TypeError):
        return None
    if channels is None or str(fmt) not in ("NCHW", "Format.NCHW"):
        return None
    return Site(path, index=-1, layout="BDHW", dim=channels)


def _feature_problem(tower: nn.Module, path: str) -> str:
    info = getattr(tower, "feature_info", None)
    last = None
    try:
        last = info.module_name()[-1] if info is not None else None
    except (AttributeError, IndexError, TypeError):
        last = None
    where = f"its last map (from {_join(path, str(last))!r})" if last else "its maps"
    return (
        f"features_only tower {type(tower).__name__}: {where} is [B, C, H, W] and PgM sites take "
        "[B, d], [B, T, d] or a list of [B, C, H, W] maps; build the tower without "
        "features_only (or with the default list output) and call forward or forward_features "
        "+ forward_head, or give sites= a layer of yours after the pooling"
    )


def _site_for(tower: nn.Module, path: str) -> tuple[str | None, Site | None, str | None]:
    cpath = class_path(tower)
    if cpath in FEATURE_NETS:
        site = _feature_site(tower, path)
        if site is not None:
            return "features_only", site, None
        return "features_only", None, _feature_problem(tower, path)
    if cpath not in FAMILIES:
        return None, None, f"unsupported timm family {cpath}"
    label, inner = FAMILIES[cpath]
    obj: Any = tower
    for part in inner.split("."):
        obj = getattr(obj, part, None)
        if not isinstance(obj, nn.Module):
            return label, None, f"this {type(tower).__name__} has no {inner!r} module"
    width = getattr(tower, "head_hidden_size", None) or getattr(tower, "num_features", None)
    dim = width if isinstance(width, int) else None
    return label, Site(_join(path, inner), layout="BD", dim=dim), None


def find_towers(model: nn.Module, names: Mapping[str, str] | None = None) -> list[Tower]:
    """Every timm tower in ``model`` (the model itself when it is one), outermost first.

    ``names`` maps a tower's path (or its attribute name) to the modality name to use; by
    default the attribute name without ``_encoder`` / ``_tower`` / ... (``image_encoder`` ->
    ``image``).
    """
    names = dict(names or {})
    found = list(_walk(model))
    known = {p for p, _ in found} | {p.rsplit(".", 1)[-1] for p, _ in found if p}
    unknown = [k for k in names if k not in known]
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(known), n=3, cutoff=0.4)
        raise InjectionError(
            f"names= gives {unknown} but the timm towers of {type(model).__name__} are at "
            f"{sorted(p or '(the model)' for p, _ in found) or 'no path (none found)'}"
            + (f"; near: {near}" if near else "")
            + "."
        )
    towers: list[Tower] = []
    for path, tower in found:
        modality = names.get(path) or names.get(path.rsplit(".", 1)[-1]) or modality_name(path)
        if not modality.isidentifier():
            raise InjectionError(
                f"modality name {modality!r} for the tower at {path!r} must be a Python identifier."
            )
        family, site, problem = _site_for(tower, path)
        towers.append(Tower(path, modality, class_path(tower), family, site, problem))
    return towers


def tower_sites(model: nn.Module, names: Mapping[str, str] | None = None) -> dict[str, Site]:
    """``{modality: Site}`` at every timm tower's pooled pre-logits features in ``model``.

    Raises ``InjectionError`` (the model untouched) naming every tower that cannot be used and
    the supported families.
    """
    towers = find_towers(model, names)
    if not towers:
        raise InjectionError(
            f"{type(model).__name__} holds no timm model among its modules; pgm-timm recognises "
            f"timm towers of these families: {supported_text()}."
        )
    problems = [t for t in towers if t.site is None]
    if problems:
        raise InjectionError(
            f"{len(problems)} of {len(towers)} timm towers in {type(model).__name__} cannot be "
            "used:\n  "
            + "\n  ".join(f"{t.path or '(the model)'}: {t.problem}" for t in problems)
            + f"\nSupported timm families: {supported_text()}. Pass sites={{modality: layer}} "
            "by hand for the others (pgm_plugins.list_layers(model) lists the layers)."
        )
    sites: dict[str, Site] = {}
    for t in towers:
        if t.modality in sites:
            raise InjectionError(
                f"two timm towers would both be modality {t.modality!r} ("
                f"{[u.path for u in towers if u.modality == t.modality]}); name them with "
                "names={path: modality}."
            )
        assert t.site is not None
        sites[t.modality] = t.site
    return sites


def holds_timm_tower(model: Any) -> bool:
    """The ``timm.towers`` adapter's predicate: a timm model, or a model with a timm tower among
    its modules. Models of zoos with adapters of their own (open_clip with a timm trunk,
    transformers) are left to those adapters."""
    if not isinstance(model, nn.Module):
        return False
    top = type(model).__module__
    if top.startswith(("open_clip.", "transformers.")):
        return False
    return next(_walk(model), None) is not None
