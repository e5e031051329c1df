"""The PgM-style block, pure torch. Design: ``docs/design.md`` (arXiv 2507.11661)."""

from pgm_plugins.block.config import PgMConfig
from pgm_plugins.block.optim import GradientScale, scale_grad
from pgm_plugins.block.pgm import ModalParts, PgMBlock, PgMOutput

__all__ = ["GradientScale", "ModalParts", "PgMBlock", "PgMConfig", "PgMOutput", "scale_grad"]
