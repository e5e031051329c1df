"""Which CLIP-style models pgm-clip supports, how it recognises them, and where their sites are.

Recognition compares class paths (``module.QualName``) as strings, so matching a model never
imports transformers or open_clip. Sites are read off the instance (widths from its config
attributes), so ``inject(model)`` needs neither site names nor example inputs.

| family | image site | text site |
| --- | --- | --- |
| HF ``CLIPModel`` | ``visual_projection`` (Linear) | ``text_projection`` (Linear) |
| HF ``SiglipModel`` | ``vision_model.head`` (attention pooling) | ``text_model.head`` (Linear) |
| open_clip ``CLIP`` | output of ``visual`` | ``ln_final``, every token (see below) |
| open_clip ``CustomTextCLIP`` | output of ``visual`` | output of ``text`` |

open_clip's ``CLIP`` keeps its text projection as a bare parameter and pools the end-of-text token
with a plain function, so the last module of its text path is ``ln_final``, whose output holds
every position ``[B, L, width]``. The block runs on every position there (layout ``BTD``); only
the end-of-text position reaches the embedding, and the block's pooled codes (alignment loss,
statistics) average over all positions, padding included. Selecting the end-of-text position at
the site needs an engine feature (a site that picks one token per sample by the argmax of the
model's input ids), which pgm_plugins does not have yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgm_plugins import Adapter, Site, TokenFrom
from pgm_plugins.errors import InjectionError

__all__ = [
    "ADAPTER_CONFIG",
    "FAMILIES",
    "Family",
    "adapters",
    "class_path",
    "is_clip_like",
    "supported_text",
]

#: block defaults for every CLIP adapter: independent mode needs the weight-shared paired
#: learner, and contrastive training has no class labels
ADAPTER_CONFIG: dict[str, Any] = {"paired": "shared", "task": "none"}


def class_path(model: Any) -> str:
    """``module.QualName`` of the model's class (no zoo import)."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _require(model: Any, path: str, family: str) -> Any:
    obj = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise InjectionError(
                f"{family}: this {type(model).__name__} has no {path!r} (its config leaves the "
                f"layer out?); pass sites={{'image': ..., 'text': ...}} by hand "
                "(pgm_plugins.list_layers(model) lists the layers)."
            )
        obj = getattr(obj, part)
    if obj is None:
        raise InjectionError(
            f"{family}: {path!r} of this {type(model).__name__} is None; pass sites= by hand."
        )
    return obj


def _hf_clip_sites(model: Any) -> dict[str, Site]:
    _require(model, "visual_projection", "hf.clip")
    _require(model, "text_projection", "hf.clip")
    return {"image": Site("visual_projection", layout="BD"), "text": Site("text_projection")}


def _hf_siglip_sites(model: Any) -> dict[str, Site]:
    _require(model, "vision_model.head", "hf.siglip")
    _require(model, "text_model.head", "hf.siglip")
    width = int(model.config.vision_config.hidden_size)
    return {
        "image": Site("vision_model.head", layout="BD", dim=width),
        "text": Site("text_model.head", layout="BD"),
    }


def _tower_site(tower: Any, layer: str, family: str) -> Site:
    """A tower whose output is the embedding (or ``(embedding, tokens)`` with output_tokens)."""
    dim = getattr(tower, "output_dim", None)
    if not isinstance(dim, int):
        raise InjectionError(
            f"{family}: {layer!r} ({type(tower).__name__}) states no output_dim; pass "
            f"sites={{..., Site({layer!r}, dim=N)}} by hand."
        )
    index = 0 if getattr(tower, "output_tokens", False) else None
    return Site(layer, index=index, layout="BD", dim=dim)


def _open_clip_sites(model: Any) -> dict[str, Site]:
    visual = _require(model, "visual", "open_clip.clip")
    _require(model, "ln_final", "open_clip.clip")
    return {
        "image": _tower_site(visual, "visual", "open_clip.clip"),
        # the end-of-text position of each sample, as encode_text pools it
        "text": Site("ln_final", layout="BTD", token=TokenFrom("token_embedding")),
    }


def _open_clip_custom_sites(model: Any) -> dict[str, Site]:
    visual = _require(model, "visual", "open_clip.custom_text_clip")
    text = _require(model, "text", "open_clip.custom_text_clip")
    return {
        "image": _tower_site(visual, "visual", "open_clip.custom_text_clip"),
        "text": _tower_site(text, "text", "open_clip.custom_text_clip"),
    }


@dataclass(frozen=True)
class Family:
    """One supported model class: its adapter name, class path, sites and a line of help."""

    adapter: str
    class_path: str
    label: str
    sites: Callable[[Any], dict[str, Site]]
    description: str
    text_note: str = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        "hf.clip",
        "transformers.models.clip.modeling_clip.CLIPModel",
        "Hugging Face CLIPModel",
        _hf_clip_sites,
        "Hugging Face CLIPModel: visual_projection / text_projection outputs",
    ),
    Family(
        "hf.siglip",
        "transformers.models.siglip.modeling_siglip.SiglipModel",
        "Hugging Face SiglipModel",
        _hf_siglip_sites,
        "Hugging Face SiglipModel: vision_model.head / text_model.head outputs",
    ),
    Family(
        "open_clip.clip",
        "open_clip.model.CLIP",
        "open_clip CLIP",
        _open_clip_sites,
        "open_clip CLIP: visual output / ln_final at each sample's end-of-text token",
    ),
    Family(
        "open_clip.custom_text_clip",
        "open_clip.model.CustomTextCLIP",
        "open_clip CustomTextCLIP",
        _open_clip_custom_sites,
        "open_clip CustomTextCLIP: visual / text tower outputs",
    ),
)
_BY_PATH = {f.class_path: f for f in FAMILIES}


def family_of(model: Any) -> Family | None:
    """The supported family of ``model``, or None."""
    return _BY_PATH.get(class_path(model))


def supported_text() -> str:
    """One line naming every supported family and its adapter."""
    return "; ".join(f"{f.label} ({f.adapter!r})" for f in FAMILIES)


def is_clip_like(model: Any) -> bool:
    """True for a top-level CLIP-style model of transformers or open_clip, supported or not.

    Top-level: an open_clip model class (``open_clip.model`` / ``open_clip.coca_model``) or a
    transformers class in a CLIP-family package whose name ends in ``Model`` (``CLIPModel``,
    ``CLIPVisionModel``, ``Siglip2Model``, ``XCLIPModel``, ...); its sub-layers are not.
    """
    cls = type(model)
    module, name = cls.__module__, cls.__qualname__
    if module in ("open_clip.model", "open_clip.coca_model"):
        return name.endswith("CLIP") or name == "CoCa"
    if module.startswith("transformers.models."):
        package = module.split(".")[2]
        return ("clip" in package or "siglip" in package) and name.endswith("Model")
    return False


def _matcher(path: str) -> Callable[[Any], bool]:
    def matches(model: Any) -> bool:
        return class_path(model) == path

    matches.__name__ = f"matches_{path.rsplit('.', 1)[-1]}"
    return matches


def adapters() -> list[Adapter]:
    """One independent-mode adapter per supported family."""
    return [
        Adapter(
            f.adapter,
            sites=f.sites,
            mode="independent",
            config=dict(ADAPTER_CONFIG),
            matches=_matcher(f.class_path),
            description=f.description,
        )
        for f in FAMILIES
    ]


def unsupported_error(model: Any) -> InjectionError:
    """The error for a CLIP-style model no adapter supports, naming the supported families."""
    return InjectionError(
        f"{class_path(model)} is a CLIP-style model that pgm-clip does not support; supported: "
        f"{supported_text()}. Pass sites={{'image': ..., 'text': ...}} with mode='independent' "
        "and config={'paired': 'shared', 'task': 'none'} to inject it by hand "
        "(pgm_plugins.list_layers(model) lists its layers)."
    )
