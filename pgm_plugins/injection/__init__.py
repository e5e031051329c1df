"""Putting PgM blocks into models others wrote: sites, plans, the hook engine, checkpoints."""

from pgm_plugins.injection.adapter import Adapter
from pgm_plugins.injection.checkpoint import read_checkpoint, save
from pgm_plugins.injection.engine import PgMInjection
from pgm_plugins.injection.handle import PgMHandle, handle_of
from pgm_plugins.injection.layers import LayerInfo, format_layers, list_layers
from pgm_plugins.injection.plan import Plan, build_plan, host_fingerprint
from pgm_plugins.injection.site import InputMask, Junction, Site, TokenFrom

__all__ = [
    "Adapter",
    "InputMask",
    "Junction",
    "LayerInfo",
    "PgMHandle",
    "PgMInjection",
    "Plan",
    "Site",
    "TokenFrom",
    "build_plan",
    "format_layers",
    "handle_of",
    "host_fingerprint",
    "list_layers",
    "read_checkpoint",
    "save",
]
