"""pgm-clip: pgm-plugins adapters for CLIP-style dual encoders.

Hugging Face ``CLIPModel`` and ``SiglipModel``, open_clip ``CLIP`` and ``CustomTextCLIP``: one
site at each image and text embedding, **independent mode** (each call embeds one modality, so
``get_image_features`` / ``encode_image`` alone work after injection), the weight-shared paired
learner and no class labels (``task="none"``). See ``pgm_clip.families`` for the sites.
"""

from __future__ import annotations

from pgm_clip.families import FAMILIES, class_path, supported_text

__version__ = "0.1.0"
__all__ = ["FAMILIES", "__version__", "class_path", "supported_text"]
