"""PgM variants of mmf models: ``ConcatBoW`` -> ``ConcatBoWPgM``, built by mmf's ``build_model``.

A variant subclasses the mmf class. Its ``build()`` builds the host as mmf does, then injects a
PgM block at the family's sites (:mod:`pgm_mmf.adapters`) with the ``pgm`` mapping of the model
config as ``PgMConfig`` fields (default: classification over the model's ``num_labels``). Its
``__call__`` adds the block's auxiliary loss to mmf's ``losses`` dict under
``<dataset_type>/<dataset_name>/pgm_aux``, so mmf's own trainer optimises it.

The classes are created on first use (that imports mmf and applies the shims) and live in this
module under their names, so pickle finds them (``pgm_mmf.variants.ConcatBoWPgM``).
"""

from __future__ import annotations

import difflib
import importlib
import threading
import weakref
from typing import Any

from pgm_mmf.adapters import FAMILIES, Family
from pgm_plugins.errors import UnknownNameError

__all__ = ["class_name", "handle_of", "variant_class"]

_lock = threading.RLock()
_handles: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_NAMES = {f"{f.cls.rsplit('.', 1)[1]}PgM": f for f in FAMILIES}


def class_name(family: Family) -> str:
    return f"{family.cls.rsplit('.', 1)[1]}PgM"


def handle_of(model: Any) -> Any:
    """The ``PgMHandle`` of a model built as ``<name>_pgm`` (for ``param_groups``, ``stats``)."""
    handle = _handles.get(model)
    if handle is None:
        raise UnknownNameError(
            f"{type(model).__name__} has no PgM handle: only a model built by mmf as "
            "'<name>_pgm' (after apply_zoo_patch('mmf.registry')) has one, and copies of it "
            "do not (pgm_plugins does not yet carry the handle inside the model)."
        )
    return handle


def _num_labels(config: Any) -> int | None:
    labels = config.get("num_labels", None)
    if labels is None:
        labels = config.get("classifier", {}).get("params", {}).get("out_dim", None)
    return int(labels) if labels else None


def _pgm_config(model: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    raw = model.config.get("pgm", None)
    fields = dict(OmegaConf.to_container(raw, resolve=True)) if raw is not None else {}
    if "task" not in fields:
        labels = _num_labels(model.config)
        fields |= {"task": "classification", "num_classes": labels} if labels else {"task": "none"}
    return fields


def _targets(sample_list: Any) -> Any:
    if "targets" not in sample_list or sample_list.targets is None:
        return None
    t = sample_list.targets
    return t.argmax(-1) if t.is_floating_point() and t.dim() == 2 else t


def _make(family: Family) -> type:
    from pgm_mmf import compat

    compat.import_mmf()
    import pgm_plugins as pp

    module, qualname = family.cls.rsplit(".", 1)
    base: type = getattr(importlib.import_module(module), qualname)

    def build(self: Any) -> None:
        base.build(self)  # type: ignore[attr-defined]
        _handles[self] = pp.inject(self, adapter=family.adapter, config=_pgm_config(self))

    def __call__(self: Any, sample_list: Any, *args: Any, **kwargs: Any) -> Any:
        output = base.__call__(self, sample_list, *args, **kwargs)
        handle = _handles.get(self)
        losses = output.get("losses") if hasattr(output, "get") else None
        if handle is None or not handle.enabled or not isinstance(losses, dict):
            return output
        targets = _targets(sample_list)
        if targets is None and handle.block.config.task != "none":
            return output  # no labels in this batch (prediction): nothing to add
        key = "/".join(
            str(getattr(sample_list, k, None) or "unknown")
            for k in ("dataset_type", "dataset_name")
        )
        losses[f"{key}/pgm_aux"] = handle.aux_loss(targets)
        return output

    name = class_name(family)
    cls = type(
        name,
        (base,),
        {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"{qualname} with a PgM block at its encoder outputs (mmf '{family.model}"
            "_pgm').",
            "build": build,
            "__call__": __call__,
        },
    )
    return cls


def variant_class(model: str) -> type:
    """The PgM variant of mmf model ``model`` (a registry name such as ``"concat_bow"``)."""
    family = next((f for f in FAMILIES if f.model == model), None)
    if family is None:
        supported = [f.model for f in FAMILIES]
        near = difflib.get_close_matches(str(model), supported, n=1)
        raise UnknownNameError(
            f"no PgM variant for mmf model {model!r}"
            + (f"; did you mean {near[0]!r}?" if near else ".")
            + f" Supported: {', '.join(supported)}."
        )
    name = class_name(family)
    with _lock:
        cls = globals().get(name)
        if cls is None:
            cls = globals()[name] = _make(family)
        return cls


def __getattr__(name: str) -> Any:
    family = _NAMES.get(name)
    if family is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return variant_class(family.model)
