"""pgm-mmf: pgm-plugins adapters for mmf fusion models, an mmf registry patch, mmf's shims.

Importing this package imports neither mmf nor transformers and changes nothing in the process;
the shims (:mod:`pgm_mmf.compat`) are applied by :func:`build_model` and the registry patch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "pgm_mmf.models",
    "tiny_config": "pgm_mmf.models",
    "example_sample_list": "pgm_mmf.models",
    "MODELS": "pgm_mmf.models",
    "tiny_bert": "pgm_mmf.text_encoder",
    "handle_of": "pgm_mmf.variants",
    "recognise": "pgm_mmf.adapters",
}
__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgm_mmf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
