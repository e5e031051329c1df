"""Plugin loading on pluggy: built-ins and entry points, allow-list, blocking, error reports.

Nothing here runs at ``import pgm_plugins``; the first call that needs the registry loads the
plugins once (``get_registry()``). The built-ins are the block adapters of
``pgm_plugins.registry.builtin``; everything else, the benchmark's own data sets and hosts
included (entry point ``pgm_plugins.bench`` of the ``pgm-plugins`` distribution), comes through
the entry-point group ``pgm_plugins``. Environment:

- ``PGM_LOAD_PLUGINS=a,b``: load only the entry points (by entry-point or distribution name)
  listed; set but empty loads none. Unset loads all.
- ``PGM_BLOCK_PLUGINS=a,b``: never load these.
- ``PGM_STRICT_PLUGINS=1``: a plugin that fails to import raises instead of being reported.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy

from pgm_plugins.errors import PluginError
from pgm_plugins.injection.adapter import Adapter
from pgm_plugins.registry import hookspecs
from pgm_plugins.registry.store import Registry

__all__ = [
    "ModelSpec",
    "PluginInfo",
    "PluginRegistry",
    "get_registry",
    "reset_registry",
    "use_registry",
]

GROUP = hookspecs.PROJECT


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


def _names(env: str) -> set[str] | None:
    value = os.environ.get(env)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _check_adapter(value: Any) -> str | None:
    return (
        None
        if isinstance(value, Adapter)
        else (f"expected a pgm_plugins.Adapter, got {type(value).__name__}")
    )


@dataclass(frozen=True)
class ModelSpec:
    """A registered example model (hook ``pgm_register_models``): how to build it, the adapter
    whose sites fit it and its example inputs, for the shared injection checks."""

    factory: Callable[..., Any]  #: ``factory(**options) -> nn.Module`` with random weights
    adapter: str | None = None  #: the adapter whose sites fit it
    example: Callable[[], Any] | None = None  #: ``example() -> inputs`` for a dry run


def _check_model(value: Any) -> str | None:
    return _check_callable(value.factory)


def _check_arm(value: Any) -> str | None:
    # duck-typed: the registry layer does not import the bench (pgm_plugins.bench.arm.ArmSpec)
    if not all(callable(getattr(value, a, None)) for a in ("make", "settings", "grid")):
        return f"expected a pgm_plugins.bench.arm.ArmSpec, got {type(value).__name__}"
    if value.name.startswith("only."):
        return "names starting with 'only.' are the single-modality arms"
    return None


def _check_callable(value: Any) -> str | None:
    return None if callable(value) else f"expected a callable, got {type(value).__name__}"


class PluginRegistry:
    """A plugin manager with the registries its hooks fill."""

    def __init__(
        self, *, load_entry_points: bool = True, strict: bool | None = None, builtins: bool = True
    ) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.strict = (
            os.environ.get("PGM_STRICT_PLUGINS", "") not in ("", "0") if strict is None else strict
        )
        self.plugins: dict[str, PluginInfo] = {}
        self.adapters: Registry[Adapter] = Registry("adapter", _check_adapter)
        self.datasets: Registry[Callable[..., Any]] = Registry("dataset", _check_callable)
        self.models: Registry[ModelSpec] = Registry("model", _check_model)
        self.bench_hosts: Registry[Callable[..., Any]] = Registry("bench host", _check_callable)
        self.zoo_patches: Registry[Callable[..., Any]] = Registry("zoo patch", _check_callable)
        self.arms: Registry[Any] = Registry("arm", _check_arm)
        if builtins:
            from pgm_plugins.registry import builtin

            self.register_plugin(builtin, "pgm_plugins.builtin")
        if load_entry_points:
            self.load_entry_points()
        self.refresh()

    @property
    def hosts(self) -> Registry[ModelSpec]:
        """Deprecated name of :attr:`models`."""
        warnings.warn(
            "PluginRegistry.hosts is deprecated: use PluginRegistry.models (the example models "
            "of pgm_register_models; benchmark hosts are PluginRegistry.bench_hosts).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.models

    # ------------------------------------------------------------------ loading
    def register_plugin(
        self, plugin: Any, name: str, dist: str | None = None, version: str | None = None
    ) -> None:
        """Register a plugin object (module or instance) under ``name``; call :meth:`refresh`
        afterwards to fill the registries from its hooks."""
        if self.pm.is_blocked(name):
            return
        self._warn_deprecated_hooks(plugin, name)
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, dist, version)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            del self.plugins[name]
            raise PluginError(
                f"plugin {name!r} implements a hook that does not exist: {exc}. "
                f"Hooks: {', '.join(self.hook_names())}."
            ) from exc
        self.plugins[name].hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    def _warn_deprecated_hooks(self, plugin: Any, name: str) -> None:
        for old, new in hookspecs.DEPRECATED_HOOKS.items():
            if hasattr(plugin, old) and self.pm.parse_hookimpl_opts(plugin, old) is not None:
                warnings.warn(
                    f"plugin {name!r} implements {old}, deprecated: rename it {new} (same "
                    f"arguments). {old} still works until the release after 0.1.0.",
                    DeprecationWarning,
                    stacklevel=3,
                )

    def hook_names(self) -> list[str]:
        """The hooks a plugin may implement (``pgm_plugins.registry.hookspecs``)."""
        return sorted(n for n in dir(self.pm.hook) if n.startswith("pgm_"))

    def load_entry_points(self) -> None:
        allow, block = _names("PGM_LOAD_PLUGINS"), _names("PGM_BLOCK_PLUGINS") or set()
        for ep in md.entry_points(group=GROUP):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            if ep.name in block or dist in block:
                self.pm.set_blocked(ep.name)
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                self.register_plugin(plugin, ep.name, dist, version)
            except Exception as exc:
                if self.strict:
                    raise PluginError(
                        f"plugin {ep.name!r} (distribution {dist}) failed to "
                        f"load: {type(exc).__name__}: {exc}"
                    ) from exc
                self.plugins[ep.name] = PluginInfo(
                    ep.name, dist, version, error=f"{type(exc).__name__}: {exc}"
                )

    def refresh(self) -> None:
        """(Re)build the registries from every registered plugin's hooks."""
        for reg in (
            self.adapters,
            self.datasets,
            self.bench_hosts,
            self.models,
            self.zoo_patches,
            self.arms,
        ):
            reg._entries.clear()
        self._refresh_adapters()
        self._refresh_arms()
        self._refresh_named()
        self._refresh_models()

    def _refresh_adapters(self) -> None:
        for impl in self.pm.hook.pgm_register_adapters.get_hookimpls():
            plugin = impl.plugin_name

            def add_adapter(adapter: Adapter, _p: str = plugin) -> None:
                self.adapters.add(
                    getattr(adapter, "name", repr(adapter)),
                    adapter,
                    _p,
                    getattr(adapter, "description", ""),
                )

            impl.function(register=add_adapter)

    def _refresh_arms(self) -> None:
        for impl in self.pm.hook.pgm_register_arms.get_hookimpls():
            plugin = impl.plugin_name

            def add_arm(spec: Any, _p: str = plugin) -> None:
                self.arms.add(
                    getattr(spec, "name", repr(spec)), spec, _p, getattr(spec, "description", "")
                )

            impl.function(register=add_arm)

    def _refresh_named(self) -> None:
        """The hooks whose ``register(name, value, description="")`` adds one callable."""
        simple = [
            ("pgm_register_datasets", self.datasets),
            ("pgm_register_bench_hosts", self.bench_hosts),
            ("pgm_register_zoo_patches", self.zoo_patches),
        ]
        for hook, reg in simple:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():

                def add(
                    name: str,
                    value: Any,
                    description: str = "",
                    _r: Registry[Any] = reg,
                    _p: str = impl.plugin_name,
                ) -> None:
                    _r.add(name, value, _p, description)

                impl.function(register=add)

    def _refresh_models(self) -> None:
        impls = [
            *self.pm.hook.pgm_register_models.get_hookimpls(),
            *self.pm.hook.pgm_register_hosts.get_hookimpls(),  # the deprecated name
        ]
        for impl in impls:

            def add_model(
                name: str,
                factory: Any,
                description: str = "",
                adapter: str | None = None,
                example: Callable[[], Any] | None = None,
                _p: str = impl.plugin_name,
            ) -> None:
                if example is not None and not callable(example):
                    raise PluginError(
                        f"plugin {_p!r} registered model {name!r} with example={example!r}; "
                        "give a callable returning example inputs."
                    )
                self.models.add(name, ModelSpec(factory, adapter, example), _p, description)

            impl.function(register=add_model)

    # ------------------------------------------------------------------ matching
    def explain_unmatched(self, model: Any) -> list[str]:
        """Plugins' explanations of why no adapter recognises ``model``."""
        return [str(r) for r in self.pm.hook.pgm_explain_unmatched(model=model) if r]

    def match_adapter(self, model: Any) -> str | None:
        name = self.pm.hook.pgm_match_adapter(model=model)
        if name is not None:
            return str(name)
        for entry in self.adapters.entries():
            if entry.value.matches is not None and entry.value.matches(model):
                return entry.name
        return None


_REGISTRY: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = PluginRegistry()
    return _REGISTRY


def reset_registry(registry: PluginRegistry | None = None) -> None:
    """Drop (or replace) the process-wide registry; the next use loads plugins again."""
    global _REGISTRY
    _REGISTRY = registry


@contextmanager
def use_registry(registry: PluginRegistry) -> Iterator[PluginRegistry]:
    """Make ``registry`` the process-wide one inside the ``with`` block, then put back the one
    before (loaded or not), even on error: a test or a tool that lists or injects through
    ``pgm_plugins`` against plugins of its own leaves no trace."""
    global _REGISTRY
    before, _REGISTRY = _REGISTRY, registry
    try:
        yield registry
    finally:
        _REGISTRY = before


def __getattr__(name: str) -> Any:
    if name == "HostSpec":
        warnings.warn(
            "pgm_plugins.registry.manager.HostSpec is deprecated: use ModelSpec.",
            DeprecationWarning,
            stacklevel=2,
        )
        return ModelSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
