"""Run a benchmark suite: cells (data set x protocol x host x arm x fold x seed), one result file
each (see ``ResultStore``), resumable, one run per suite at a time.

For each cell the runner seeds torch and numpy from the cell's seed, builds the host through its
registered factory (``factory(data, seed, modalities) -> HostRun``), injects the arm's block
(none for ``baseline``, ``mslr`` and ``only.<m>``) at ``run.sites``, calls ``run.attach``, and
trains with early stopping on the validation primary metric (ties: the lower validation loss)
under a hard epoch cap, restores the best epoch and scores validation and test.

- **Standardisation** happens here, in the runner: every modality is standardised per feature
  with the mean and standard deviation of the cell's training rows (sequence modalities over
  their real steps; padding stays zero), so every host sees the same inputs.
- ``data.redraw`` (when set) gives fresh training inputs each epoch, standardised the same way.
- Same seeds and folds for every arm: ``data.folds(seed)``; ``only.<m>`` arms run once per data
  set under host ``late_fusion``.
- Deterministic per (seed, threads): ``torch.manual_seed(seed)``, ``np.random.default_rng(seed)``
  and ``torch.set_num_threads(threads)``.
- Where cells run: :meth:`Runner.run` hands them to an executor (in this process, a pool of
  worker processes, Ray; :mod:`pgm_plugins.bench.executors`); workers return records and only
  this process writes them, so results do not depend on the executor.
- Finished cells are skipped (their file exists and parses); files appear whole (written to a
  temporary file, then renamed); per-cell claims (``fcntl.flock`` on
  ``<root>/<suite>/.claims/<cell>.lock``, :mod:`pgm_plugins.bench.claims`) let two runs of one
  suite share its cells. A cell may need prerequisites (:meth:`Runner.prerequisites`), built
  once and reused.
- Progress: one display whichever executor runs the grid (:mod:`pgm_plugins.bench.progress`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import (
    SINGLE_HOST,
    SINGLE_PREFIX,
    count_parameters,
    get_arm,
)
from pgm_plugins.bench.bench_host import batch_rows
from pgm_plugins.bench.contributions import measure as measure_contributions
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.distributed import Ranks, from_env
from pgm_plugins.bench.metrics import (
    LOWER_IS_BETTER,
    classification_metrics,
    metrics_of,
    regression_metrics,
)
from pgm_plugins.bench.prerequisites import Prerequisite
from pgm_plugins.bench.record import (
    DIGEST_SCHEME,
    SCHEMA_VERSION,
    NewerRecordError,
    check_record,
)
from pgm_plugins.bench.results import (
    RESULTS_ENV,
    ResultStore,
    code_digest,
    default_results_dir,
    environment,
)
from pgm_plugins.bench.stages import MODEL_FILE, RECORD_FILE, FirstStage
from pgm_plugins.bench.step import PRECISIONS, Stepper, autocast, resolve_device
from pgm_plugins.bench.suite import Suite, SuiteError
from pgm_plugins.errors import NonFiniteError, PgMError, choices_text, did_you_mean

__all__ = [
    "Cell",
    "Prerequisite",
    "Runner",
    "RunnerError",
    "classification_metrics",
    "regression_metrics",
]

PARTS_ROWS = 200


class RunnerError(PgMError, ValueError):
    """A run that cannot start (bad filter, a host that cannot take the data set, ...)."""


# ---------------------------------------------------------------------- data
def standardise(data: BenchData, train: np.ndarray) -> tuple[BenchData, dict[str, Any]]:
    """``data`` with every modality standardised by the mean / std of the training rows
    (sequences over their real steps; padding left at zero), and the statistics."""
    stats: dict[str, Any] = {}
    x = {}
    for m, arr in data.x.items():
        stats[m] = _stats(data, m, arr, train)
        x[m] = _apply(data, m, arr, stats[m])
    return replace(data, x=x), stats


def _mask(data: BenchData, m: str, arr: np.ndarray) -> np.ndarray | None:
    lengths = data.lengths.get(m)
    if arr.ndim != 3 or lengths is None:
        return None
    return np.arange(arr.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _stats(
    data: BenchData, m: str, arr: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    sub = arr[rows]
    if sub.ndim == 3:
        mask = _mask(data, m, arr)
        flat = sub[mask[rows]] if mask is not None else sub.reshape(-1, sub.shape[-1])
    else:
        flat = sub.reshape(len(sub), -1)
    mu = flat.mean(0, dtype=np.float64)
    sd = flat.std(0, dtype=np.float64)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return mu.astype(np.float32), sd.astype(np.float32)


def _apply(
    data: BenchData, m: str, arr: np.ndarray, stat: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    mu, sd = stat
    out = ((arr - mu) / sd).astype(np.float32)
    mask = _mask(data, m, arr)
    if mask is not None:
        out = out * mask[:, :, None]
    return out


def _redrawn(
    data: BenchData, raw: BenchData, train: np.ndarray, stats: dict[str, Any], rng: Any
) -> BenchData:
    """``data`` (standardised) with fresh training inputs from ``raw.redraw``."""
    assert raw.redraw is not None
    fresh = raw.redraw(train, rng)
    x = {}
    for m, arr in data.x.items():
        if m in fresh:
            mu, sd = stats[m]
            new = ((np.asarray(fresh[m]) - mu) / sd).astype(np.float32)
            mask = _mask(raw, m, raw.x[m])
            if mask is not None:
                new = new * mask[train][:, :, None]
            arr = arr.copy()
            arr[train] = new
        x[m] = arr
    return replace(data, x=x)


# ---------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    dataset: str
    protocol: str
    host: str
    arm: str
    fold: int
    seed: int

    def key(self, suite: str) -> dict[str, Any]:
        return {
            "suite": suite,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "host": self.host,
            "arm": self.arm,
            "fold": self.fold,
            "seed": self.seed,
        }

    def text(self) -> str:
        return f"{self.host} {self.arm} fold {self.fold} seed {self.seed}"


def _subset(kind: str, given: Sequence[Any] | None, valid: Sequence[Any]) -> list[Any]:
    if given is None:
        return list(valid)
    bad = [g for g in given if g not in valid]
    if bad:
        raise RunnerError(
            f"--{kind} {bad[0]!r} is not in the suite; valid: "
            f"{choices_text([str(v) for v in valid])}." + did_you_mean(str(bad[0]), map(str, valid))
        )
    return [v for v in valid if v in set(given)]


def _accepts(factory: Any, name: str) -> bool:
    """Does ``factory`` name the keyword ``name`` in its signature (``**options`` does not
    count: suite-wide keys go only to the hosts that declare them)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(name)
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def _keywords(factory: Any, skip: int | Sequence[str]) -> list[str] | None:
    """The keyword options ``factory`` takes (None: it takes ``**options``, anything goes).
    ``skip``: how many leading positional parameters, or which names, are not options."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    params = params[skip:] if isinstance(skip, int) else [p for p in params if p.name not in skip]
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_keywords(what: str, given: Sequence[str], valid: list[str] | None) -> None:
    if valid is None:
        return
    bad = [k for k in given if k not in valid]
    if bad:
        raise RunnerError(
            f"{what} has no option {bad[0]!r}; valid: {choices_text(valid) if valid else 'none'}."
            + did_you_mean(bad[0], valid)
        )


def _better(a: tuple[float, float], b: tuple[float, float] | None, higher: bool) -> bool:
    """Is (primary, loss) ``a`` better than ``b``: primary first, ties by the lower loss."""
    if b is None:
        return True
    pa, pb = (a[0], b[0]) if higher else (-a[0], -b[0])
    if math.isnan(pa):
        return False
    if math.isnan(pb) or pa > pb:
        return True
    return pa == pb and a[1] < b[1]


def cell_digest(settings: dict[str, Any]) -> str:
    """SHA-256 over what shapes a cell (:meth:`Runner.cell_settings`), as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def train_digest(train: np.ndarray) -> str:
    """SHA-256 of the sorted training row indices (int64): cells with one digest trained on
    the same rows; the report picks its t-test from it."""
    rows = np.sort(np.asarray(train, dtype=np.int64).reshape(-1))
    return hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()


def _differences(old: Any, new: dict[str, Any], prefix: str = "") -> list[str]:
    """Which settings differ between a stored cell (``old``: its ``cell_settings``) and now;
    a setting that is a table on both sides (``block_defaults``, ``code``) names only its keys
    that differ (``block_defaults.compile: '<absent>' -> False``), not the two tables whole."""
    if not isinstance(old, dict):
        return ["(the record does not list its settings)"]
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            if isinstance(a, dict) and isinstance(b, dict) and a and b:
                out += _differences(a, b, f"{prefix}{k}.")
                continue
            if k.endswith("digest"):
                a, b = str(a)[:16], str(b)[:16]
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


class Diverged(Exception):
    """Training of a cell went non-finite (loss, predictions, or the block's finite check)."""


@dataclass
class _Training:
    """The state of one setting's training: the host run and its block, the recipe, the
    curves and the best epoch so far (what :meth:`Runner._train`'s phases share)."""

    run: Any
    rng: np.random.Generator
    handle: Any
    block_config: dict[str, Any] | None
    host_params: int
    block_params: int
    recipe: dict[str, Any]
    batch: int
    threads: int
    lr_scale: Any
    best_state: dict[str, Any]
    stepper: Stepper
    device: str = "cpu"
    precision: str = "fp32"
    ranks: Ranks | None = None
    curves: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "valid_loss": [], "valid_primary": []}
    )
    best_score: tuple[float, float] | None = None
    best_epoch: int = -1
    train_s: float = 0.0
    steps: int = 0
    contributions_s: float = 0.0

    def track(
        self, epoch: int, train_loss: float, valid: dict[str, float], primary: str, higher: bool
    ) -> None:
        """Record an epoch's curves; keep its weights when its validation score is the best
        (the primary metric, ties broken by the lower validation loss)."""
        self.curves["train_loss"].append(train_loss)
        self.curves["valid_loss"].append(valid["loss"])
        self.curves["valid_primary"].append(valid[primary])
        score = (valid[primary], valid["loss"])
        if _better(score, self.best_score, higher):
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(self.run.model.state_dict())

    def outcome(self, **fields: Any) -> dict[str, Any]:
        """What a cell's record says about its training, as it stands; ``fields`` win."""
        return {
            "curves": self.curves,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.curves["valid_loss"]),
            "changes": tuple(getattr(self.run, "changes", ())),
            "train": {
                **self.recipe,
                "batch": self.batch,
                "threads": self.threads,
                "lr_scale": self.lr_scale,
                "device": self.device,
                "precision": self.precision,
                "world_size": self.ranks.world if self.ranks is not None else 1,
                "backend": self.ranks.backend if self.ranks is not None else None,
            },
            "parameters": {"host": self.host_params, "block": self.block_params},
            "time": {
                "train_s": self.train_s,
                "steps": self.steps,
                "step_ms": 1000 * self.train_s / max(self.steps, 1),
                "contributions_s": self.contributions_s,
            },
            "shares": None,
            "parts": None,
            "contributions": None,
            "block_config": self.block_config,
            "arm_record": self.stepper.arm.record() if self.stepper.arm is not None else {},
            **fields,
        }

    def fail(self, why: str) -> NoReturn:
        """End the cell as failed (non-finite): take the block out, raise :class:`Diverged`."""
        if self.handle is not None:
            self.handle.remove()
        raise Diverged(self.outcome(), why)


class Runner:
    """Runs one suite. ``registry``: a ``PluginRegistry`` (default: the process-wide one)."""

    def __init__(
        self,
        suite: Suite,
        results: str | os.PathLike[str] | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        quiet: bool = False,
        registry: Any = None,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        from pgm_plugins.registry import get_registry

        self.suite = suite
        self.root = Path(results) if results is not None else default_results_dir()
        self.folder = self.root / suite.name
        for path in (self.root, self.folder):
            if path.exists() and not path.is_dir():
                raise RunnerError(
                    f"results folder {path}{_results_source(self.root)} is a file, not a "
                    "folder; give --results a folder (it is created when missing), e.g. "
                    f"--results /tmp/bench-results, or set ${RESULTS_ENV} to one."
                )
        self.store = ResultStore(self.folder, check=self._check_record)
        self.data_dir = data_dir
        self.threads = threads or suite.threads
        try:
            self.device = resolve_device(device or suite.device)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        self.precision = precision or suite.precision
        if self.precision not in PRECISIONS:
            raise RunnerError(
                f"precision {self.precision!r} is not one of {choices_text(list(PRECISIONS))}."
                + did_you_mean(self.precision, PRECISIONS)
            )
        self.quiet = quiet
        self.registry = registry or get_registry()
        self.data: BenchData | None = None
        self._folds: dict[int, list[Fold]] = {}
        self._env: dict[str, Any] | None = None
        self._std: tuple[tuple[int, int], BenchData, dict[str, Any]] | None = None
        self._first_kept: tuple[tuple[str, Cell], FirstStage] | None = None
        self._ranks: Ranks | None = None  # set by run() under torchrun

    def _check_record(self, record: dict[str, Any], path: Path) -> str | None:
        return check_record(record, path, self.suite.name)

    # ------------------------------------------------------------------ planning
    def load_data(self) -> BenchData:
        if self.data is None:
            entry = self.registry.datasets.entry(self.suite.dataset)
            options = dict(self.suite.options)
            _check_keywords(
                f"data set {self.suite.dataset!r}",
                list(options),
                _keywords(entry.value, ("protocol", "data_dir")),
            )
            protocols = tuple(getattr(entry.value, "protocols", ()))
            if (
                self.suite.protocol is not None
                and protocols
                and self.suite.protocol not in protocols
            ):
                raise RunnerError(
                    f"data set {self.suite.dataset!r} has no protocol {self.suite.protocol!r}; "
                    f"valid: {choices_text(protocols)}."
                    + did_you_mean(self.suite.protocol, protocols)
                )
            path = options.get("path")
            if isinstance(path, str) and not Path(path).is_absolute() and self.suite.file:
                beside = Path(self.suite.file).parent / path  # relative to the suite file
                if beside.exists():
                    options["path"] = str(beside)
            try:
                data = entry.value(protocol=self.suite.protocol, data_dir=self.data_dir, **options)
            except PgMError:
                raise
            except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
                raise RunnerError(
                    f"data set {self.suite.dataset!r} (protocol {self.suite.protocol!r}, "
                    f"options {self.suite.options}) could not be loaded: {exc}"
                ) from exc
            if not isinstance(data, BenchData):
                raise RunnerError(
                    f"data set {self.suite.dataset!r} returned {type(data).__name__}, not a "
                    "BenchData; its factory must return pgm_plugins.bench.BenchData."
                )
            self.data = data
        return self.data

    def folds(self, seed: int) -> list[Fold]:
        if seed not in self._folds:
            self._folds[seed] = list(self.load_data().folds(seed))
        return self._folds[seed]

    def plan(
        self,
        hosts: Sequence[str] | None = None,
        arms: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
        folds: Sequence[int] | None = None,
    ) -> list[Cell]:
        """Every cell of the suite (filtered), in run order (seed, fold, host, arm); validates
        the filters, the data set, the arms' modalities and that every host takes the data."""
        s = self.suite
        arms_ = _subset("arms", arms, s.arms)
        # the only.<m> cells run under late_fusion even where the suite's hosts do not list it
        valid_hosts = list(s.hosts)
        if SINGLE_HOST not in valid_hosts and any(a.startswith(SINGLE_PREFIX) for a in s.arms):
            valid_hosts.append(SINGLE_HOST)
        hosts_ = _subset("hosts", hosts, valid_hosts)
        fusion_hosts = [h for h in hosts_ if h in s.hosts]
        seeds_ = _subset("seeds", seeds, s.seeds)
        for host in {
            *hosts_,
            *([SINGLE_HOST] if any(a.startswith(SINGLE_PREFIX) for a in arms_) else []),
        }:
            self.registry.bench_hosts.entry(host)  # unknown -> error with the registered ones
        data = self.load_data()
        singles = [a for a in arms_ if a.startswith(SINGLE_PREFIX)]
        for a in singles:
            m = a[5:]
            if m not in data.modalities:
                raise RunnerError(
                    f"arm {a!r}: data set {data.name} has no modality {m!r}; valid: "
                    f"{choices_text(data.modalities)}." + did_you_mean(m, data.modalities)
                )
        self._check_primary(data)
        for a in arms_:
            spec = self.arm(a)
            if data.task not in spec.tasks:
                raise RunnerError(
                    f"arm {a!r} supports {' and '.join(spec.tasks)}; data set {data.name} "
                    f"({data.protocol}) is {data.task}. Leave the arm out of this suite."
                )
            if not spec.modality:  # its settings grid (e.g. bad [arm_options]) before any cell
                try:
                    spec.grid(self._context(spec, "", data, s.seeds[0], {}))
                except PgMError:
                    raise
                except (ValueError, TypeError, KeyError) as exc:
                    raise RunnerError(f"arm {a!r}: {exc}") from exc
        counts = {}
        for seed in seeds_:  # every seed's folds now: a bad split fails before any cell
            try:
                got = self.folds(seed)
            except PgMError:
                raise
            except (ValueError, KeyError, IndexError) as exc:
                raise RunnerError(
                    f"data set {data.name} ({data.protocol}): the folds of seed {seed} cannot be "
                    f"made: {exc}"
                ) from exc
            for f in got:
                empty = [n for n in ("train", "valid", "test") if len(getattr(f, n)) == 0]
                if empty:
                    raise RunnerError(
                        f"data set {data.name} ({data.protocol}): fold {f.fold} of seed {seed} "
                        f"has an empty {' and '.join(empty)} split; give more rows or groups, "
                        "or another split."
                    )
            counts[seed] = len(got)
        n_folds = min(counts.values())
        if s.folds is not None and s.folds > n_folds:
            raise RunnerError(
                f"suite {s.name} asks for {s.folds} folds; {data.name} ({data.protocol}) has "
                f"{n_folds}."
            )
        all_folds = list(range(s.folds or n_folds))
        folds_ = _subset("folds", folds, all_folds)
        fusions = [a for a in arms_ if not a.startswith(SINGLE_PREFIX)]
        cells = []
        for seed in seeds_:
            for fold in folds_:
                for host in fusion_hosts:
                    for arm in fusions:
                        cells.append(Cell(data.name, data.protocol, host, arm, fold, seed))
                if singles and (hosts is None or SINGLE_HOST in hosts_):
                    for arm in singles:
                        cells.append(Cell(data.name, data.protocol, SINGLE_HOST, arm, fold, seed))
        unfit = self._check_hosts(
            data, sorted({c.host for c in cells}), seeds_[0], sorted({c.arm for c in cells})
        )
        if unfit:
            cells = [c for c in cells if (c.host, c.arm) not in unfit]
            if not self.quiet:
                for arm in sorted({a for _, a in unfit}):
                    where = sorted(h for h, a in unfit if a == arm)
                    print(
                        f"suite {s.name}: arm {arm!r} left out on {', '.join(where)}: "
                        f"{'they train' if len(where) > 1 else 'it trains'} as "
                        f"{unfit[(where[0], arm)]}, and {arm} supports only "
                        f"{' and '.join(self.arm(arm).tasks)}",
                        file=sys.stderr,
                    )
        return cells

    def arm(self, name: str) -> ArmSpec:
        """The arm ``name`` from this runner's registry (``only.<m>`` for any modality)."""
        try:
            return get_arm(name, self.registry)
        except PgMError as exc:
            raise RunnerError(str(exc)) from None

    def _arm_options(self, arm: ArmSpec) -> dict[str, Any]:
        """The suite's options for ``arm`` (``[arm_options.<name>]``; ``mslr_scales`` is the
        ``mslr`` arm's ``scales``)."""
        options = dict(self.suite.arm_options.get(arm.name, {}))
        if arm.name == "mslr":
            options.setdefault("scales", list(self.suite.mslr_scales))
        return options

    def _context(
        self,
        arm: ArmSpec,
        host: str,
        data: BenchData,
        seed: int,
        setting: dict[str, Any],
        modalities: tuple[str, ...] | None = None,
    ) -> ArmContext:
        return ArmContext(
            arm=arm.name,
            host=host,
            modalities=tuple(modalities or data.modalities),
            task=data.task,
            num_classes=data.num_classes if data.task == "classification" else None,
            seed=seed,
            setting=dict(setting),
            options=self._arm_options(arm),
        )

    def _check_primary(self, data: BenchData) -> None:
        dummy_rows = np.arange(min(len(data), 4))
        out: np.ndarray = (
            np.zeros((len(dummy_rows), data.num_classes or 2))
            if data.task == "classification"
            else np.zeros(len(dummy_rows))
        )
        names = metrics_of(data, dummy_rows, out)
        if data.primary not in names:
            raise RunnerError(
                f"data set {data.name}: primary metric {data.primary!r} is not computed for a "
                f"{data.task} task; computed: {choices_text(names)}."
            )

    def _check_hosts(
        self, data: BenchData, hosts: Sequence[str], seed: int, arms: Sequence[str] = ()
    ) -> dict[tuple[str, str], str]:
        """Build every host once on the data, and plan every block arm's block into it, before
        any cell runs: a host that cannot take the data set, a bad host option or a bad
        ``[block]`` setting says why now, not after hours of other cells. Returns the (host,
        arm) pairs to leave out, with the task the host trains: an arm whose tasks do not
        include it (OGM-GE on an MMSA host, which trains as regression on classification data)
        runs on the suite's other hosts; an arm no host of the plan can take is an error."""
        import pgm_plugins as pp

        s = self.suite
        for host, opts in s.host_options.items():
            if host in hosts:
                factory = self.registry.bench_hosts.entry(host).value
                _check_keywords(
                    f"bench host {host!r} (host_options)", list(opts), _keywords(factory, 3)
                )
        if s.lr is not None:
            ignore = [
                h
                for h in hosts
                if "lr" not in s.host_options.get(h, {})
                and not _accepts(self.registry.bench_hosts.entry(h).value, "lr")
            ]
            if ignore:
                take = [
                    h
                    for h in self.registry.bench_hosts.names()
                    if _accepts(self.registry.bench_hosts.entry(h).value, "lr")
                ]
                raise RunnerError(
                    f"suite {s.name}: lr = {s.lr} would be ignored by host(s) "
                    f"{', '.join(ignore)} (they train with their own recipe's learning rates); "
                    f"hosts that take lr: {choices_text(take) if take else 'none'}. Remove lr, "
                    "or give it per host under [host_options.<host>] where the host takes it."
                )
        for arm in arms:  # each arm's grid from its [arm_options], as its cells will read it
            spec = self.arm(arm)
            mods = (str(spec.modality),) if spec.modality else data.modalities
            for host in hosts:
                try:
                    spec.grid(self._context(spec, host, data, seed, {}, mods))
                except PgMError:  # the arm's own error names its options
                    raise
                except Exception as exc:
                    raise RunnerError(
                        f"arm {arm!r} cannot make its settings grid from the suite's "
                        f"[arm_options.{arm}] {dict(s.arm_options.get(arm, {}))}: {exc}"
                    ) from exc
        blocks = [a for a in arms if self.arm(a).block]
        unfit: dict[tuple[str, str], str] = {}
        for host in hosts:
            try:
                run = self._build(host, data, seed, data.modalities)
            except Exception as exc:
                raise RunnerError(
                    f"bench host {host!r} cannot take data set {data.name} ({data.protocol}): {exc}"
                ) from exc
            if host == SINGLE_HOST and all(a.startswith(SINGLE_PREFIX) for a in arms):
                continue
            # a host may train another task than the data's (MMSA hosts: regression on +-1)
            trains = str(dict(getattr(run, "block_config", None) or {}).get("task", data.task))
            for a in arms:
                if not a.startswith(SINGLE_PREFIX) and trains not in self.arm(a).tasks:
                    unfit[(host, a)] = trains
            for arm in blocks:
                if (host, arm) in unfit:
                    continue
                config: dict[str, Any] = {
                    "task": data.task,
                    "num_classes": data.num_classes if data.task == "classification" else None,
                    **s.block,
                    **dict(getattr(run, "block_config", None) or {}),
                }
                spec = self.arm(arm)
                # the block its first setting trains (a block may depend on the setting)
                first = spec.grid(self._context(spec, host, data, seed, {}))[0]
                factory = spec.make(self._context(spec, host, data, seed, first)).block_factory()
                try:
                    pp.plan(run.model, sites=run.sites, config=config, block_factory=factory)
                except Exception as exc:
                    raise RunnerError(
                        f"arm {arm!r} cannot put its block into host {host!r} (suite [block] "
                        f"{dict(s.block)}): {exc}"
                    ) from exc
        fusion = [h for h in hosts if not (h == SINGLE_HOST and h not in s.hosts)]
        nowhere = [
            a
            for a in arms
            if not a.startswith(SINGLE_PREFIX) and all((h, a) in unfit for h in fusion)
        ]
        if nowhere and fusion:
            tasks = sorted({unfit[(h, nowhere[0])] for h in fusion})
            raise RunnerError(
                f"arm(s) {', '.join(nowhere)} support only "
                f"{' and '.join(self.arm(nowhere[0]).tasks)}, and every host of this run "
                f"({', '.join(fusion)}) trains as {' and '.join(tasks)} on {data.name}; leave "
                "them out of this suite or run them with a host that trains "
                f"{' or '.join(self.arm(nowhere[0]).tasks)}. Nothing was run."
            )
        return unfit

    def _build(self, host: str, data: BenchData, seed: int, modalities: tuple[str, ...]) -> Any:
        factory = self.registry.bench_hosts.entry(host).value
        kwargs = dict(self.suite.host_options.get(host, {}))
        for key in ("lr", "window"):
            value = getattr(self.suite, key)
            if value is not None and key not in kwargs and _accepts(factory, key):
                kwargs[key] = value
        _seed_all(seed)
        run = factory(data, seed, modalities, **kwargs)
        missing = [m for m in ("to", "optimizers", "stages") if not callable(getattr(run, m, None))]
        if missing:
            old = " (it has the old step() / attach(): the runner owns the step now)"
            raise RunnerError(
                f"bench host {host!r} ({type(run).__name__}) lacks {', '.join(missing)}"
                + (old if hasattr(run, "step") else "")
                + "; a bench host gives to(device), optimizers(handle, lr_scale) and "
                "stages(inputs, targets, rows): see pgm_plugins.bench.bench_host.HostRun."
            )
        return run

    def cell_settings(self, cell: Cell) -> dict[str, Any]:
        """What shapes ``cell`` beyond its key (``digest_scheme`` 2, see
        :mod:`pgm_plugins.bench.record`): the data digest, the suite settings that reach it, the
        arm's kind and changes, the block defaults of the installed code, and the code itself
        (versions and a digest of what this package's and the host's package's code does, so a
        changed default, recipe or loader never reuses an old record), and the precision when it
        is not fp32 (bf16 / fp16 compute something else), and the world size under torchrun
        (batch-level loss terms and CPU batch norm see each rank's chunk of the global batch,
        see :mod:`pgm_plugins.bench.distributed`). Threads and the device do not count:
        they change speed and the order of float operations, not what is computed; the record
        keeps both (``train.threads``, ``train.device``) and the report flags mixed devices."""
        s = self.suite
        data = self.load_data()
        arm = self.arm(cell.arm)
        entry = self.registry.bench_hosts.entry(cell.host)
        factory = entry.value
        host_options = dict(s.host_options.get(cell.host, {}))
        settings: dict[str, Any] = {
            "digest_scheme": DIGEST_SCHEME,
            "code": _code_versions(self.registry, entry.plugin, factory),
            "arm": {"kind": arm.kind, "changes": dict(arm.changes)},
            "data_digest": data.digest,
            "options": dict(s.options),
            "epochs": s.epochs,
            "patience": s.patience,
            "batch": s.batch,
            "host_options": host_options,
        }
        for key in ("lr", "window"):
            value = getattr(s, key)
            if value is not None and key not in host_options and _accepts(factory, key):
                settings[key] = value
        options = self._arm_options(arm)
        if arm.name == "mslr":  # its options' name in records before arms were plugins
            settings["mslr_scales"] = list(options["scales"])
        elif options:
            settings["arm_options"] = dict(options)
        if self.precision != "fp32":  # fp32 records stay what they were; the device does not count
            settings["precision"] = self.precision
        if self._ranks is not None:  # batch-level terms and CPU batch norm see a rank's chunk
            settings["world_size"] = self._ranks.world
        if arm.first_stage:  # what the first stage's own cell digest covers shapes this one
            first = self.first_stage_cell(arm.first_stage, cell)
            settings["first_stage"] = {
                "arm": arm.first_stage,
                "cell_digest": cell_digest(self.cell_settings(first)),
            }
        if arm.block:
            settings["block"] = dict(s.block)
            settings["block_defaults"] = _block_defaults()
        return settings

    def stale(
        self, cells: Sequence[Cell], records: Sequence[dict[str, Any] | None] | None = None
    ) -> list[tuple[Cell, list[str]]]:
        """Finished cells whose stored ``cell_digest`` differs from what the suite would run
        now, with what differs. Records without a digest (the oldest) are accepted; records of
        an older digest scheme are compared on the settings they list (the report flags both).
        ``records``: the cells' loaded records (default: loaded here)."""
        if records is None:
            records = self._load(cells)
        out = []
        for c, record in zip(cells, records, strict=True):
            if record is None or "cell_digest" not in record:
                continue
            now = self.cell_settings(c)
            old = record.get("cell_settings")
            if isinstance(old, dict) and old.get("digest_scheme", 1) < DIGEST_SCHEME:
                now = {k: v for k, v in now.items() if k in old}  # what that scheme covered
            if record["cell_digest"] != cell_digest(now):
                out.append((c, _differences(record.get("cell_settings"), now)))
        return out

    def _load(self, cells: Sequence[Cell]) -> list[dict[str, Any] | None]:
        """The cells' usable records (None: to run), read once; refuses, changing nothing,
        when a cell's file was written by a newer pgm-plugins (kept, never run over)."""
        loaded: list[dict[str, Any] | None] = []
        newer: list[str] = []
        for c in cells:
            try:
                loaded.append(self.store.load(c.key(self.suite.name)))
            except NewerRecordError as exc:
                newer.append(f"  {c.text()}: {exc}")
        if newer:
            raise RunnerError(
                f"{len(newer)} record(s) in {self.folder} were written by a newer pgm-plugins "
                f"(schema version above {SCHEMA_VERSION}):\n"
                + "\n".join(newer[:10])
                + "\nNothing was run. Upgrade pgm-plugins to resume this suite, or give another "
                "results root with --results."
            )
        return loaded

    def _refuse_stale(self, stale: list[tuple[Cell, list[str]]]) -> None:
        lines = [f"  {c.text()}: {'; '.join(d) or 'digest differs'}" for c, d in stale[:10]]
        more = f"\n  ... and {len(stale) - 10} more" if len(stale) > 10 else ""
        raise RunnerError(
            f"{len(stale)} finished cell(s) in {self.folder} were run with other settings or "
            "data than suite "
            f"{self.suite.name!r} ({self.suite.file or 'no file'}) gives now:\n"
            + "\n".join(lines)
            + more
            + f"\nNothing was run. Move the folder away (mv {self.folder} {self.folder}.old) or "
            "give another results root with --results to keep both."
        )

    # ------------------------------------------------------------------ running
    def done(self, cells: Sequence[Cell]) -> list[bool]:
        """Which cells have a usable record (what :meth:`run` skips), checked silently."""
        out = []
        for c in cells:
            path = self.store.path(c.key(self.suite.name))
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                out.append(False)
                continue
            out.append(
                isinstance(record, dict)
                and record.get("key") == c.key(self.suite.name)
                and self._check_record(record, path) is None
            )
        return out

    def prerequisites(self, cell: Cell) -> list[Prerequisite]:
        """What ``cell`` needs built first (a cached first training stage, say): each
        :class:`~pgm_plugins.bench.prerequisites.Prerequisite` is built once, before the cells
        that need it, and reused by later runs from ``<folder>/artifacts/<digest>/``: the
        first stage of an arm that names one (``ArmSpec.first_stage``, see
        :mod:`pgm_plugins.bench.stages`)."""
        spec = self.arm(cell.arm)
        return [self._first_stage_prerequisite(spec.first_stage, cell)] if spec.first_stage else []

    def run(
        self,
        cells: Sequence[Cell],
        *,
        executor: Any = None,
        retries: int = 1,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run every cell whose record is missing (or corrupt) on ``executor`` (default: in
        this process), sharing the folder with any other run of the suite; returns counts, the
        cells that failed (``failed``: ``[(cell, last line of the error)]``; nothing is written
        for them) and the wall time. ``retries``: how often a cell is run again after an
        infrastructure failure (a killed worker, out of memory). ``options``: this runner's
        keyword options, for workers to build theirs. See
        :func:`pgm_plugins.bench.executors.run_grid`. Under ``torchrun`` (``WORLD_SIZE`` > 1)
        every rank trains each cell together and rank 0 writes (:meth:`_run_ranks`)."""
        from pgm_plugins.bench.executors import run_grid

        try:
            ranks = from_env()
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        if ranks is not None:
            return self._run_ranks(ranks, cells)
        return run_grid(self, cells, executor, retries=retries, options=options)

    def _run_ranks(self, ranks: Ranks, cells: Sequence[Cell]) -> dict[str, Any]:
        """:meth:`run` under torchrun: every rank trains each cell with DDP (see
        :mod:`pgm_plugins.bench.distributed`). Rank 0 claims the cells it runs (skipping those
        another run holds or finished), builds their missing first stages with the others,
        writes each record and reports progress; the other ranks learn the plan by broadcast and
        wait at a barrier after each cell."""
        try:
            self.device = ranks.start(self.device)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        self._ranks = ranks
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        ran = 0
        todo: list[int] = []
        try:
            with contextlib.ExitStack() as stack:
                failure: Exception | None = None
                builds: list[int] = []
                if ranks.main:
                    try:
                        todo, builds = self._claim_for_ranks(cells, stack)
                    except RunnerError as exc:
                        failure = exc
                error, todo, builds = ranks.broadcast(
                    (None if failure is None else str(failure), todo, builds)
                )
                if failure is not None:
                    raise failure
                if error is not None:
                    raise RunnerError(f"rank 0 could not start the run: {error}")
                for i in builds:  # first stages the cells need, trained by every rank
                    prerequisite = self.prerequisites(cells[i])[0]
                    final = prerequisite.path(self.folder)
                    out = final.parent / f".{final.name}.{os.getpid()}.tmp"
                    first = self.first_stage_cell(str(prerequisite.key["arm"]), cells[i])
                    record = self.run_cell(
                        first, save_model=out / MODEL_FILE if ranks.main else None
                    )
                    if ranks.main:
                        (out / RECORD_FILE).write_text(
                            json.dumps(record, indent=1, default=str), encoding="utf-8"
                        )
                        os.replace(out, final)
                    ranks.barrier()
                for i in todo:
                    cell = cells[i]
                    record = self.run_cell(cell)
                    ran += 1
                    if ranks.main:
                        self.store.write(cell.key(self.suite.name), record)
                        if not self.quiet:
                            primary = record["primary"]
                            print(
                                f"[{len(cells) - len(todo) + ran}/{len(cells)}] {cell.text()} "
                                f"({ranks.world} ranks, {ranks.backend}): test {primary} "
                                f"{record['metrics']['test'][primary]:.4f} "
                                f"({record['time']['wall_s']:.1f} s)",
                                file=sys.stderr,
                                flush=True,
                            )
                    ranks.barrier()
        finally:
            ranks.stop()
            self._ranks = None
        return {
            "cells": len(cells),
            "skipped": len(cells) - len(todo),
            "ran": ran,
            "others": 0,
            "failed": [],
            "wall_s": time.perf_counter() - start,
            "folder": str(self.folder),
            "world_size": ranks.world,
        }

    def _claim_for_ranks(
        self, cells: Sequence[Cell], stack: contextlib.ExitStack
    ) -> tuple[list[int], list[int]]:
        """Rank 0's plan under torchrun: the indices of the unfinished cells it could claim
        (claims held in ``stack``), and of those cells whose first stage is still to build (one
        per prerequisite, claimed too)."""
        from pgm_plugins.bench.claims import Claims

        loaded = self._load(cells)
        changed = self.stale(cells, loaded)
        if changed:
            self._refuse_stale(changed)
        claims = Claims(self.folder)
        todo, builds, seen = [], [], set()
        for i, (cell, record) in enumerate(zip(cells, loaded, strict=True)):
            if record is not None:
                continue
            path = self.store.path(cell.key(self.suite.name))
            claim = claims.take(path.stem)
            if claim is None:
                continue  # another run holds it
            stack.callback(claim.release)
            claims.clean_temporaries(path)
            todo.append(i)
            for prerequisite in self.prerequisites(cell):
                if prerequisite.digest in seen or prerequisite.built(self.folder):
                    continue
                held = claims.take(prerequisite.claim)
                if held is None:
                    raise RunnerError(
                        f"{prerequisite.text()} is being built by another run (PID "
                        f"{claims.holder(prerequisite.claim)}); run again when it is done."
                    )
                stack.callback(held.release)
                prerequisite.discard_damaged(self.folder)
                seen.add(prerequisite.digest)
                builds.append(i)
        return todo, builds

    def _device_text(self) -> str:
        """``cpu``, or ``cuda:N (the device's name)``: what the record's ``train.device`` says."""
        if self.device.type != "cuda":
            return str(self.device)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"

    def _standardised(self, fold: Fold, seed: int) -> tuple[BenchData, dict[str, Any]]:
        key = (seed, fold.fold)
        if self._std is None or self._std[0] != key:
            data, stats = standardise(self.load_data(), fold.train)
            self._std = (key, data, stats)
        return self._std[1], self._std[2]

    def run_cell(self, cell: Cell, save_model: Path | None = None) -> dict[str, Any]:
        """Train one cell (with the arm's validation grid, if any) and return its record.
        ``save_model``: also write the chosen setting's best weights there (``torch.save`` of
        the state dict, block included: what a first stage keeps)."""
        start = time.perf_counter()
        if self.device.type == "cuda":  # fp32 means fp32: no TF32 matmuls or convolutions
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        s = self.suite
        raw = self.load_data()
        fold = self.folds(cell.seed)[cell.fold]
        data, stats = self._standardised(fold, cell.seed)
        arm = self.arm(cell.arm)
        modalities = (str(arm.modality),) if arm.modality else raw.modalities
        grid = arm.grid(self._context(arm, cell.host, raw, cell.seed, {}, modalities))
        higher = raw.primary not in LOWER_IS_BETTER
        best: dict[str, Any] | None = None
        selection = []
        failed: dict[str, Any] | None = None
        for setting in grid:
            try:
                result = self._train(cell, arm, data, raw, fold, stats, modalities, setting)
            except Diverged as exc:
                failed = {**exc.args[0], "setting": setting, "why": exc.args[1]}
                if len(grid) > 1:
                    selection.append({"setting": setting, "valid": float("nan")})
                continue
            valid = result["metrics"]["valid"]
            if len(grid) > 1:
                selection.append({"setting": setting, "valid": valid[raw.primary]})
            score = (valid[raw.primary], valid["loss"])
            if best is None or _better(score, best["score"], higher):
                best = {**result, "score": score, "setting": setting}
        stopped = None
        if best is None:  # every setting diverged: a failed cell, recorded and counted
            assert failed is not None
            nan = {raw.primary: float("nan"), "loss": float("nan")}
            best = {**failed, "metrics": {"valid": dict(nan), "test": dict(nan)}}
            best["train"] = {**best["train"], "stopped": "non-finite", "why": failed["why"]}
            stopped = "non-finite"
        if self._env is None:
            self._env = environment()
        entry = self.registry.bench_hosts.entry(cell.host)
        settings = self.cell_settings(cell)
        record = {
            "schema_version": SCHEMA_VERSION,
            "status": "done",
            "stopped": stopped or best["train"]["stopped"],
            "cell_digest": cell_digest(settings),
            "cell_settings": settings,
            "train_digest": train_digest(fold.train),
            "independent_seeds": bool(raw.extras.get("independent_seeds", False)),
            "suite": s.summary(),
            "data": dict(raw.summary()),
            "host": {
                "name": cell.host,
                "description": entry.description,
                "changes": list(best["changes"]),
            },
            "arm": {
                "name": arm.name,
                "kind": arm.kind,
                "description": arm.description,
                "changes": dict(arm.changes),
                "paper": arm.paper,
                "settings_tried": len(grid),
                **best.get("arm_record", {}),
            },
            "setting": best["setting"],
            "selection": selection,
            "primary": raw.primary,
            "higher_is_better": higher,
            "metrics": best["metrics"],
            "sizes": {"train": len(fold.train), "valid": len(fold.valid), "test": len(fold.test)},
            "curves": best["curves"],
            "best_epoch": best["best_epoch"],
            "epochs_run": best["epochs_run"],
            "epoch_cap": s.epochs,
            "patience": s.patience,
            "train": best["train"],
            "parameters": best["parameters"],
            "time": {**best["time"], "wall_s": time.perf_counter() - start},
            "shares": best["shares"],
            "parts": best["parts"],
            "contributions": best["contributions"],
            "truth": raw.extras.get("truth"),
            "env": self._env,
        }
        if best["block_config"] is not None:
            record["block_config"] = best["block_config"]
        if save_model is not None:
            if "state" not in best:
                raise RunnerError(f"{cell.text()}: every setting diverged; no model to save.")
            Path(save_model).parent.mkdir(parents=True, exist_ok=True)
            torch.save(best["state"], save_model)
        return record

    def _predict(
        self,
        run: Any,
        data: BenchData,
        rows: np.ndarray,
        batch: int,
        handle: Any,
        arm: ArmRun | None = None,
    ) -> tuple[np.ndarray, dict[str, float] | None]:
        outs: list[np.ndarray] = []
        shares: dict[str, float] = {}
        weight = 0
        for inputs, _, idx in run.batches(data, rows, batch, None):
            with autocast(self.device, self.precision):
                out = run.predict(inputs)
                if arm is not None:
                    out = arm.predict(out, inputs)
            outs.append(out.detach().float().cpu().numpy())
            if handle is not None:
                got = handle.stats().get("shares") or {}
                for m, v in got.items():
                    shares[m] = shares.get(m, 0.0) + float(v) * len(idx)
                weight += len(idx) if got else 0
        out = np.concatenate(outs)
        return out, ({m: v / weight for m, v in shares.items()} if weight else None)

    def _train(
        self,
        cell: Cell,
        arm: ArmSpec,
        data: BenchData,
        raw: BenchData,
        fold: Fold,
        stats: dict[str, Any],
        modalities: tuple[str, ...],
        setting: dict[str, Any],
    ) -> dict[str, Any]:
        """Train one setting of a cell: build and inject (:meth:`_prepare`), epochs with early
        stopping on the validation primary metric (:meth:`_epoch`, :meth:`_Training.track`),
        then score the best epoch (:meth:`_score_best`). Raises :class:`Diverged` with what
        the record says when the training goes non-finite."""
        t = self._prepare(cell, arm, data, modalities, setting)
        rng = t.rng
        higher = raw.primary not in LOWER_IS_BETTER
        stopped = "patience"
        epoch_data = data
        for epoch in range(self.suite.epochs):
            if raw.redraw is not None:
                epoch_data = _redrawn(data, raw, fold.train, stats, rng)
            train_loss, valid = self._epoch(t, epoch, epoch_data, data, fold)
            t.track(epoch, train_loss, valid, raw.primary, higher)
            if epoch - t.best_epoch >= self.suite.patience:
                break
        else:
            stopped = "epoch cap"
        done = self._score_best(t, data, fold)
        done["train"] = {**done["train"], "stopped": stopped}
        return done

    def _prepare(
        self,
        cell: Cell,
        arm: ArmSpec,
        data: BenchData,
        modalities: tuple[str, ...],
        setting: dict[str, Any],
    ) -> _Training:
        """Build the host from the cell's seed, inject the arm's block (or control) at the
        host's sites, attach the optimizer groups, and read the recipe's batch size."""
        import pgm_plugins as pp

        s = self.suite
        # first stages are built before the host: building one seeds the RNG from the cell
        first = (
            {arm.first_stage: self._first_stage(arm.first_stage, cell, data, modalities)}
            if arm.first_stage
            else {}
        )
        run = self._build(cell.host, data, cell.seed, modalities)
        rng = np.random.default_rng(cell.seed)
        host_params = count_parameters(run.model)
        handle = None
        block_config = None
        arm_run = arm.make(self._context(arm, cell.host, data, cell.seed, setting, modalities))
        arm_run.first_stages = first
        factory = arm_run.block_factory()
        if factory is not None:
            config = self._block_settings(run, data)
            handle = pp.inject(run.model, sites=run.sites, config=config, block_factory=factory)
            block_config = handle.block.config.to_dict()
        block_params = count_parameters(run.model) - host_params
        if self._ranks is not None and self.device.type == "cuda":
            # batch statistics of the global batch (torch syncs batch norm on GPUs only)
            run.model = nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
        run.to(self.device)
        arm_run.attach(run, handle)
        lr_scale = arm_run.lr_scale()
        optimizers = run.optimizers(handle, lr_scale=lr_scale)
        if self._ranks is not None:
            if not isinstance(getattr(run, "train_model", None), nn.Module):
                raise RunnerError(
                    f"bench host {cell.host!r} ({type(run).__name__}) has no train_model: under "
                    "torchrun the runner sets it to the model's DistributedDataParallel wrapper, "
                    "and the host's stages must call it for the training forward (see "
                    "pgm_plugins.bench.bench_host.HostRun); run it in one process."
                )
            run.train_model = self._ranks.wrap(run.model, self.device)
            _seed_all(cell.seed * 1000 + self._ranks.rank)  # per-rank dropout masks
        stepper = Stepper(
            run.model,
            optimizers,
            handle=handle,
            device=self.device,
            precision=self.precision,
            arm=arm_run,
        )
        recipe = dict(getattr(run, "recipe", {}) or {})
        return _Training(
            run=run,
            rng=rng,
            handle=handle,
            block_config=block_config,
            host_params=host_params,
            block_params=block_params,
            recipe=recipe,
            batch=s.batch or int(recipe.get("batch", 64)),
            threads=self.threads,
            lr_scale=lr_scale,
            best_state=copy.deepcopy(run.model.state_dict()),
            stepper=stepper,
            device=self._device_text(),
            precision=self.precision,
            ranks=self._ranks,
        )

    def _epoch(
        self, t: _Training, epoch: int, epoch_data: BenchData, data: BenchData, fold: Fold
    ) -> tuple[float, dict[str, float]]:
        """One epoch over the training rows, then the validation metrics: ``(mean training
        loss, valid metrics)``. A non-finite loss or prediction ends the cell as failed."""
        t0 = time.perf_counter()
        total, n = 0.0, 0
        try:
            for inputs, targets, rows in self._train_batches(t, epoch_data, fold.train):
                if t.stepper.arm is not None:
                    t.stepper.arm.on_batch(inputs, targets, rows)
                terms = t.stepper.step(t.run.stages(inputs, targets, rows), targets)
                if t.ranks is None:
                    loss, size = float(terms["loss"]), len(rows)
                else:  # the global batch's loss, on every rank: one decision
                    loss, size = t.ranks.global_loss(terms["loss"], len(rows))
                if not math.isfinite(loss):
                    raise Diverged(f"non-finite training loss ({loss}) at epoch {epoch + 1}")
                total += loss * size
                n += size
                t.steps += 1
            t.run.next_epoch()
            t.stepper.arm.after_epoch()
            t.train_s += time.perf_counter() - t0
            valid = self._validate(t, data, fold, epoch)
        except Diverged as exc:
            t.fail(str(exc))
        except NonFiniteError as exc:
            t.fail(f"the block refused non-finite inputs at epoch {epoch + 1} ({exc})")
        return total / max(n, 1), valid

    def _train_batches(
        self, t: _Training, data: BenchData, rows: np.ndarray
    ) -> Iterator[tuple[Any, torch.Tensor, np.ndarray]]:
        """The training batches of one epoch: the host's own, or under torchrun this rank's
        chunk of each global batch (drawn from the cell's generator as one process draws them,
        see :mod:`pgm_plugins.bench.distributed`)."""
        if t.ranks is None:
            yield from t.run.batches(data, rows, t.batch, t.rng)
            return
        for idx in batch_rows(rows, t.batch, t.rng):
            part = t.ranks.split(idx)
            yield from t.run.batches(data, part, len(part), None)

    def _validate(self, t: _Training, data: BenchData, fold: Fold, epoch: int) -> dict[str, float]:
        """The validation metrics after an epoch; under torchrun computed on rank 0 and
        broadcast, so every rank stops early and keeps the same best epoch. Raises
        :class:`Diverged` on non-finite predictions."""
        why: str | None = None
        valid: dict[str, float] | None = None
        if t.ranks is None or t.ranks.main:
            try:
                out, _ = self._predict(t.run, data, fold.valid, t.batch, None, t.stepper.arm)
            except NonFiniteError as exc:
                if t.ranks is None:
                    raise
                why = f"the block refused non-finite inputs at epoch {epoch + 1} ({exc})"
            else:
                if not np.isfinite(out).all():
                    why = f"non-finite validation predictions at epoch {epoch + 1}"
                else:
                    valid = metrics_of(data, fold.valid, out)
        if t.ranks is not None:
            why, valid = t.ranks.broadcast((why, valid))
        if why is not None:
            raise Diverged(why)
        assert valid is not None
        return valid

    def _block_settings(self, run: Any, data: BenchData) -> dict[str, Any]:
        """The ``PgMConfig`` fields of a block in ``run``: the task, the suite's ``[block]``
        table, and what the host needs (its ``block_config``)."""
        return {
            "task": data.task,
            "num_classes": data.num_classes if data.task == "classification" else None,
            **self.suite.block,
            **dict(getattr(run, "block_config", None) or {}),
        }

    def first_stage_cell(self, name: str, cell: Cell) -> Cell:
        """The cell of the first stage ``name`` that ``cell`` reuses (same host, fold, seed)."""
        return Cell(cell.dataset, cell.protocol, cell.host, name, cell.fold, cell.seed)

    def _first_stage_prerequisite(self, name: str, cell: Cell) -> Prerequisite:
        """The prerequisite that trains and keeps the first stage ``name`` of ``cell``."""
        first = self.first_stage_cell(name, cell)
        return Prerequisite(
            key={
                **first.key(self.suite.name),
                "cell_digest": cell_digest(self.cell_settings(first)),
            },
            build="pgm_plugins.bench.stages:build_first_stage",
            description=f"first stage {first.text()}",
            files=(MODEL_FILE, RECORD_FILE),
        )

    def _first_stage(
        self, name: str, cell: Cell, data: BenchData, modalities: tuple[str, ...]
    ) -> FirstStage:
        """The first stage ``name`` of ``cell``, loaded from its built artifact and frozen; kept
        for the cell's next setting (a grid trains several against the same first stage)."""
        import pgm_plugins as pp

        key = (name, cell)
        if self._first_kept is not None and self._first_kept[0] == key:
            return self._first_kept[1]

        prerequisite = self._first_stage_prerequisite(name, cell)
        folder = prerequisite.path(self.folder)
        if not prerequisite.built(self.folder):
            raise RunnerError(
                f"{cell.text()}: its first stage {name!r} is not built ({folder} lacks "
                f"{', '.join(prerequisite.missing(self.folder))}); run `pgm bench run` again: it "
                "builds a missing or incomplete first stage before the cells that need it."
            )
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        spec = self.arm(name)
        run = self._build(cell.host, data, cell.seed, modalities)
        made = spec.make(
            self._context(spec, cell.host, data, cell.seed, record.get("setting") or {}, modalities)
        )
        factory = made.block_factory()
        if factory is None:
            raise RunnerError(
                f"arm {cell.arm!r}: its first stage {name!r} injects no block, so it has no "
                "site features to pass on; name an arm with a block as first_stage."
            )
        handle = pp.inject(
            run.model,
            sites=run.sites,
            config=self._block_settings(run, data),
            block_factory=factory,
        )
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        run.model.load_state_dict(state)
        run.to(self.device)
        stage = FirstStage(name, run, handle, record)
        self._first_kept = (key, stage)
        return stage

    def _score_best(self, t: _Training, data: BenchData, fold: Fold) -> dict[str, Any]:
        """Restore the best epoch, score validation and test (the block's shares on test),
        sample the uni / paired parts, measure the contributions (``contributions.py``), and
        take the block out."""
        t.run.model.load_state_dict(t.best_state)
        metrics = {}
        shares = None
        for split, rows in (("valid", fold.valid), ("test", fold.test)):
            try:
                out, got = self._predict(t.run, data, rows, t.batch, t.handle, t.stepper.arm)
            except NonFiniteError as exc:
                t.fail(f"the block refused non-finite inputs on {split} ({exc})")
            if not np.isfinite(out).all():
                t.fail(f"non-finite {split} predictions of the best epoch")
            metrics[split] = metrics_of(data, rows, out)
            if split == "test":
                shares = got
        parts = self._parts(t.run, data, fold.test, t.handle) if t.handle is not None else None
        t0 = time.perf_counter()
        contributions = measure_contributions(
            t.run,
            data,
            fold.train,
            fold.test,
            t.handle,
            batch=t.batch,
            device=self.device,
            precision=self.precision,
            arm=t.stepper.arm,
        )
        t.contributions_s = time.perf_counter() - t0
        if t.handle is not None:
            t.handle.remove()
        # the best epoch's weights with the block (a first stage saves them; not in the record)
        return t.outcome(
            metrics=metrics,
            shares=shares if shares else None,
            parts=parts,
            contributions=contributions,
            state=t.best_state,
        )

    def _parts(
        self, run: Any, data: BenchData, test: np.ndarray, handle: Any
    ) -> dict[str, Any] | None:
        """Pooled uni / paired parts of up to 200 test rows (one eval forward)."""
        from pgm_plugins.block.mlp import masked_mean

        rows = np.asarray(test)[:PARTS_ROWS]
        inputs, _, idx = next(iter(run.batches(data, rows, len(rows), None)))
        with autocast(self.device, self.precision):
            run.predict(inputs)
        try:
            parts = handle.parts
        except Exception:  # controls have no partition
            return None
        if not parts:
            return None
        out: dict[str, Any] = {}
        for m, p in parts.items():

            def pool(t: torch.Tensor, mask: Any = p.mask) -> list[list[float]]:
                t = t if t.dim() == 3 else t.unsqueeze(1)
                v = masked_mean(t.float(), mask).cpu().numpy()
                return np.round(v, 4).tolist()

            out[m] = {"uni": pool(p.uni), "paired": pool(p.paired), "y": data.y[idx].tolist()}
        return out


def _results_source(root: Path) -> str:
    """`` (from $PGM_RESULTS_DIR)`` when that variable chose ``root``, else ``""``."""
    value = os.environ.get(RESULTS_ENV, "").strip()
    return f" (from ${RESULTS_ENV})" if value and Path(value).expanduser() == root else ""


def _block_defaults() -> dict[str, Any]:
    """Every ``PgMConfig`` field's default in the installed code (JSON-ready)."""
    import dataclasses

    from pgm_plugins.block import PgMConfig

    out: dict[str, Any] = {}
    for f in dataclasses.fields(PgMConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _code_versions(registry: Any, plugin: str, factory: Any) -> dict[str, str | None]:
    """The code a cell runs: this package's version and code digest
    (:func:`~pgm_plugins.bench.results.code_digest`: any change to what the code does, a default,
    a recipe, a loader), and the same for the package that defines the host's factory and the
    distribution whose plugin registered it."""
    from pgm_plugins._version import __version__

    out: dict[str, str | None] = {
        "pgm_plugins": __version__,
        "pgm_plugins code": code_digest("pgm_plugins"),
    }
    top = str(getattr(factory, "__module__", "") or "").split(".")[0]
    if top and top != "pgm_plugins":
        out[f"{top} code"] = code_digest(top)
    info = registry.plugins.get(plugin)
    if info is not None and info.distribution:
        out[info.distribution] = info.version
    return out


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def filters_error(exc: Exception) -> bool:
    """Is ``exc`` a bad-input error the CLI reports with exit status 2?"""
    return isinstance(exc, (RunnerError, SuiteError, PgMError))
