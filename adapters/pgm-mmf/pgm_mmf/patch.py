"""The zoo patch ``mmf.registry``: ``model: <name>_pgm`` builds a PgM variant through mmf.

``apply(models=None)`` registers ``<name>_pgm`` in mmf's model registry for each supported
model (default all of :data:`pgm_mmf.adapters.FAMILIES`) and returns ``undo``. mmf's
``register_model`` silently overwrites a name, so every name is checked first and nothing is
registered if any is taken. ``undo()`` deletes exactly the names this patch added (only while
they still map to its classes), which gives back the mapping as it was, order included.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from pgm_mmf.adapters import FAMILIES
from pgm_plugins.errors import UnknownNameError

__all__ = ["SUFFIX", "apply"]

SUFFIX = "_pgm"


def _mapping() -> dict[str, Any]:
    from mmf.common.registry import registry

    return registry.mapping["model_name_mapping"]


def apply(models: Iterable[str] | str | None = None) -> Callable[[], None]:
    """Register ``<name>_pgm`` for each of ``models``; returns the callable that undoes it."""
    from pgm_mmf import compat
    from pgm_mmf import models as tiny
    from pgm_mmf.variants import variant_class

    supported = [f.model for f in FAMILIES]
    names = supported if models is None else [models] if isinstance(models, str) else list(models)
    unknown = [n for n in names if n not in supported]
    if unknown or not names:
        near = {n: difflib.get_close_matches(n, supported, n=1) for n in unknown}
        hint = "; ".join(f"{n!r}: did you mean {m[0]!r}?" for n, m in near.items() if m)
        raise UnknownNameError(
            f"mmf registry patch: no PgM variant for {unknown or names!r}"
            + (f" ({hint})" if hint else "")
            + f". Supported mmf models: {', '.join(supported)}."
        )
    compat.import_mmf()
    tiny.ensure_global_config()
    from mmf.common.registry import registry

    mapping = _mapping()
    taken = [n + SUFFIX for n in names if n + SUFFIX in mapping]
    if taken:
        owners = ", ".join(
            f"{t} -> {mapping[t].__module__}.{mapping[t].__qualname__}" for t in taken
        )
        raise ValueError(
            f"mmf registry patch: {owners} already registered (mmf would overwrite it "
            "silently). Undo the earlier patch (call the function apply_zoo_patch returned) "
            "or pick models= without these names."
        )
    classes = {n + SUFFIX: variant_class(n) for n in names}  # may import; before any change
    for key, cls in classes.items():
        registry.register_model(key)(cls)
    done = False

    def undo() -> None:
        nonlocal done
        if done:
            return
        current = _mapping()
        for key, cls in classes.items():
            if current.get(key) is cls:
                del current[key]
        done = True

    return undo
