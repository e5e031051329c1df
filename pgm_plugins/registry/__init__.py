"""Plugins on pluggy: hookspecs (the plugin author's manual), loading, and the public lookups."""

from pgm_plugins.registry.hookspecs import hookimpl
from pgm_plugins.registry.manager import (
    PluginRegistry,
    get_registry,
    reset_registry,
    use_registry,
)

__all__ = ["PluginRegistry", "get_registry", "hookimpl", "reset_registry", "use_registry"]
