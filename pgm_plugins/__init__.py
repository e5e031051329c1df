"""pgm-plugins: PgM-style blocks (arXiv 2507.11661) injected into other people's multimodal models.

PgM-style block, reconstructed from the paper's description. Importing this package is cheap: torch,
pluggy and every model zoo are imported only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pgm_plugins._version import __version__

if TYPE_CHECKING:
    from pgm_plugins.api import (
        apply_zoo_patch,
        get_adapter,
        inject,
        list_adapters,
        list_arms,
        list_bench_hosts,
        list_datasets,
        list_models,
        list_zoo_patches,
        load,
        match_adapter,
        plan,
    )
    from pgm_plugins.api import (
        list_hosts as list_hosts,  # deprecated: list_models
    )
    from pgm_plugins.block import PgMBlock, PgMConfig, PgMOutput, scale_grad
    from pgm_plugins.injection import (
        Adapter,
        InputMask,
        Junction,
        PgMHandle,
        Site,
        TokenFrom,
        handle_of,
        list_layers,
        save,
    )
    from pgm_plugins.registry import hookimpl

_LAZY = {
    "PgMBlock": "pgm_plugins.block",
    "PgMConfig": "pgm_plugins.block",
    "PgMOutput": "pgm_plugins.block",
    "scale_grad": "pgm_plugins.block",
    "Adapter": "pgm_plugins.injection",
    "Junction": "pgm_plugins.injection",
    "InputMask": "pgm_plugins.injection",
    "PgMHandle": "pgm_plugins.injection",
    "Site": "pgm_plugins.injection",
    "TokenFrom": "pgm_plugins.injection",
    "list_layers": "pgm_plugins.injection",
    "handle_of": "pgm_plugins.injection",
    "save": "pgm_plugins.injection",
    "inject": "pgm_plugins.api",
    "plan": "pgm_plugins.api",
    "load": "pgm_plugins.api",
    "list_adapters": "pgm_plugins.api",
    "get_adapter": "pgm_plugins.api",
    "match_adapter": "pgm_plugins.api",
    "apply_zoo_patch": "pgm_plugins.api",
    "list_zoo_patches": "pgm_plugins.api",
    "list_models": "pgm_plugins.api",
    "list_bench_hosts": "pgm_plugins.api",
    "list_arms": "pgm_plugins.api",
    "list_datasets": "pgm_plugins.api",
    "list_hosts": "pgm_plugins.api",  # deprecated: list_models (warns when called)
    "hookimpl": "pgm_plugins.registry",
}

__all__ = [
    "Adapter",
    "InputMask",
    "Junction",
    "PgMBlock",
    "PgMConfig",
    "PgMHandle",
    "PgMOutput",
    "Site",
    "TokenFrom",
    "__version__",
    "apply_zoo_patch",
    "get_adapter",
    "handle_of",
    "hookimpl",
    "inject",
    "list_adapters",
    "list_arms",
    "list_bench_hosts",
    "list_datasets",
    "list_layers",
    "list_models",
    "list_zoo_patches",
    "load",
    "match_adapter",
    "plan",
    "save",
    "scale_grad",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgm_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
