"""pgm-timm: timm towers inside a user's composite model as PgM sites, and towers by name.

``pgm_plugins.inject(model)`` finds every timm model among the composite's modules and puts one
site at each one's pooled pre-logits features (the modality named after the tower's attribute:
``image_encoder`` -> ``image``), whichever way the composite calls the tower.
``create_tower("timm:resnet18", in_chans=1)`` builds towers from timm's registry by name.
"""

from __future__ import annotations

from pgm_timm.adapter import towers_adapter
from pgm_timm.hosts import TowerFusion, create_tower
from pgm_timm.towers import FAMILIES, find_towers, supported_text, tower_sites

__version__ = "0.1.0"
__all__ = [
    "FAMILIES",
    "TowerFusion",
    "__version__",
    "create_tower",
    "find_towers",
    "supported_text",
    "tower_sites",
    "towers_adapter",
]
