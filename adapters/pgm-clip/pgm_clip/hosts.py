"""Tiny random CLIP-style hosts, built offline from configs (no weights anywhere), and inputs.

Each factory takes size overrides as keyword arguments and returns a model in eval mode with
random weights; ``example_batch(family)`` gives matching inputs: images and integer token ids
whose end-of-text token is the largest id of each sequence (open_clip's ``argmax`` pooling) and
is the configured ``eos_token_id`` (Hugging Face CLIP's pooling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "VOCAB",
    "example_batch",
    "hf_clip",
    "hf_example",
    "hf_siglip",
    "open_clip_clip",
    "open_clip_custom_text",
    "open_clip_example",
]

VOCAB = 64  #: vocabulary of the tiny text towers; token VOCAB-1 is the end-of-text token
CONTEXT = 8  #: text length of the tiny hosts
IMAGE = 16  #: image side of the tiny hosts


def hf_clip(
    width: int = 32, layers: int = 2, embed_dim: int = 24, channels: int = 3, **overrides: Any
) -> nn.Module:
    """A tiny Hugging Face ``CLIPModel`` (``overrides`` go to ``CLIPConfig``)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=CONTEXT,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=VOCAB - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=IMAGE,
        patch_size=8,
        num_channels=channels,
    )
    cfg = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=embed_dim,
        **overrides,
    )
    return CLIPModel(cfg).eval()


def hf_siglip(width: int = 32, layers: int = 1, **overrides: Any) -> nn.Module:
    """A tiny Hugging Face ``SiglipModel`` (``overrides`` go to ``SiglipConfig``)."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    text = SiglipTextConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=CONTEXT,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=VOCAB - 1,
    )
    vision = SiglipVisionConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=IMAGE,
        patch_size=8,
    )
    cfg = SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), **overrides)
    return SiglipModel(cfg).eval()


def _open_clip_cfgs(width: int, layers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    vision = {"width": width, "layers": layers, "patch_size": 8, "image_size": IMAGE}
    vision["head_width"] = width // 2
    text = {
        "context_length": CONTEXT,
        "vocab_size": VOCAB,
        "width": width,
        "heads": 2,
        "layers": layers,
    }
    return vision, text


def open_clip_clip(
    width: int = 32, layers: int = 2, embed_dim: int = 24, **overrides: Any
) -> nn.Module:
    """A tiny open_clip ``CLIP`` (``overrides`` go to its constructor)."""
    from open_clip.model import CLIP

    vision, text = _open_clip_cfgs(width, layers)
    return CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, **overrides).eval()


def open_clip_custom_text(
    width: int = 32, layers: int = 2, embed_dim: int = 24, **overrides: Any
) -> nn.Module:
    """A tiny open_clip ``CustomTextCLIP`` (the text tower is a module, ``model.text``)."""
    from open_clip.model import CustomTextCLIP

    vision, text = _open_clip_cfgs(width, layers)
    return CustomTextCLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, **overrides).eval()


def example_batch(batch: int = 4, seed: int = 0, channels: int = 3) -> tuple[Tensor, Tensor]:
    """``(images [B, C, 16, 16], token ids [B, 8])``: BOS, random tokens, EOS, padding."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, channels, IMAGE, IMAGE, generator=g)
    ids = torch.zeros(batch, CONTEXT, dtype=torch.long)
    for i in range(batch):
        n = 2 + (i % (CONTEXT - 3))  # content lengths differ, so padding differs
        ids[i, 0] = 1
        ids[i, 1 : n + 1] = torch.randint(2, VOCAB - 1, (n,), generator=g)
        ids[i, n + 1] = VOCAB - 1
    return images, ids


def hf_example() -> dict[str, Tensor]:
    """Keyword inputs of a Hugging Face CLIP-style forward: ``model(**hf_example())``."""
    images, ids = example_batch()
    return {"input_ids": ids, "pixel_values": images}


def open_clip_example() -> tuple[Tensor, Tensor]:
    """Positional inputs of an open_clip forward: ``model(*open_clip_example())``."""
    return example_batch()
