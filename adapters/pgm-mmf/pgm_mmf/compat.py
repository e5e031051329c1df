"""The four shims that let mmf 1.0.0rc10 (2020, written for transformers 2.3) import today.

mmf imports ``demjson`` (no longer builds), the flat module names of transformers 2.x
(``transformers.modeling_bert``, ``transformers.tokenization_auto``, ...), ``AdamW`` and
``BertLayerNorm`` (both gone from transformers), and ``torchtext.vocab`` (only for its GloVe
aliases). ``apply()`` supplies each, and only what is missing:

1. ``demjson`` -> an alias of ``demjson3`` in ``sys.modules``;
2. ``transformers.<flat name>`` -> a proxy module in ``sys.modules`` forwarding every attribute
   to ``transformers.models.*``; the proxy for ``modeling_bert`` adds ``BertLayerNorm``
   (``torch.nn.LayerNorm``, which it always was). The real transformers modules are untouched;
3. ``transformers.optimization.AdamW`` -> :class:`AdamW` below (``torch.optim.AdamW`` accepting
   the old ``correct_bias=True``): the one attribute set on a real transformers module;
4. ``torchtext`` -> a stub package whose ``vocab.pretrained_aliases`` is empty, only when no real
   torchtext is installed (mmf then refuses GloVe names with its own error).

These change ``sys.modules`` and ``transformers`` for the whole process, so they are applied
only when an mmf model is built or the registry patch is applied (:func:`import_mmf`), never
when the plugin's entry point loads or an adapter matches a model. Nothing here is undone: mmf
keeps references to what it imported. Everything added is new (no existing name is replaced),
so code that ran before keeps working; ``pgm_mmf`` tests check a Hugging Face CLIP model before
and after.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

import torch

__all__ = ["AdamW", "applied", "apply", "import_mmf"]

#: transformers 2.x flat module name -> where transformers 4/5 keeps it
FLAT_MODULES = {
    "transformers.modeling_bert": "transformers.models.bert.modeling_bert",
    "transformers.configuration_bert": "transformers.models.bert.configuration_bert",
    "transformers.tokenization_bert": "transformers.models.bert.tokenization_bert",
    "transformers.modeling_auto": "transformers.models.auto.modeling_auto",
    "transformers.configuration_auto": "transformers.models.auto.configuration_auto",
    "transformers.tokenization_auto": "transformers.models.auto.tokenization_auto",
}
STUB_MARK = "__pgm_mmf_shim__"

_lock = threading.RLock()
_applied: list[str] = []


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` under transformers 2.x's signature (``correct_bias=True``)."""

    def __init__(self, params: Any, *args: Any, correct_bias: bool = True, **kwargs: Any):
        if not correct_bias:
            raise ValueError(
                "AdamW(correct_bias=False) is not available: transformers removed its AdamW "
                "and torch.optim.AdamW always corrects the bias. Use correct_bias=True (the "
                "default) in the mmf optimizer config."
            )
        super().__init__(params, *args, **kwargs)


def _proxy(name: str, target: str, extra: dict[str, Any]) -> types.ModuleType:
    """A module named ``name`` whose attributes are ``extra``, else those of ``target``."""
    module = types.ModuleType(name, f"pgm_mmf shim: {name} -> {target}")

    def __getattr__(attr: str) -> Any:
        return getattr(importlib.import_module(target), attr)  # imported on first use

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dict__.update(extra)
    setattr(module, STUB_MARK, target)
    return module


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def applied() -> list[str]:
    """The shims applied in this process so far (empty before :func:`apply`)."""
    return list(_applied)


def apply() -> list[str]:
    """Apply the shims that are missing (idempotent, thread-safe); returns those applied now."""
    with _lock:
        done: list[str] = []
        if _missing("demjson"):
            import demjson3

            sys.modules["demjson"] = demjson3
            done.append("demjson -> demjson3")
        import transformers.optimization as optimization

        for flat, target in FLAT_MODULES.items():
            if flat in sys.modules or importlib.util.find_spec(target) is None:
                continue  # already there, or this transformers has no such module
            extra = {"BertLayerNorm": torch.nn.LayerNorm} if flat.endswith("modeling_bert") else {}
            sys.modules[flat] = _proxy(flat, target, extra)
            done.append(f"{flat} -> {target}")
        if not hasattr(optimization, "AdamW"):
            optimization.AdamW = AdamW  # type: ignore[attr-defined]
            done.append("transformers.optimization.AdamW -> torch.optim.AdamW")
        if _missing("torchtext"):
            torchtext = types.ModuleType("torchtext", "pgm_mmf shim: no torchtext installed")
            vocab = types.ModuleType("torchtext.vocab", "pgm_mmf shim: no GloVe aliases")
            vocab.pretrained_aliases = {}  # type: ignore[attr-defined]
            torchtext.vocab = vocab  # type: ignore[attr-defined]
            for m in (torchtext, vocab):
                setattr(m, STUB_MARK, "stub")
            sys.modules["torchtext"] = torchtext
            sys.modules["torchtext.vocab"] = vocab
            done.append("torchtext.vocab -> stub")
        _applied.extend(done)
        return done


def import_mmf() -> types.ModuleType:
    """Apply the shims, then import and return ``mmf`` (with its models registered)."""
    with _lock:
        apply()
        try:
            import mmf
            import mmf.models
            import mmf.utils.build
        except ImportError as exc:
            raise ImportError(
                f"mmf could not be imported ({type(exc).__name__}: {exc}). pgm-mmf needs "
                "mmf==1.0.0rc10 installed with --no-deps plus its real dependencies: run "
                "`PY=$(which python) adapters/pgm-mmf/install.sh` (see adapters/pgm-mmf/README.md)."
            ) from exc
        return mmf
