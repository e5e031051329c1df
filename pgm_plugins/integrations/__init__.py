"""Training an injected model with the loops users already run: the PgM block's auxiliary loss
has to join the task loss that is backpropagated, and its parameter groups the optimizer.

- ``PgMTrainer`` (``pgm_plugins.integrations.hf``): a Hugging Face ``transformers.Trainer``
  (extra ``hf``).
- ``PgMModuleMixin`` (``pgm_plugins.integrations.lightning``): for a PyTorch Lightning
  ``LightningModule`` (extra ``lightning``).

Each name is imported on first use, so importing this package imports neither library. How the
auxiliary loss behaves under gradient accumulation is in each module's documentation and the
README's "Training with a Hugging Face Trainer or PyTorch Lightning".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgm_plugins.integrations.hf import PgMTrainer
    from pgm_plugins.integrations.lightning import PgMModuleMixin

__all__ = ["PgMModuleMixin", "PgMTrainer"]

_LAZY = {
    "PgMTrainer": "pgm_plugins.integrations.hf",
    "PgMModuleMixin": "pgm_plugins.integrations.lightning",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        from pgm_plugins.errors import choices_text, did_you_mean

        raise AttributeError(
            f"module 'pgm_plugins.integrations' has no attribute {name!r}; it has "
            f"{choices_text(_LAZY)}.{did_you_mean(name, _LAZY)}"
        )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
