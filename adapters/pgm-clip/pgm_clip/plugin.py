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
def pgm_match_adapter(model: Any) -> str | None:
    """Supported families are matched by their adapters' predicates; a CLIP-style model of
    transformers or open_clip that none supports gets an error naming the supported ones."""
    if families.family_of(model) is None and families.is_clip_like(model):
        raise families.unsupported_error(model)
    return None


@hookimpl
def pgm_register_hosts(register: Any) -> None:
    # No ``example=``: these hosts return model-output objects / tuples, which the core suite's
    # registered-host checks do not compare; pgm-clip's own tests run the shared checks on them.
    register("hf.clip_tiny", hosts.hf_clip, "tiny random HF CLIPModel", adapter="hf.clip")
    register("hf.siglip_tiny", hosts.hf_siglip, "tiny random HF SiglipModel", adapter="hf.siglip")
    register(
        "open_clip.clip_tiny",
        hosts.open_clip_clip,
        "tiny random open_clip CLIP",
        adapter="open_clip.clip",
    )
    register(
        "open_clip.custom_text_tiny",
        hosts.open_clip_custom_text,
        "tiny random open_clip CustomTextCLIP",
        adapter="open_clip.custom_text_clip",
    )
