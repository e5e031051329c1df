"""The public entry points that tie the engine to the plugin registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pgm_plugins.block import PgMConfig
from pgm_plugins.errors import CheckpointError, InjectionError, PluginError
from pgm_plugins.injection import Adapter, Junction, PgMHandle, Plan, Site, build_plan
from pgm_plugins.injection.checkpoint import read_checkpoint
from pgm_plugins.registry import get_registry

__all__ = [
    "apply_zoo_patch",
    "get_adapter",
    "inject",
    "list_adapters",
    "list_datasets",
    "list_hosts",
    "list_zoo_patches",
    "load",
    "match_adapter",
    "plan",
]

SiteSpec = Site | str | Mapping[str, Any]


def list_adapters(
    filter: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()
) -> list[str]:
    """Registered adapter names matching ``filter`` (fnmatch), naturally sorted."""
    return get_registry().adapters.names(filter, exclude)


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; unknown names raise with the nearest match."""
    return get_registry().adapters.entry(name).value


def match_adapter(model: nn.Module) -> str | None:
    """The name of the adapter that recognises ``model``, or None."""
    return get_registry().match_adapter(model)


def list_hosts(filter: str = "*") -> list[str]:
    """Registered benchmark host names matching ``filter``."""
    return get_registry().hosts.names(filter)


def list_datasets(filter: str = "*") -> list[str]:
    """Registered benchmark data set names matching ``filter``."""
    return get_registry().datasets.names(filter)


def list_zoo_patches(filter: str = "*") -> list[str]:
    """Registered zoo patch names matching ``filter``."""
    return get_registry().zoo_patches.names(filter)


def apply_zoo_patch(name: str, **options: Any) -> Callable[[], None]:
    """Apply the zoo patch registered as ``name``; returns the callable that undoes it."""
    undo = get_registry().zoo_patches.entry(name).value(**options)
    if not callable(undo):
        raise PluginError(
            f"zoo patch {name!r} returned {undo!r}; a patch must return a callable that undoes it."
        )
    return undo


def _adapter(adapter: Adapter | str | None, model: nn.Module | None = None) -> Adapter | None:
    if adapter is None and model is not None:
        name = match_adapter(model)
        if name is None:
            why = get_registry().explain_unmatched(model)
            raise InjectionError(
                "".join(f"{line}\n" for line in why)
                + f"no adapter recognises {type(model).__name__} and no sites were given; pass "
                "sites={modality: layer path} (see pgm_plugins.list_layers(model)) or an "
                f"adapter name (registered: {', '.join(list_adapters()) or 'none'})."
            )
        return get_adapter(name)
    if adapter is None or isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, str):
        return get_adapter(adapter)
    raise InjectionError(f"adapter must be a name, an Adapter or None; got {adapter!r}.")


def plan(
    model: nn.Module,
    adapter: Adapter | str | None = None,
    sites: Mapping[str, SiteSpec] | None = None,
    config: PgMConfig | Mapping[str, Any] | None = None,
    *,
    junction: Junction | None = None,
    mode: str | None = None,
    example_inputs: Any = None,
    prefix: str = "pgm_block",
    block_factory: Callable[[PgMConfig], nn.Module] | None = None,
) -> Plan:
    """Exactly what :func:`inject` would do, without changing the model; ``print()`` it.

    Args:
        model: any ``nn.Module``.
        adapter: a registered adapter name or an ``Adapter``. None with no ``sites`` either:
            the registry recognises the model (``match_adapter``).
        sites: ``{modality: layer path | Site}``; overrides the adapter's sites.
        config: a dict of ``PgMConfig`` fields (the sites give the widths) or a full config.
        junction: one layer carrying all modalities, instead of sites.
        mode: ``"joint"`` or ``"independent"``; default the adapter's, else joint.
        example_inputs: inputs for one dry run (a tuple of positional arguments, a dict of
            keyword arguments or one tensor): widths, layouts and the joint-mode check.
        prefix: attribute name of the block inside the model.
        block_factory: ``config -> module`` building the block (default ``PgMBlock``); how the
            benchmark's control arms (same sites, same engine, another block) are injected. The
            module must take ``{modality: tensor}`` and return a ``PgMOutput``.
    """
    recognise = sites is None and junction is None
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: inject into the module
    return build_plan(
        model,
        sites=sites,
        junction=junction,
        adapter=_adapter(adapter, model if recognise else None),
        config=config,
        mode=mode,
        example_inputs=example_inputs,
        prefix=prefix,
        block_factory=block_factory,
    )


def inject(
    model: nn.Module,
    adapter: Adapter | str | None = None,
    sites: Mapping[str, SiteSpec] | None = None,
    config: PgMConfig | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PgMHandle:
    """Put a PgM block into ``model`` at the sites; returns the handle.

    Takes the arguments of :func:`plan`. Everything is validated first: on any error the model
    is unchanged.
    """
    return plan(model, adapter, sites, config, **kwargs).apply()


def load(model: nn.Module, directory: str | Path, **kwargs: Any) -> PgMHandle:
    """Re-inject a block saved with :func:`pgm_plugins.save` into ``model`` (same architecture).

    ``kwargs`` go to :func:`plan` (``example_inputs=`` for sites whose width needs a dry run).
    """
    model = getattr(model, "_orig_mod", model)  # a compiled host: inject into the module itself
    meta, tensors = read_checkpoint(directory, model)
    try:
        spelled, resolved = meta["sites"], meta["resolved"]
        junction, sites = None, None
        if spelled.get("junction") is True:
            junction = Junction(**{k: v for k, v in spelled.items() if k != "junction"})
        else:  # the widths and layouts found when saving: no dry run needed
            sites = {
                k: dataclasses.replace(
                    Site.coerce(v),
                    dim=resolved[k]["width"],
                    layout=resolved[k]["layout"] or Site.coerce(v).layout,
                )
                if k in resolved
                else v
                for k, v in spelled.items()
            }
        config = PgMConfig.from_dict(meta["config"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{directory}: the saved sites or config cannot be read ({type(exc).__name__}: "
            f"{exc}); the checkpoint is corrupt or from an incompatible version."
        ) from exc
    p = plan(
        model,
        adapter=None,
        sites=sites,
        config=config,
        junction=junction,
        mode=meta["mode"],
        prefix=meta["prefix"],
        **kwargs,
    )
    p.adapter = meta.get("adapter")
    try:
        p.block.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the tensors in {directory} do not fit the block: {exc}") from exc
    return p.apply()
