"""Where mmf's fusion models keep each modality, and how to recognise them without mmf.

Recognition compares class module/name strings along the model's MRO, so neither matching nor
registration imports mmf (or applies the shims), and subclasses (such as this plugin's
``<name>_pgm`` variants) are recognised too. Sites are at each modality's encoder output,
before the model fuses them:

- ``concat_bow``, ``concat_bert``, ``late_fusion`` (``FusionBase``): ``base.text`` (for a BERT
  encoder its ``pooler_output``, the only part mmf uses) and ``base.modal``;
- ``unimodal_text`` / ``unimodal_image``: ``base.encoder`` (one modality: the block's paired
  learner has no partner, so only its uni-modal path and decoder act);
- ``mmbt``: the image tokens from ``model.bert.mmbt.modal_encoder`` and the text embeddings from
  ``model.bert.mmbt.transformer.embeddings``, just before MMBT concatenates them into one
  sequence for its transformer.

Widths come from the model (encoder configs and mmf's ``*_hidden_size`` fields), so no dry run
is needed. The layout is fixed too, except for an ``ImageEncoder`` of type ``default`` on raw
inputs (an ``nn.Identity``: ``[B, d]`` or ``[B, N, d]`` depending on the data), where the engine
reads it at the first forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pgm_plugins import Adapter, Site

__all__ = ["FAMILIES", "Family", "adapters", "family_of", "recognise"]


@dataclass(frozen=True)
class Family:
    """One mmf model class: its registry name, class path and site rule."""

    model: str  # mmf registry name
    cls: str  # "module.QualName" of the mmf class
    sites: Callable[[nn.Module], dict[str, Site]]
    description: str

    @property
    def adapter(self) -> str:
        return f"mmf.{self.model}"


def _cfg(model: nn.Module, key: str, default: Any = None) -> Any:
    config = getattr(model, "config", None)
    try:
        return config.get(key, default) if config is not None else default
    except (AttributeError, KeyError):  # not a mapping, or an OmegaConf node refusing the key
        return default


def _is_transformer(encoder: nn.Module) -> bool:
    config = getattr(encoder, "config", None)
    return hasattr(config, "hidden_size") and hasattr(encoder, "embeddings")


def _text_site(model: nn.Module, layer: str, encoder: nn.Module) -> Site:
    if _is_transformer(encoder):
        # a Hugging Face encoder returns (sequence, pooled); mmf keeps only the pooled vector
        return Site(layer, index="pooler_output", layout="BD", dim=encoder.config.hidden_size)
    return Site(layer, layout="BD", dim=_cfg(model, "text_hidden_size"))


def _modal_site(model: nn.Module, layer: str, encoder: nn.Module, pooled: bool) -> Site:
    kind = type(encoder).__name__
    dim = getattr(encoder, "out_dim", None) or _cfg(model, "modal_hidden_size")
    if kind == "ResNet152ImageEncoder":
        return Site(layer, layout="BTD", dim=dim)  # [B, regions, 2048]
    if _cfg(model, "direct_features_input", False):
        # region features [B, N, d] through Identity / a projection; unimodal_image averages
        # the regions before its encoder
        return Site(layer, layout="BD" if pooled else "BTD", dim=dim)
    return Site(layer, dim=dim)  # nn.Identity on raw inputs: the layout is read at run time


def _fusion_sites(model: nn.Module) -> dict[str, Site]:
    base: Any = model.base
    return {
        "text": _text_site(model, "base.text", base.text),
        "image": _modal_site(model, "base.modal", base.modal, pooled=False),
    }


def _unimodal_text_sites(model: nn.Module) -> dict[str, Site]:
    return {"text": _text_site(model, "base.encoder", model.base.encoder)}  # type: ignore[arg-type]


def _unimodal_image_sites(model: nn.Module) -> dict[str, Site]:
    encoder: Any = model.base.encoder
    return {"image": _modal_site(model, "base.encoder", encoder, pooled=True)}


def _mmbt_sites(model: nn.Module) -> dict[str, Site]:
    mmbt: Any = model.model.bert.mmbt  # type: ignore[union-attr]
    hidden = mmbt.transformer.config.hidden_size
    prefix = "model.bert.mmbt"
    return {
        "image": Site(f"{prefix}.modal_encoder", layout="BTD", dim=hidden),
        "text": Site(f"{prefix}.transformer.embeddings", layout="BTD", dim=hidden),
    }


FAMILIES: tuple[Family, ...] = (
    Family(
        "concat_bow",
        "mmf.models.fusions.ConcatBoW",
        _fusion_sites,
        "mmf ConcatBoW: bag-of-words text and image encoder outputs, before concatenation",
    ),
    Family(
        "concat_bert",
        "mmf.models.fusions.ConcatBERT",
        _fusion_sites,
        "mmf ConcatBERT: BERT pooled text and image encoder outputs, before concatenation",
    ),
    Family(
        "late_fusion",
        "mmf.models.fusions.LateFusion",
        _fusion_sites,
        "mmf LateFusion: BERT pooled text and image encoder outputs, before the two heads",
    ),
    Family(
        "unimodal_text",
        "mmf.models.unimodal.UnimodalText",
        _unimodal_text_sites,
        "mmf UnimodalText: the text encoder output (one modality)",
    ),
    Family(
        "unimodal_image",
        "mmf.models.unimodal.UnimodalModal",
        _unimodal_image_sites,
        "mmf UnimodalModal (unimodal_image): the image encoder output (one modality)",
    ),
    Family(
        "mmbt",
        "mmf.models.mmbt.MMBT",
        _mmbt_sites,
        "mmf MMBT: image tokens and text embeddings, before the joint transformer",
    ),
)
_BY_CLASS = {f.cls: f for f in FAMILIES}


def family_of(model: Any) -> Family | None:
    """The family of ``model`` (or of its nearest mmf base class), by class name; no import."""
    for klass in type(model).__mro__:
        family = _BY_CLASS.get(f"{klass.__module__}.{klass.__qualname__}")
        if family is not None:
            return family
    return None


def recognise(model: Any) -> str | None:
    """The adapter name for an mmf model, or None."""
    family = family_of(model)
    return family.adapter if family is not None else None


def _matches(model_name: str) -> Callable[[nn.Module], bool]:
    def matches(model: nn.Module) -> bool:
        family = family_of(model)
        return family is not None and family.model == model_name

    return matches


def adapters() -> list[Adapter]:
    """One ``Adapter`` per family (task ``none`` by default: pass ``task``/``num_classes``)."""
    return [
        Adapter(
            f.adapter,
            sites=f.sites,
            config={"task": "none"},
            matches=_matches(f.model),
            description=f.description,
            allow_single=f.model.startswith("unimodal_"),  # one modality on purpose
        )
        for f in FAMILIES
    ]
