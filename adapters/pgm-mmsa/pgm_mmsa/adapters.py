"""Adapters for MMSA's MulT, MISA, Self-MM, TFN, LMF and MMIM, and how models are recognised.

Nothing here imports MMSA (``import MMSA`` takes seconds and every ``pgm_plugins.inject(model)``
without an adapter asks every plugin): a model is recognised by the ``__module__`` and
``__name__`` of the classes in its MRO. Site paths are computed from the model, so one adapter
serves a model wrapped in MMSA's ``AMIO`` (layers under ``Model.``) and a bare one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import nn

from pgm_plugins import Adapter, InputMask, Site
from pgm_plugins.errors import InjectionError

__all__ = [
    "ADAPTERS",
    "BLOCK_DEFAULTS",
    "KINDS",
    "SMALL_BLOCK",
    "UnsupportedModelError",
    "adapters",
    "host_kind",
    "match",
    "mmsa_class",
]

#: MMSA class name -> our kind (lower case, MMSA's own model names)
KINDS = {
    "MULT": "mult",
    "MISA": "misa",
    "SELF_MM": "self_mm",
    "TFN": "tfn",
    "LMF": "lmf",
    "MMIM": "mmim",
}
MODALITIES = ("text", "audio", "vision")
#: the block defaults every MMSA adapter starts from: the hosts run as regression on +-1 (see
#: README); the block's widths are left to PgMConfig, which sizes them to each site
BLOCK_DEFAULTS: dict[str, Any] = {"task": "regression"}
#: a smaller block (fixed narrow learners) for hosts whose step is too short to hide the
#: default block's per-operation cost (benchmarks/step_time.py measures both)
SMALL_BLOCK: dict[str, Any] = {
    "task": "regression",
    "uni_width": 16,
    "paired_width": 16,
    "decoder_width": 32,
    "heads": 2,
}


class UnsupportedModelError(InjectionError):
    """An MMSA model of a kind this plugin has no adapter for."""


def mmsa_class(obj: Any) -> type | None:
    """The first class in ``type(obj).__mro__`` that MMSA defines under ``MMSA.models``."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("MMSA.models"):
            return cls
    return None


def _inner(model: nn.Module) -> tuple[nn.Module, str]:
    """The MMSA network and its path prefix: ``AMIO`` keeps it as ``.Model``."""
    cls = mmsa_class(model)
    if cls is not None and cls.__name__ == "AMIO":
        inner = getattr(model, "Model", None)
        if isinstance(inner, nn.Module):
            return inner, "Model."
    return model, ""


def host_kind(model: Any) -> str | None:
    """``"mult"``, ..., for a supported MMSA model (bare or in ``AMIO``); None for a model that
    is not from MMSA; raises :class:`UnsupportedModelError` for an MMSA model of another kind."""
    if not isinstance(model, nn.Module) or mmsa_class(model) is None:
        return None
    inner, _ = _inner(model)
    cls = mmsa_class(inner)
    name = cls.__name__ if cls is not None else type(inner).__name__
    if name in KINDS:
        return KINDS[name]
    kinds = list(KINDS.values())
    raise UnsupportedModelError(
        f"pgm-mmsa has no adapter for the MMSA model {name} ({type(model).__name__}); supported "
        f"kinds: {', '.join(kinds)} (adapters {', '.join('mmsa.' + k for k in kinds)}). "
        "Give the sites yourself: pgm_plugins.inject(model, sites={...}) after "
        "pgm_plugins.list_layers(model)."
    )


def match(model: Any) -> str | None:
    kind = host_kind(model)
    return None if kind is None else f"mmsa.{kind}"


# ---------------------------------------------------------------------- sites per host
def _net(model: nn.Module, kind: str) -> tuple[nn.Module, str]:
    inner, prefix = _inner(model)
    cls = mmsa_class(inner)
    if cls is None or KINDS.get(cls.__name__) != kind:
        hint = "Run `pgm adapters mmsa.*` for the MMSA adapters."
        if cls is not None and cls.__name__ in KINDS:
            hint = (
                f"It is mmsa.{KINDS[cls.__name__]}: use that adapter, or inject without an "
                "adapter name to let it be recognised."
            )
        raise InjectionError(
            f"adapter 'mmsa.{kind}' expects an MMSA {kind.upper()} model (bare or in AMIO); got "
            f"{type(inner).__name__}. {hint}"
        )
    return inner, prefix


def _mult(model: nn.Module) -> dict[str, Site]:
    net, p = _net(model, "mult")
    skipped = [
        f"proj_{c} ({m}: input width {getattr(net, 'orig_d_' + c)} == d {getattr(net, 'd_' + c)})"
        for c, m in zip("lav", MODALITIES, strict=True)
        if getattr(net, f"orig_d_{c}") == getattr(net, f"d_{c}")
    ]
    if skipped:
        raise InjectionError(
            "MulT skips its projection convolution when a modality's input width equals its "
            f"model width d, so these sites never run: {', '.join(skipped)}. Use the adapter "
            "'mmsa.mult.mem' (the trans_*_mem outputs) or change dst_feature_dim_nheads."
        )
    return {m: Site(f"{p}proj_{c}", layout="BDT") for c, m in zip("lav", MODALITIES, strict=True)}


def _mult_mem(model: nn.Module) -> dict[str, Site]:
    net, p = _net(model, "mult")
    return {
        m: Site(f"{p}trans_{c}_mem", layout="TBD", dim=2 * getattr(net, f"d_{c}"))
        for c, m in zip("lav", MODALITIES, strict=True)
    }


def _misa(model: nn.Module) -> dict[str, Site]:
    _, p = _net(model, "misa")
    return {m: Site(f"{p}project_{c}") for c, m in zip("tav", MODALITIES, strict=True)}


def _misa_private(model: nn.Module) -> dict[str, Site]:
    _, p = _net(model, "misa")
    return {m: Site(f"{p}private_{c}") for c, m in zip("tav", MODALITIES, strict=True)}


def _text_width(net: nn.Module, layer: str, prefix: str = "") -> int:
    """The output width of the host's text module ``layer``.

    Two modules are known: :class:`pgm_mmsa.DenseText` (its ``out_features``) and MMSA's own
    ``BertTextEncoder``, whose Hugging Face model (``.model``, BERT or RoBERTa) gives its
    ``config.hidden_size``: 768 for ``bert-base-uncased``, 384 for MiniLM, whatever a local
    BERT was built with.
    """
    module = getattr(net, layer)
    width = getattr(module, "out_features", None)
    if width is None:
        config = getattr(getattr(module, "model", None), "config", None)
        width = getattr(config, "hidden_size", None)
    if not isinstance(width, int):
        raise InjectionError(
            f"the text module {layer!r} of this {type(net).__name__} is "
            f"{type(module).__name__}; pgm-mmsa reads the width of MMSA's BertTextEncoder (its "
            "model's config.hidden_size) and of pgm_mmsa.DenseText (out_features) only. Give "
            "the sites yourself: pgm_plugins.inject(model, sites={'text': "
            f"Site({prefix + layer!r}, dim=<width>), ...}}), with the layer paths of "
            "pgm_plugins.list_layers(model)."
        )
    return int(width)


#: MMSA's BERT input ``[B, 3, L]`` (and DenseText's ``[B, 3 + D, L]``) is the forward's first
#: argument, with the attention mask in row 1
TEXT_MASK = InputMask(arg=0, row=1)


def _text_site(net: nn.Module, layer: str, p: str, cls: bool) -> Site:
    width = _text_width(net, layer, p)
    if cls:  # the one position the host reads
        return Site(f"{p}{layer}", layout="BTD", dim=width, token=0)
    return Site(f"{p}{layer}", layout="BTD", dim=width, mask=TEXT_MASK)


def _self_mm(model: nn.Module, cls: bool = False) -> dict[str, Site]:
    net, p = _net(model, "self_mm")
    return {
        "text": _text_site(net, "text_model", p, cls),
        "audio": Site(f"{p}audio_model", layout="BD", dim=net.audio_model.linear_1.out_features),
        "vision": Site(f"{p}video_model", layout="BD", dim=net.video_model.linear_1.out_features),
    }


def _subnets(kind: str) -> Callable[[nn.Module], dict[str, Site]]:
    def sites(model: nn.Module) -> dict[str, Site]:
        net, p = _net(model, kind)
        return {
            "text": Site(f"{p}text_subnet", layout="BD", dim=net.text_out),
            "audio": Site(f"{p}audio_subnet", layout="BD", dim=net.audio_hidden),
            "vision": Site(f"{p}video_subnet", layout="BD", dim=net.video_hidden),
        }

    return sites


def _mmim(model: nn.Module, cls: bool = False) -> dict[str, Site]:
    net, p = _net(model, "mmim")
    return {
        "text": _text_site(net, "bertmodel", p, cls),
        "audio": Site(f"{p}acoustic_enc", layout="BD", dim=net.acoustic_enc.linear_1.out_features),
        "vision": Site(f"{p}visual_enc", layout="BD", dim=net.visual_enc.linear_1.out_features),
    }


_SPECS: dict[str, tuple[Callable[[nn.Module], Mapping[str, Any]], str]] = {
    "mmsa.mult": (
        _mult,
        "MMSA MulT: the temporal projections proj_l/a/v ([B, d, T]), before the crossmodal "
        "transformers",
    ),
    "mmsa.mult.mem": (
        _mult_mem,
        "MMSA MulT: the self-attention memories trans_l/a/v_mem ([T, B, 2d]), before the "
        "last-step fusion",
    ),
    "mmsa.misa": (
        _misa,
        "MMSA MISA: project_t/v/a ([B, hidden]), before MISA's private/shared split",
    ),
    "mmsa.misa.private": (
        _misa_private,
        "MMSA MISA: the private encoders private_t/v/a ([B, hidden])",
    ),
    "mmsa.self_mm": (
        _self_mm,
        "MMSA Self-MM: text_model ([B, L, d], padding masked by the BERT input's row 1; the "
        "host reads position 0), audio_model, video_model",
    ),
    "mmsa.self_mm.cls": (
        partial(_self_mm, cls=True),
        "MMSA Self-MM: position 0 of text_model (the vector the host reads), audio_model, "
        "video_model",
    ),
    "mmsa.tfn": (_subnets("tfn"), "MMSA TFN: text/audio/video subnets ([B, h]) before fusion"),
    "mmsa.lmf": (_subnets("lmf"), "MMSA LMF: text/audio/video subnets ([B, h]) before fusion"),
    "mmsa.mmim": (
        _mmim,
        "MMSA MMIM: bertmodel ([B, L, d], padding masked by the BERT input's row 1; the host "
        "reads position 0), acoustic_enc, visual_enc",
    ),
    "mmsa.mmim.cls": (
        partial(_mmim, cls=True),
        "MMSA MMIM: position 0 of bertmodel (the vector the host reads), acoustic_enc, visual_enc",
    ),
}
ADAPTERS = tuple(_SPECS)


def adapters() -> list[Adapter]:
    """One :class:`pgm_plugins.Adapter` per name in :data:`ADAPTERS` (joint mode)."""
    return [
        Adapter(name, sites=fn, config=dict(BLOCK_DEFAULTS), description=desc)
        for name, (fn, desc) in _SPECS.items()
    ]
