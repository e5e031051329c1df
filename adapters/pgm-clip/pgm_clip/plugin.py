"""The pgm-clip plugin: registers the CLIP adapters, recognises CLIP-style models, tiny hosts.

Registration is cheap: nothing here imports transformers or open_clip; the host factories import
their zoo when called.
"""

from __future__ import annotations

from typing import Any

from pgm_clip import families, hosts
from pgm_plugins import hookimpl


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    for adapter in families.adapters():
        register(adapter)


@hookimpl
def pgm_explain_unmatched(model: Any) -> str | None:
    """Supported families are matched by their adapters' predicates; for a CLIP-style model of
    transformers or open_clip that none supports, the error names the supported ones."""
    if families.family_of(model) is None and families.is_clip_like(model):
        return str(families.unsupported_error(model))
    return None


@hookimpl
def pgm_register_models(register: Any) -> None:
    # with example inputs, so the core suite's registered-host checks run on them too
    register(
        "hf.clip_tiny",
        hosts.hf_clip,
        "tiny random HF CLIPModel",
        adapter="hf.clip",
        example=hosts.hf_example,
    )
    register(
        "hf.siglip_tiny",
        hosts.hf_siglip,
        "tiny random HF SiglipModel",
        adapter="hf.siglip",
        example=hosts.hf_example,
    )
    register(
        "open_clip.clip_tiny",
        hosts.open_clip_clip,
        "tiny random open_clip CLIP",
        adapter="open_clip.clip",
        example=hosts.open_clip_example,
    )
    register(
        "open_clip.custom_text_tiny",
        hosts.open_clip_custom_text,
        "tiny random open_clip CustomTextCLIP",
        adapter="open_clip.custom_text_clip",
        example=hosts.open_clip_example,
    )
