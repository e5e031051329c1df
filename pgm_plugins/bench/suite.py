"""Benchmark suites as TOML files, validated before anything runs. The built-in suites ship
with the package (``pgm_plugins/bench/suites/*.toml``); any other suite is run by its path.

A suite's identity is its file, not its name: its results go to ``<results>/<name>/`` where
``name`` (:func:`suite_name`) is the file's stem for a built-in suite and
``<stem>-<8 hex digits of the resolved path's SHA-256>`` for any other file, so a user's
``mosi.toml`` never writes into the built-in ``mosi`` folder and two files named alike never
share one. The path rather than the content names it: editing a suite keeps its folder, so
finished cells are reused where nothing that shapes them changed and refused, by the runner's
cell digest, where something did (``docs/results.md``).

Keys (``dataset``, ``hosts``, ``arms``, ``seeds`` required):

- ``dataset``, ``protocol``: a data set registered through ``pgm_register_datasets`` and its
  protocol (default: the data set's own); ``options``: keyword arguments of its factory.
- ``hosts``: bench hosts registered through ``pgm_register_bench_hosts``; ``host_options``: a
  table per host of keyword arguments for its factory (``[host_options.late_fusion]``).
- ``arms``: arms registered through ``pgm_register_arms`` (the built-ins:
  :data:`pgm_plugins.bench.arms.ARMS`), and ``only.<modality>``; ``arm_options``: a table per
  arm of options its settings read (``[arm_options.mine]``; ``mslr_scales`` is ``mslr``'s).
- ``seeds``; ``folds``: how many of the protocol's folds to run (default: all).
- ``epochs`` (hard cap), ``patience`` (early stopping on the validation primary metric).
- ``lr``, ``window``: given to every host factory that takes them; ``batch``: the batch size
  (default: the host's own); ``threads``: torch threads (default 1); ``mslr_scales``: the
  learning-rate scales of the ``mslr`` arm; ``block``: PgM config fields for every block arm.
- ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``; default ``cpu``) and ``precision``
  (``fp32``, ``bf16``, ``fp16``; default ``fp32``): where and how cells train, unless
  ``pgm bench run --device / --precision`` say otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pgm_plugins.bench.arms import MSLR_SCALES
from pgm_plugins.errors import PgMError, choices_text, did_you_mean

__all__ = [
    "SUITES_DIR",
    "Suite",
    "SuiteError",
    "is_builtin",
    "list_suites",
    "load_suite",
    "parse_suite",
    "suite_name",
]

#: the built-in suites (package data)
SUITES_DIR = Path(__file__).resolve().parent / "suites"
_REQUIRED = ("dataset", "hosts", "arms", "seeds")
_KEYS = {
    *_REQUIRED,
    "description",
    "protocol",
    "options",
    "folds",
    "epochs",
    "patience",
    "lr",
    "batch",
    "threads",
    "window",
    "mslr_scales",
    "host_options",
    "block",
    "device",
    "precision",
    "arm_options",
}
#: ``precision`` values (see :data:`pgm_plugins.bench.step.PRECISIONS`)
PRECISION_NAMES = ("fp32", "bf16", "fp16")


class SuiteError(PgMError, ValueError):
    """A suite file that cannot run: says what was given, what is valid, the nearest match."""


@dataclass(frozen=True)
class Suite:
    name: str  #: the results folder's name (:func:`suite_name`): the stem, or stem-<8 hex>
    dataset: str
    protocol: str | None
    hosts: tuple[str, ...]
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: int | None = None  #: None: every fold of the protocol
    epochs: int = 20
    patience: int = 5
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    batch: int | None = None
    threads: int = 1
    window: int | None = None
    mslr_scales: tuple[float, ...] = MSLR_SCALES
    host_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    block: dict[str, Any] = field(default_factory=dict)
    arm_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    file: str = ""
    digest: str = ""

    def summary(self) -> dict[str, Any]:
        """What a result record stores about the suite."""
        return {"name": self.name, "file": self.file, "digest": self.digest}


# The adapter distributions whose hosts the built-in suites name, by the hosts' prefix. They are
# not on an index: each is a folder under adapters/ of a clone of pgm-plugins.
ADAPTER_DISTRIBUTIONS = {"mmsa": "pgm-mmsa", "timm": "pgm-timm"}


def _check(kind: str, given: Any, valid: Collection[str], where: str) -> None:
    if given not in valid:
        raise SuiteError(
            f"{where}: unknown {kind} {given!r}; valid: "
            f"{choices_text(sorted(valid), limit=len(valid))}."
            + did_you_mean(str(given), sorted(valid))
            + _distribution_hint(kind, given, valid)
            + _bench_plugin_hint()
        )


def _distribution_hint(kind: str, given: Any, valid: Collection[str]) -> str:
    """Which adapter distribution provides a host of a family none of ``valid`` belongs to."""
    if kind != "host" or not isinstance(given, str) or "." not in given:
        return ""
    from importlib.metadata import PackageNotFoundError, distribution

    from pgm_plugins.registry import get_registry

    family = given.split(".", 1)[0]
    dist = ADAPTER_DISTRIBUTIONS.get(family)
    if dist is None or any(str(name).startswith(family + ".") for name in valid):
        return ""
    where = f" Hosts named '{family}.*' come from the adapter distribution {dist}"
    try:
        distribution(dist)
    except PackageNotFoundError:
        return (
            f"{where}, which is not installed: pip install -c constraints.txt ./adapters/{dist} "
            "in a clone of pgm-plugins (its `make setup` installs every adapter into the "
            "clone's .venv instead)."
        )
    info = get_registry().plugins.get(family)
    if info is not None and info.error:
        return f"{where}, installed but failed to load: {info.error}. `pgm plugins` shows it."
    filters = _plugin_filters()
    return (
        f"{where}, installed but not loaded"
        + (f" (plugin filters: {filters})" if filters else "")
        + "; `pgm plugins` lists what is loaded."
    )


def _plugin_filters() -> str:
    """The plugin filters set in the environment, as ``NAME='value'`` (empty when none)."""
    import os

    return ", ".join(
        f"{k}={os.environ[k]!r}"
        for k in ("PGM_LOAD_PLUGINS", "PGM_BLOCK_PLUGINS")
        if k in os.environ
    )


def _bench_plugin_hint() -> str:
    """Where the core's own data sets and hosts went when a plugin filter left them out."""
    import os

    from pgm_plugins.registry import get_registry

    if "pgm_plugins.bench" in get_registry().plugins:
        return ""
    return (
        " The benchmark's own data sets and hosts (plugin pgm_plugins.bench) are not loaded: "
        "add pgm_plugins.bench to PGM_LOAD_PLUGINS"
        + (
            f" (now {os.environ.get('PGM_LOAD_PLUGINS')!r})"
            if "PGM_LOAD_PLUGINS" in os.environ
            else ""
        )
        + " or take it out of PGM_BLOCK_PLUGINS."
    )


def _registered(kind: str) -> list[str]:
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    if kind == "arms":
        return reg.arms.names()
    return reg.datasets.names() if kind == "datasets" else reg.bench_hosts.names()


def check_arm(name: Any, where: str, arms: Collection[str] | None = None) -> None:
    """``name`` is a registered arm (``arms``: the valid names, default the registry's) or
    ``only.<modality>``."""
    if isinstance(name, str) and name.startswith("only.") and len(name) > 5:
        return
    _check(
        "arm",
        name,
        [*sorted(_registered("arms") if arms is None else arms), "only.<modality>"],
        where,
    )


def _int(data: dict[str, Any], key: str, default: Any, where: str, low: int = 1) -> Any:
    value = data.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SuiteError(f"{where}: {key} must be an integer >= {low}, got {value!r}.")
    return value


def parse_suite(
    name: str,
    data: dict[str, Any],
    where: str = "suite",
    *,
    datasets: Collection[str] | None = None,
    hosts: Collection[str] | None = None,
    arms: Collection[str] | None = None,
    file: str = "",
    digest: str = "",
) -> Suite:
    """Validate a suite's table. ``datasets`` / ``hosts`` / ``arms``: the valid names (default:
    the registry's data sets, bench hosts and arms)."""
    for key in data:
        _check("key", key, sorted(_KEYS), where)
    for key in _REQUIRED:
        if key not in data:
            raise SuiteError(f"{where}: missing key {key!r}; a suite needs {list(_REQUIRED)}.")
    datasets = _registered("datasets") if datasets is None else datasets
    hosts = _registered("hosts") if hosts is None else hosts
    dataset = str(data["dataset"])
    _check("data set", dataset, datasets, where)
    protocol = data.get("protocol")
    if protocol is not None and not isinstance(protocol, str):
        raise SuiteError(f"{where}: protocol must be a string, got {protocol!r}.")
    for key in ("hosts", "arms"):
        value = data[key]
        if not isinstance(value, list) or not value or len(set(value)) != len(value):
            raise SuiteError(
                f"{where}: {key} must be a non-empty list of distinct names, got {value!r}."
            )
    for host in data["hosts"]:
        _check("host", host, hosts, where)
    for arm in data["arms"]:
        check_arm(arm, where, arms)
    seeds = data["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SuiteError(
            f"{where}: seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}."
        )
    lr = data.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0):
        raise SuiteError(f"{where}: lr must be a number > 0, got {lr!r}.")
    scales = data.get("mslr_scales", list(MSLR_SCALES))
    if (
        not isinstance(scales, list)
        or not scales
        or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales
        )
    ):
        raise SuiteError(f"{where}: mslr_scales must be a list of numbers > 0, got {scales!r}.")
    tables = {}
    for key in ("options", "block", "host_options", "arm_options"):
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise SuiteError(f"{where}: {key} must be a table, got {value!r}.")
        tables[key] = value
    device = data.get("device", "cpu")
    if not isinstance(device, str) or not (
        device in ("cpu", "cuda", "auto") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise SuiteError(f"{where}: device must be cpu, cuda, cuda:N or auto, got {device!r}.")
    precision = data.get("precision", "fp32")
    if precision not in PRECISION_NAMES:
        raise SuiteError(
            f"{where}: precision must be one of {choices_text(PRECISION_NAMES)}, got "
            f"{precision!r}." + did_you_mean(str(precision), PRECISION_NAMES)
        )
    for arm, opts in tables["arm_options"].items():
        if arm not in data["arms"]:
            raise SuiteError(
                f"{where}: arm_options.{arm} names an arm the suite does not run; its arms: "
                f"{choices_text(data['arms'])}." + did_you_mean(str(arm), data["arms"])
            )
        if not isinstance(opts, dict):
            raise SuiteError(f"{where}: arm_options.{arm} must be a table, got {opts!r}.")
    for host, opts in tables["host_options"].items():
        _check("host in host_options", host, data["hosts"], where)
        if not isinstance(opts, dict):
            raise SuiteError(f"{where}: host_options.{host} must be a table, got {opts!r}.")
    return Suite(
        name=name,
        dataset=dataset,
        protocol=protocol,
        hosts=tuple(data["hosts"]),
        arms=tuple(data["arms"]),
        seeds=tuple(seeds),
        folds=_int(data, "folds", None, where),
        epochs=_int(data, "epochs", 20, where),
        patience=_int(data, "patience", 5, where),
        description=str(data.get("description", "")),
        options=dict(tables["options"]),
        lr=None if lr is None else float(lr),
        batch=_int(data, "batch", None, where),
        threads=_int(data, "threads", 1, where),
        window=_int(data, "window", None, where),
        mslr_scales=tuple(float(s) for s in scales),
        host_options={h: dict(o) for h, o in tables["host_options"].items()},
        block=dict(tables["block"]),
        arm_options={a: dict(o) for a, o in tables["arm_options"].items()},
        device=device,
        precision=precision,
        file=file,
        digest=digest,
    )


def list_suites(suites_dir: Path = SUITES_DIR) -> list[str]:
    """The names of the built-in suites (files in ``suites_dir``)."""
    return sorted(p.stem for p in Path(suites_dir).glob("*.toml"))


def _path_of(name: str, suites_dir: Path) -> Path:
    return Path(name).expanduser() if name.endswith(".toml") else Path(suites_dir) / f"{name}.toml"


def is_builtin(name: str, suites_dir: Path = SUITES_DIR) -> bool:
    """Whether ``name`` (a suite name or a ``.toml`` path) is a built-in suite's own file."""
    path = _path_of(name, suites_dir).resolve()
    return path.parent == Path(suites_dir).resolve() and path.is_file()


def suite_name(name: str, suites_dir: Path = SUITES_DIR) -> str:
    """The name a suite's results are filed under (``<results>/<name>/``) for ``name``, a
    built-in suite's name or the path of a ``.toml`` file (which need not exist any more):
    the stem for a built-in suite's own file, ``<stem>-<8 hex>`` of the resolved path for
    any other file."""
    if not name.endswith(".toml") or is_builtin(name, suites_dir):
        return Path(name).stem if name.endswith(".toml") else name
    path = _path_of(name, suites_dir).resolve()
    return f"{path.stem}-{hashlib.sha256(str(path).encode('utf-8')).hexdigest()[:8]}"


def load_suite(
    name: str,
    suites_dir: Path = SUITES_DIR,
    *,
    datasets: Collection[str] | None = None,
    hosts: Collection[str] | None = None,
) -> Suite:
    """The suite ``name`` (a file in ``suites_dir``) or a path ending in ``.toml``; its
    :attr:`Suite.name` is :func:`suite_name`'s (the results folder), its ``file`` the
    resolved path."""
    path = _path_of(name, suites_dir)
    if not path.is_file():
        known = list_suites(suites_dir)
        raise SuiteError(
            f"unknown suite {name!r} (looked for {path}); valid: {choices_text(known)}."
            + did_you_mean(name, known)
            + " Run `pgm bench list` to see them."
        )
    raw = path.read_bytes()
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"{path}: not a valid TOML file ({exc}).") from exc
    return parse_suite(
        suite_name(name, suites_dir),
        table,
        where=str(path),
        datasets=datasets,
        hosts=hosts,
        file=str(path.resolve()),
        digest=hashlib.sha256(raw).hexdigest(),
    )
