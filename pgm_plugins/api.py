"""The public entry points that tie the engine to the plugin registry.

The ``list_*`` functions return names from the process-wide registry
(:func:`pgm_plugins.registry.get_registry`), matching ``filter`` and none of ``exclude``
(``fnmatch`` patterns, one or several), in natural order (``vit2`` before ``vit10``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pgm_plugins.block import PgMConfig
from pgm_plugins.errors import CheckpointError, InjectionError, PluginError
from pgm_plugins.injection import Adapter, Junction, PgMHandle, Plan, Site, build_plan
from pgm_plugins.injection.checkpoint import read_checkpoint
from pgm_plugins.injection.freeze import FreezeSpec
from pgm_plugins.registry import get_registry

__all__ = [
    "apply_zoo_patch",
    "get_adapter",
    "inject",
    "list_adapters",
    "list_bench_hosts",
    "list_datasets",
    "list_models",
    "list_zoo_patches",
    "load",
    "match_adapter",
    "plan",
]

SiteSpec = Site | str | Mapping[str, Any]
Patterns = str | Iterable[str]


def list_adapters(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the adapters (hook ``pgm_register_adapters``): what ``inject(model, name)``
    and :func:`get_adapter` accept."""
    return get_registry().adapters.names(filter, exclude)


def get_adapter(name: str) -> Adapter:
    """The ``Adapter`` registered as ``name``; an unknown name raises ``UnknownNameError``
    with the nearest match and the registered names."""
    return get_registry().adapters.entry(name).value


def match_adapter(model: nn.Module) -> str | None:
    """The name of the adapter that recognises ``model`` (hook ``pgm_match_adapter`` first,
    then the adapters' ``matches`` predicates), or None when none does."""
    return get_registry().match_adapter(model)


def list_models(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the example models (hook ``pgm_register_models``): small random-weight models
    of the plugins' zoos, with the adapter that fits them, for checking injection; the models a
    benchmark trains are :func:`list_bench_hosts`."""
    return get_registry().models.names(filter, exclude)


def list_hosts(filter: Patterns = "*") -> list[str]:
    """Deprecated name of :func:`list_models` (it lists example models, not benchmark hosts:
    those are :func:`list_bench_hosts`)."""
    warnings.warn(
        "pgm_plugins.list_hosts is deprecated: use pgm_plugins.list_models (the same example "
        "models); benchmark hosts are pgm_plugins.list_bench_hosts.",
        DeprecationWarning,
        stacklevel=2,
    )
    return list_models(filter)


def list_bench_hosts(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the benchmark hosts (hook ``pgm_register_bench_hosts``): the models
    ``pgm bench run`` trains, as a suite's ``hosts`` names them."""
    return get_registry().bench_hosts.names(filter, exclude)


def list_arms(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the benchmark arms (hook ``pgm_register_arms``), as a suite's ``arms`` names
    them (besides ``only.<modality>``)."""
    return get_registry().arms.names(filter, exclude)


def list_datasets(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the benchmark data sets (hook ``pgm_register_datasets``), as a suite's
    ``dataset`` names them."""
    return get_registry().datasets.names(filter, exclude)


def list_zoo_patches(filter: Patterns = "*", exclude: Patterns = ()) -> list[str]:
    """Names of the zoo patches (hook ``pgm_register_zoo_patches``): what
    :func:`apply_zoo_patch` accepts."""
    return get_registry().zoo_patches.names(filter, exclude)


def apply_zoo_patch(name: str, **options: Any) -> Callable[[], None]:
    """Apply the zoo patch registered as ``name`` with ``options``; returns the callable that
    undoes it. An unknown name raises ``UnknownNameError`` with the nearest match."""
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
    extend: bool = False,
    allow_single: bool = False,
    freeze_host: FreezeSpec = False,
) -> Plan:
    """What :func:`inject` would do, as a ``Plan`` that ``print()`` shows; changes nothing.

    Args:
        model: any ``nn.Module``.
        adapter: a registered adapter name or an ``Adapter``. None with no ``sites`` either
            (or with ``extend=True``): the registry recognises the model (``match_adapter``).
        sites: ``{modality: layer path | Site}``. Alone, they are the sites (no adapter). With
            an adapter named or ``extend=True``, they override the adapter's sites by modality
            name and add new ones (``{modality: None}`` drops one of the adapter's); ``print(plan)``
            says where each site came from.
        config: a dict of ``PgMConfig`` fields (the sites give the widths) or a full config.
        junction: one layer carrying all modalities, instead of sites.
        mode: ``"joint"`` or ``"independent"``; default the adapter's, else joint.
        example_inputs: inputs for one dry run (a tuple of positional arguments, a dict of
            keyword arguments or one tensor): widths, layouts and the joint-mode check.
        prefix: attribute name of the block inside the model.
        block_factory: ``config -> module`` building the block (default ``PgMBlock``); how the
            benchmark's control arms (same sites, same engine, another block) are injected. The
            module must take ``{modality: tensor}`` and return a ``PgMOutput``.
        extend: with ``sites`` and no adapter named, recognise the model's adapter and extend
            its sites with ``sites`` (a timm image tower found by ``timm.towers`` plus your own
            text tower: ``sites={"text": "text_encoder"}, extend=True``).
        allow_single: accept a plan with one modality (uni-modal learners only: the paired
            learner has no partner). Without it such a plan is an error naming what was found.
        freeze_host: ``True`` freezes every host parameter (the block trains alone); a module
            name, an ``fnmatch`` pattern or a list of them freeze the host modules they match.
            ``handle.remove()`` restores ``requires_grad`` exactly; see
            ``handle.print_trainable_parameters()``.
    """
    recognise = junction is None and (sites is None or extend)
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
        extend=extend or adapter is not None,
        allow_single=allow_single,
        freeze_host=freeze_host,
    )


def inject(
    model: nn.Module,
    adapter: Adapter | str | None = None,
    sites: Mapping[str, SiteSpec] | None = None,
    config: PgMConfig | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PgMHandle:
    """Put a PgM block into ``model`` at the sites; returns its ``PgMHandle``.

    Takes the arguments of :func:`plan`. Everything is validated first: on any error the model
    is unchanged.
    """
    return plan(model, adapter, sites, config, **kwargs).apply()


def _saved_config(directory: str | Path, meta: Mapping[str, Any]) -> PgMConfig:
    """The checkpoint's block config; fields this version does not know are refused (a block
    built without them would compute something else), not dropped with a warning."""
    saved = dict(meta["config"])
    known = {f.name for f in dataclasses.fields(PgMConfig)} | {"pgm_plugins_version"}
    unknown = sorted(k for k in saved if k not in known)
    if unknown:
        raise CheckpointError(
            f"{directory}: the saved block config has fields this pgm-plugins does not know "
            f"({', '.join(map(repr, unknown))}; written by pgm-plugins "
            f"{saved.get('pgm_plugins_version', '?')}): a block built without them would give "
            "other outputs. Upgrade (pip install -U pgm-plugins) to load it."
        )
    return PgMConfig.from_dict(saved)


def load(model: nn.Module, directory: str | Path, **kwargs: Any) -> PgMHandle:
    """Re-inject a block saved with :func:`pgm_plugins.save` into ``model`` (same architecture);
    returns its ``PgMHandle``.

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
        config = _saved_config(directory, meta)
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
        **{"allow_single": len(config.modalities) < 2, **kwargs},
    )
    p.adapter = meta.get("adapter")
    try:
        p.block.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the tensors in {directory} do not fit the block: {exc}") from exc
    return p.apply()
