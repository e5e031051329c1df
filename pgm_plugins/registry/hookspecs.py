"""The plugin author's manual: every hook pgm_plugins calls, in one file.

A plugin is a module (or object) with functions named like the hooks below, each marked with
``pgm_plugins.registry.hookimpl``, and exposed through an entry point in the group
``pgm_plugins``::

    # pyproject.toml of your distribution
    [project.entry-points.pgm_plugins]
    mymodels = "my_package.pgm_plugin"

Rules that hold for every hook:

- Hook names start with ``pgm_``. A function marked ``@hookimpl`` whose name is not a hook below
  is an error when plugins load (``check_pending``): a typo fails loudly instead of never running.
- Registration hooks receive a ``register`` callback; call it once per thing you add. Names are
  lower case, dotted by zoo (``"mmsa.mult"``); a name another plugin registered already is an
  error naming both plugins.
- Keep registration cheap: import your model zoo inside the factories and predicates you
  register, never at module import or inside the hook body.
- A renamed hook keeps its old name for one release (``DEPRECATED_HOOKS``): a plugin that
  implements the old name still registers, with a ``DeprecationWarning`` naming the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["DEPRECATED_HOOKS", "PROJECT", "hookimpl", "hookspec"]

PROJECT = "pgm_plugins"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: old hook name -> its new name; an implementation of the old one still runs, with a warning
DEPRECATED_HOOKS = {"pgm_register_hosts": "pgm_register_models"}


@hookspec
def pgm_register_adapters(register: Callable[..., None]) -> None:
    """Add adapters: call ``register(adapter)`` with a ``pgm_plugins.Adapter`` for each.

    An adapter names, for one model family, the site of each modality (or one junction), the
    mode (``"joint"`` when all modalities go through one forward, ``"independent"`` for dual
    encoders), default ``PgMConfig`` fields, and optionally ``matches(model) -> bool``.

    Called once, when the registry is first used. Return value ignored.
    """


@hookspec(firstresult=True)
def pgm_match_adapter(model: Any) -> str | None:
    """Recognise ``model`` and return the name of the adapter to use, or None.

    Calling semantics: stops at the first non-None result (later-registered plugins are asked
    first). Adapters registered with a ``matches`` predicate are tried after this hook, so
    implement it only for recognition that a predicate cannot express. Must not modify the model.
    """


@hookspec
def pgm_explain_unmatched(model: Any) -> str | None:
    """Say why no adapter recognises ``model``, when it is of a family your plugin knows.

    Called only after every plugin and adapter predicate declined the model, to build the error
    ``pgm_plugins.inject(model)`` raises. Return one line (``"CLIPVisionModel is a CLIP-style model
    pgm-clip does not support; supported: ..."``) or None. Every non-None answer is shown. Must
    not modify the model; keep it cheap (compare class names, import nothing heavy).
    """


@hookspec
def pgm_register_datasets(register: Callable[..., None]) -> None:
    """Add benchmark data sets: ``register(name, factory, description="")``.

    ``factory(protocol=None, data_dir=None, **options) -> pgm_plugins.bench.BenchData`` loads the
    data set under one protocol (``None``: its default) from files under ``data_dir`` (``None``:
    ``$PGM_DATA_DIR``); nothing may be downloaded at run time. ``BenchData`` carries the arrays,
    labels, groups, the protocol's folds per seed, a digest of what was read and the primary
    metric (see ``pgm_plugins/bench/data/bench_data.py``). Called only when a benchmark asks for it.
    Return value ignored.
    """


@hookspec
def pgm_register_bench_hosts(register: Callable[..., None]) -> None:
    """Add benchmark hosts, the models ``pgm bench run`` trains: ``register(name, factory,
    description="")``.

    ``factory(data, seed, modalities) -> HostRun`` builds the host for a
    ``pgm_plugins.bench.BenchData`` with random weights (``seed`` fixed before any weight is
    drawn) on the given modalities, and returns a run object that feeds, trains (with the
    host's own losses, optimizer groups and clipping) and evaluates it: see
    ``pgm_plugins.bench.bench_host.HostRun`` for the methods the runner calls. Called only when
    a suite names the host. Listed by ``pgm_plugins.list_bench_hosts()`` and ``pgm bench list``.
    Return value ignored.
    """


@hookspec
def pgm_register_arms(register: Callable[..., None]) -> None:
    """Add benchmark arms, the methods ``pgm bench`` compares with the host alone:
    ``register(spec)`` with a ``pgm_plugins.bench.arm.ArmSpec`` for each.

    The spec names the arm (lower case, dotted by family: ``"mine.ogm"``; ``only.<modality>``
    is reserved), describes it in one line, cites its ``paper``, declares the tasks it supports,
    its settings grid (``settings(ctx) -> [dict, ...]``: one training per setting, the best on
    validation kept, so the grid's size is the tuning budget the report shows), the changes that
    define it (part of each cell's digest), whether it injects a module at the host's sites
    (``block=True``), and ``make(ctx) -> ArmRun`` for one training. ``ArmRun``'s hooks default to
    doing nothing; override only what your method changes: ``block_factory`` (a module injected
    at the sites), ``lr_scale`` (per-part learning rates), ``losses`` (add, replace or drop loss
    terms of a stage), ``backward`` (run backward yourself), ``after_backward`` (act on the
    gradients before clipping), ``after_step`` (act after the optimizer's step), ``predict``
    (replace the host's prediction), ``after_epoch`` and ``record`` (what the cell's record
    says about the arm). The runner builds and injects the
    host, then calls ``run.attach(host_run, handle)`` and the hooks: see
    ``pgm_plugins/bench/arm.py``'s table. Keep ``make`` and ``settings`` importable module-level
    callables (``functools.partial`` of a class is fine): process-pool and Ray workers rebuild
    arms from the registry of their own process. Listed by ``pgm bench list``.
    Return value ignored.
    """


@hookspec
def pgm_register_models(register: Callable[..., None]) -> None:
    """Add example models: ``register(name, factory, description="", adapter=None, example=None)``.

    An example model is a model of your zoo at a small size, for checking injection; the models
    a benchmark trains are ``pgm_register_bench_hosts``. ``factory(**options) -> nn.Module``
    builds it with random weights from a config (no downloads); ``adapter`` names the adapter
    whose sites fit it; ``example() -> inputs`` returns small example inputs (a tuple of
    positional arguments or a dict of keyword arguments). A model registered with an adapter and
    an example goes through pgm-plugins' shared injection checks (identity at initialisation,
    removal, save and load: ``tests/test_registered_models.py``), so the core test suite tests
    your adapter on it. Listed by ``pgm_plugins.list_models()``. Return value ignored.
    """


@hookspec
def pgm_register_hosts(register: Callable[..., None]) -> None:
    """Deprecated name of :func:`pgm_register_models` (same arguments, same effect).

    A plugin implementing it still registers its models, with a ``DeprecationWarning`` naming
    the new hook when it is loaded; the old name is removed in the release after 0.1.0.
    """


@hookspec
def pgm_register_zoo_patches(register: Callable[..., None]) -> None:
    """Add zoo patches: ``register(name, apply, description="")``.

    ``apply(**options)`` makes PgM variants buildable through a zoo's own factory (for example
    ``mult_pgm`` in MMSA's model map) and returns a callable that undoes the patch. It must check
    that it overwrites nothing the zoo already has. Called only on ``apply_zoo_patch(name)``.
    """
