"""Executors: where a grid's cells run, and the one driver loop that hands them out.

Three executors share one small interface (:class:`Executor`: open, submit a job, wait for
finished ones, close):

- :class:`InProcess`: every cell in the driver, one after another (debugging; the behaviour of
  ``pgm bench run`` without ``--jobs``). Plugins registered inline in the driver work here.
- :class:`ProcessPool` (``--jobs N``): ``concurrent.futures.ProcessPoolExecutor`` with N
  spawned workers, each with its own torch thread count and device (with ``device = "cuda"`` and
  several visible GPUs, worker *i* gets ``cuda:(i % count)``).
- :class:`RayExecutor` (``--executor ray``): Ray's task API on an existing cluster
  (``--address``) or on a local one started for the run and shut down after; each task asks
  ``num_cpus = threads`` and, on CUDA, ``num_gpus = 1``.

Workers rebuild a :class:`~pgm_plugins.bench.runner.Runner` from a picklable
:class:`WorkerSpec` (the suite, results root, data folder, threads, the runner's keyword options
and the driver's plugins by module name) and return records; only the driver writes them
(atomically, into its one ``ResultStore``), so results are the same whichever executor ran them.
A worker process sees the plugins of installed entry points and of modules it can import; a
plugin registered inline in the driver (a module made at run time) does not reach it.

:func:`run_grid` is the driver: per-cell claims (:mod:`pgm_plugins.bench.claims`), prerequisites
first (:mod:`pgm_plugins.bench.prerequisites`), retries for infrastructure failures only (a
killed worker, out of memory; a pool broken by a killed worker is rebuilt and the other cells in
flight resubmitted without counting against them), one progress display
(:mod:`pgm_plugins.bench.progress`). A cell that diverges is a result (the runner records it);
any other exception fails that cell alone: the grid goes on and the summary names it.
``docs/architecture.md`` shows where this sits.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import types
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgm_plugins.bench.claims import Claim, Claims
from pgm_plugins.bench.prerequisites import ARTIFACTS_DIR, Prerequisite
from pgm_plugins.bench.progress import Progress

if TYPE_CHECKING:
    from pgm_plugins.bench.runner import Cell, Runner
    from pgm_plugins.bench.suite import Suite

__all__ = [
    "EXECUTORS",
    "Executor",
    "InProcess",
    "Job",
    "Outcome",
    "ProcessPool",
    "RayExecutor",
    "WorkerSpec",
    "make_executor",
    "run_grid",
]

#: the names ``--executor`` takes
EXECUTORS = ("inprocess", "pool", "ray")
RAY_INSTALL = "pip install 'pgm-plugins[ray]'"


# ---------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One unit of work: a cell (its record comes back) or a prerequisite (built into ``out``)."""

    name: str  #: its claim name
    text: str  #: as the progress display shows it
    cell: Cell | None = None
    prerequisite: Prerequisite | None = None
    out: str | None = None  #: the prerequisite's temporary build folder


@dataclass
class Outcome:
    """What came back for job ``job_id``: a record, or an error (the last line of its traceback)
    and whether it was an infrastructure failure (retried)."""

    job_id: int
    record: dict[str, Any] | None = None
    error: str | None = None
    infra: bool = False
    trace: str | None = None


def _is_infrastructure(exc: BaseException) -> bool:
    """Out of memory (host or device), a killed worker: what a retry may fix."""
    if isinstance(exc, (MemoryError, BrokenProcessPool)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(
        names
        & {"OutOfMemoryError", "WorkerCrashedError", "NodeDiedError", "ActorDiedError", "OOMError"}
    )


def _last_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def execute(runner: Runner, job_id: int, job: Job) -> Outcome:
    """Run ``job`` with ``runner`` here and now; every exception becomes an :class:`Outcome`
    (``KeyboardInterrupt`` and ``SystemExit`` pass)."""
    try:
        if job.cell is not None:
            return Outcome(job_id, record=runner.run_cell(job.cell))
        assert job.prerequisite is not None and job.out is not None
        job.prerequisite.function()(runner, job.prerequisite, Path(job.out))
        return Outcome(job_id, record={})
    except Exception as exc:
        return Outcome(
            job_id,
            error=_last_line(exc),
            infra=_is_infrastructure(exc),
            trace=traceback.format_exc(),
        )


# ---------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the driver's runner: picklable, sent with every job."""

    suite: Suite
    results: str
    data_dir: str | None
    threads: int
    #: the runner's keyword options (``device``, ``precision``, ...), passed through as given
    options: dict[str, Any] = field(default_factory=dict)
    #: the driver's plugins a worker imports: (name, module, distribution, version)
    plugins: tuple[tuple[str, str, str | None, str | None], ...] = ()
    #: the driver's plugins that cannot reach a worker (registered inline)
    inline: tuple[str, ...] = ()
    #: the driver's runner class (a subclass travels by reference: importable in workers)
    runner_class: type | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def from_runner(cls, runner: Runner, options: dict[str, Any] | None = None) -> WorkerSpec:
        plugins, inline = _portable_plugins(runner.registry)
        return cls(
            suite=runner.suite,
            results=str(runner.root),
            data_dir=str(runner.data_dir) if runner.data_dir is not None else None,
            threads=runner.threads,
            options=dict(options or {}),
            plugins=tuple(plugins),
            inline=tuple(inline),
            runner_class=type(runner),
        )

    def check(self, runner: Runner, cells: Sequence[Cell]) -> None:
        """Raise a ``RunnerError`` before anything runs when a data set or host the cells need
        comes from a plugin workers cannot import."""
        from pgm_plugins.bench.runner import RunnerError

        needed = {runner.registry.datasets.entry(runner.suite.dataset).plugin: "data set"}
        for host in sorted({c.host for c in cells}):
            needed.setdefault(runner.registry.bench_hosts.entry(host).plugin, f"host {host!r}")
        bad = [f"{what} (plugin {p!r})" for p, what in needed.items() if p in self.inline]
        if bad:
            raise RunnerError(
                f"{', '.join(bad)} is registered inline in this process; worker processes load "
                "plugins from entry points (group 'pgm_plugins') and importable modules only. "
                "Install the plugin as an entry point or put it in an importable module, or run "
                "with --executor inprocess."
            )


def _portable_plugins(registry: Any) -> tuple[list[tuple[str, str, Any, Any]], list[str]]:
    """The driver's plugins as (name, module, distribution, version) for those a worker can
    import by module name, and the names of the others."""
    portable, inline = [], []
    for name, info in registry.plugins.items():
        if name == "pgm_plugins.builtin" or info.error:
            continue
        plugin = registry.pm.get_plugin(name)
        module = getattr(plugin, "__name__", None)
        if (
            isinstance(plugin, types.ModuleType)
            and module
            and getattr(plugin, "__file__", None)
            and sys.modules.get(module) is plugin
        ):
            portable.append((name, module, info.distribution, info.version))
        else:
            inline.append(name)
    return portable, inline


#: the worker process's state: its runner per spec token, its index and device
_WORKER: dict[str, Any] = {"token": None, "runner": None, "index": 0, "started": None}


def _init_pool_worker(started: Any, counter: Any) -> None:
    """A pool worker's initializer: its index (for its device) and the queue it reports the
    jobs it starts on (how the driver knows whose worker died); and a watch on the driver, so
    a driver killed outright (SIGKILL, the OOM killer) takes its workers with it: they would
    otherwise wait forever on its queue."""
    with counter.get_lock():
        _WORKER["index"] = counter.value
        counter.value += 1
    _WORKER["started"] = started
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), name="pgm-driver-watch", daemon=True
        ).start()


def _exit_with(parent: Any) -> None:
    """Wait for the driver process to end, then end this worker at once (its cell in progress
    is abandoned: only the driver writes records)."""
    parent.join()
    os._exit(1)


def _worker_device(device: Any, index: int) -> Any:
    """``cuda`` (or ``auto`` with CUDA) and several visible GPUs: ``cuda:(index % count)``."""
    if device not in ("cuda", "auto"):
        return device
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    return f"cuda:{index % torch.cuda.device_count()}"


def _worker_runner(spec: WorkerSpec) -> Runner:
    """The worker's runner for ``spec`` (built once per process and spec: the data set loads
    once per worker)."""
    import torch

    if _WORKER["token"] != spec.token:
        from pgm_plugins.bench.runner import Runner
        from pgm_plugins.registry import PluginRegistry

        registry = PluginRegistry(load_entry_points=False)
        for name, module, dist, version in spec.plugins:
            registry.register_plugin(importlib.import_module(module), name, dist, version)
        registry.refresh()
        options = dict(spec.options)
        if "device" in options:
            options["device"] = _worker_device(options["device"], _WORKER["index"])
        _WORKER["runner"] = (spec.runner_class or Runner)(
            spec.suite,
            spec.results,
            data_dir=spec.data_dir,
            threads=spec.threads,
            quiet=True,
            registry=registry,
            **options,
        )
        _WORKER["token"] = spec.token
    torch.set_num_threads(spec.threads)
    runner: Runner = _WORKER["runner"]
    return runner


def _missing_in_worker(runner: Runner, spec: WorkerSpec, job: Job) -> str | None:
    if job.cell is None:
        return None
    for kind, registry, name in (
        ("data set", runner.registry.datasets, runner.suite.dataset),
        ("bench host", runner.registry.bench_hosts, job.cell.host),
    ):
        if name not in registry.names():
            inline = f" (registered inline in the driver: {', '.join(spec.inline)})"
            return (
                f"{kind} {name!r} is not registered in worker process {os.getpid()}: workers "
                "load plugins from entry points (group 'pgm_plugins') and importable modules "
                f"only{inline if spec.inline else ''}; install the plugin, or run with "
                "--executor inprocess."
            )
    return None


def work(spec: WorkerSpec, job_id: int, job: Job) -> Outcome:
    """A worker's task: report the start (pool workers), rebuild the runner, run the job."""
    started = _WORKER["started"]
    if started is not None:
        started.put((job_id, os.getpid()))
    try:
        runner = _worker_runner(spec)
    except Exception as exc:
        return Outcome(job_id, error=_last_line(exc), trace=traceback.format_exc())
    missing = _missing_in_worker(runner, spec, job)
    if missing is not None:
        return Outcome(job_id, error=missing)
    return execute(runner, job_id, job)


# ---------------------------------------------------------------------- executors
class Executor:
    """Runs jobs somewhere. ``slots``: how many at once (the driver keeps at most that many in
    flight, so it never holds claims on cells that only wait in a queue)."""

    name = "executor"
    slots = 1

    def open(self, spec: WorkerSpec, runner: Runner) -> None:
        """Start (workers, a cluster); called once before the first :meth:`submit`."""

    def submit(self, job_id: int, job: Job) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None) -> list[Outcome]:
        """The jobs finished since the last call; blocks until one is, or ``timeout`` (then
        possibly none)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop what :meth:`open` started (idempotent)."""

    def describe(self) -> str:
        return self.name


class InProcess(Executor):
    """Every job in the driver process, in order (``wait`` runs the next one)."""

    name = "inprocess"

    def __init__(self) -> None:
        self._queue: deque[tuple[int, Job]] = deque()
        self._runner: Runner | None = None

    def open(self, spec: WorkerSpec, runner: Runner) -> None:
        import torch

        self._runner = runner
        torch.set_num_threads(runner.threads)

    def submit(self, job_id: int, job: Job) -> None:
        self._queue.append((job_id, job))

    def wait(self, timeout: float | None) -> list[Outcome]:
        if not self._queue:
            return []
        assert self._runner is not None
        job_id, job = self._queue.popleft()
        return [execute(self._runner, job_id, job)]

    def describe(self) -> str:
        return "in process"


class ProcessPool(Executor):
    """``jobs`` spawned worker processes (``concurrent.futures.ProcessPoolExecutor``)."""

    name = "pool"

    def __init__(self, jobs: int, *, max_tasks_per_child: int | None = None) -> None:
        self.slots = jobs
        self.max_tasks_per_child = max_tasks_per_child
        self._ctx = mp.get_context("spawn")
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future[Outcome], tuple[int, Job]] = {}
        self._pids: dict[int, int] = {}
        self._spec: WorkerSpec | None = None

    def open(self, spec: WorkerSpec, runner: Runner) -> None:
        self._spec = spec
        self._counter = self._ctx.Value("i", 0)
        self._new_pool()

    def _new_pool(self) -> None:
        self._started = self._ctx.SimpleQueue()
        self._pids = {}
        self._unsubmitted: list[tuple[int, Job]] = []
        self._pool = cf.ProcessPoolExecutor(
            self.slots,
            mp_context=self._ctx,
            initializer=_init_pool_worker,
            initargs=(self._started, self._counter),
            max_tasks_per_child=self.max_tasks_per_child,
        )

    def submit(self, job_id: int, job: Job) -> None:
        assert self._pool is not None and self._spec is not None
        try:
            future = self._pool.submit(work, self._spec, job_id, job)
        except BrokenProcessPool:  # a worker died since the last wait: submitted after rebuild
            self._unsubmitted.append((job_id, job))
            return
        self._futures[future] = (job_id, job)

    def _drain(self) -> None:
        while not self._started.empty():
            job_id, pid = self._started.get()
            self._pids[job_id] = pid

    def wait(self, timeout: float | None) -> list[Outcome]:
        if not self._futures:
            return self._rebuild([]) if self._unsubmitted else []
        done, _ = cf.wait(list(self._futures), timeout, return_when=cf.FIRST_COMPLETED)
        self._drain()  # read the start notes now: a full pipe would block the workers
        out: list[Outcome] = []
        broken: list[tuple[int, Job]] = []
        for future in done:
            job_id, job = self._futures.pop(future)
            exc = future.exception()
            if isinstance(exc, BrokenProcessPool):
                broken.append((job_id, job))
            elif exc is not None:  # the job did not reach the worker (e.g. not picklable)
                out.append(Outcome(job_id, error=_last_line(exc), infra=_is_infrastructure(exc)))
            else:
                out.append(future.result())
                self._pids.pop(job_id, None)
        if broken:
            out += self._rebuild(broken)
        return out

    def _rebuild(self, broken: list[tuple[int, Job]]) -> list[Outcome]:
        """A worker died: every job in flight failed with it. Charge the jobs whose worker
        died (all that had started when that cannot be told), resubmit the others to a new
        pool."""
        cf.wait(list(self._futures))  # the rest of the broken pool's futures
        broken += [self._futures.pop(f) for f in list(self._futures)]
        broken += self._unsubmitted
        self._unsubmitted = []
        assert self._pool is not None
        # the exit codes settle it: the worker that died has its own; the pool terminated the
        # survivors (SIGTERM) or they left on their own (0)
        procs = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=True)
        killed = {pid for pid, p in procs.items() if p.exitcode not in (None, 0, -signal.SIGTERM)}
        self._drain()
        dead = {j for j, pid in self._pids.items() if pid in killed}
        if not dead:  # cannot be told (the pool's workers unknown): every started job
            dead = {j for j, _ in broken if j in self._pids}
        self._new_pool()
        out = []
        for job_id, job in sorted(broken, key=lambda b: b[0]):
            if job_id in dead:
                out.append(
                    Outcome(
                        job_id,
                        error="its worker process died (killed, or out of memory)",
                        infra=True,
                    )
                )
            else:
                self.submit(job_id, job)
        return out

    def close(self) -> None:
        if self._pool is not None:
            for future in self._futures:
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._futures.clear()

    def describe(self) -> str:
        return f"{self.slots} worker processes"


class RayExecutor(Executor):
    """Ray tasks on the cluster at ``address`` (default ``$RAY_ADDRESS``, Ray's own setting),
    else on a new local cluster started here and shut down by :meth:`close` (never one a
    ``ray start`` left running, which a bare ``ray.init()`` would join); a Ray already
    initialised in this process is used as it is."""

    name = "ray"

    def __init__(self, address: str | None = None, *, jobs: int | None = None) -> None:
        self.address = address
        self.jobs = jobs
        self._ours = False
        self._refs: dict[Any, tuple[int, Job]] = {}
        self._spec: WorkerSpec | None = None
        self._where = "a Ray cluster"

    def open(self, spec: WorkerSpec, runner: Runner) -> None:
        ray = _import_ray()
        self._spec = spec
        device = str(spec.options.get("device") or "cpu")
        gpu = device.startswith("cuda")
        if ray.is_initialized():
            self._where = "the Ray this process had started"
        else:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            address = self.address or os.environ.get("RAY_ADDRESS") or "local"
            if address != "local":
                kwargs["address"] = address
                self._where = address if self.address else f"{address} (from $RAY_ADDRESS)"
            else:
                kwargs["address"] = "local"
                self._where = "a new local Ray cluster"
                if self.jobs:
                    kwargs["num_cpus"] = self.jobs * spec.threads
                # a local cluster's workers import what this process can (a suite's own plugins)
                paths = [p for p in sys.path if p]
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
            ray.init(**kwargs)
            self._ours = True
        resources = ray.cluster_resources()
        per = 1 if gpu else spec.threads
        fit = int(resources.get("GPU" if gpu else "CPU", 1) // per)
        self.slots = max(1, min(self.jobs, fit) if self.jobs else fit)
        self._task = ray.remote(work).options(
            num_cpus=spec.threads, num_gpus=1 if gpu else 0, max_retries=0
        )
        self._ray = ray

    def submit(self, job_id: int, job: Job) -> None:
        self._refs[self._task.remote(self._spec, job_id, job)] = (job_id, job)

    def wait(self, timeout: float | None) -> list[Outcome]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            job_id, _job = self._refs.pop(ref)
            try:
                out.append(self._ray.get(ref))
            except Exception as exc:  # the task's own errors come back as Outcomes
                out.append(Outcome(job_id, error=_last_line(exc), infra=_is_infrastructure(exc)))
        return out

    def close(self) -> None:
        for ref in self._refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._ours:
            self._ray.shutdown()
            self._ours = False

    def describe(self) -> str:
        return f"Ray ({self._where}, {self.slots} at once)"


def _import_ray() -> Any:
    from pgm_plugins.bench.runner import RunnerError

    try:
        import ray
    except ImportError:
        raise RunnerError(
            f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}"
        ) from None
    return ray


def make_executor(name: str, *, jobs: int | None = None, address: str | None = None) -> Executor:
    """The executor ``--executor NAME`` (``--jobs``, ``--address``) asks for; checks that Ray is
    installed for ``ray``. ``jobs``: cells at once (Ray: default as many as the cluster fits)."""
    from pgm_plugins.bench.runner import RunnerError
    from pgm_plugins.errors import choices_text, did_you_mean

    if name not in EXECUTORS:
        raise RunnerError(
            f"--executor {name!r} is not one of {choices_text(EXECUTORS)}."
            + did_you_mean(name, EXECUTORS)
        )
    if name == "ray":
        _import_ray()
        return RayExecutor(address, jobs=jobs)
    if address:
        raise RunnerError(f"--address is for --executor ray (given --executor {name}).")
    if name == "pool":
        return ProcessPool(jobs or 1)
    if jobs is not None and jobs > 1:
        raise RunnerError(
            f"--jobs {jobs} runs worker processes; --executor inprocess runs one cell at a time. "
            "Give --executor pool (or leave --executor out)."
        )
    return InProcess()


# ---------------------------------------------------------------------- the driver
@dataclass
class _Grid:
    """The driver's state while it hands out the jobs of one phase."""

    runner: Runner
    executor: Executor
    claims: Claims
    progress: Progress
    retries: int
    jobs: dict[int, Job] = field(default_factory=dict)
    held: dict[int, Claim] = field(default_factory=dict)
    waiting: dict[int, Job] = field(default_factory=dict)
    attempts: Counter[int] = field(default_factory=Counter)
    failed: dict[int, str] = field(default_factory=dict)
    built: set[int] = field(default_factory=set)
    ran: int = 0
    others: int = 0
    retried: int = 0
    started: dict[int, float] = field(default_factory=dict)

    def is_done(self, job: Job) -> bool:
        if job.cell is not None:
            return self.runner.done([job.cell])[0]
        assert job.prerequisite is not None
        return job.prerequisite.built(self.runner.folder)

    def drive(self, ids: Sequence[int], poll: float) -> None:
        """Run ``ids`` to the end: claimed here, done by another run, or failed."""
        queue = deque(ids)
        inflight: set[int] = set()
        announced: set[tuple[int, ...]] = set()
        while queue or inflight or self.waiting:
            while queue and len(inflight) < self.executor.slots:
                job_id = queue.popleft()
                if self._start(job_id):
                    inflight.add(job_id)
            if inflight:
                for outcome in self.executor.wait(poll if self.waiting else None):
                    if not self._finish(outcome):
                        inflight.discard(outcome.job_id)
            elif self.waiting:
                key = tuple(sorted(self.waiting))
                if key not in announced:
                    announced.add(key)
                    self.progress.note(self.held_elsewhere("waiting for"))
                time.sleep(poll)
            for job_id, job in list(self.waiting.items()):
                if self.is_done(job):
                    del self.waiting[job_id]
                    self.others += 1
                    if job.cell is not None:
                        self.progress.skipped()
                elif self.claims.holder(job.name) is None:
                    del self.waiting[job_id]
                    queue.append(job_id)

    def held_elsewhere(self, verb: str) -> str:
        by_pid: dict[str, list[str]] = {}
        for job in self.waiting.values():
            by_pid.setdefault(self.claims.holder(job.name) or "none now", []).append(job.text)
        parts = [
            f"PID {pid}: {', '.join(texts[:3])}{' ...' if len(texts) > 3 else ''}"
            for pid, texts in sorted(by_pid.items())
        ]
        return f"{verb} {len(self.waiting)} job(s) held by another run ({'; '.join(parts)})"

    def _start(self, job_id: int) -> bool:
        """Claim and submit ``job_id``; False when it needs no run here (done, held)."""
        job = self.jobs[job_id]
        if self.is_done(job):
            self.others += 1
            if job.cell is not None:
                self.progress.skipped()
            return False
        claim = self.claims.take(job.name)
        if claim is None:
            self.waiting[job_id] = job
            return False
        if self.is_done(job):  # finished between the check and the claim
            claim.release()
            self.others += 1
            if job.cell is not None:
                self.progress.skipped()
            return False
        if job.cell is not None:
            self.claims.clean_temporaries(
                self.runner.store.path(job.cell.key(self.runner.suite.name))
            )
        else:
            assert job.prerequisite is not None and job.out is not None
            final = job.prerequisite.path(self.runner.folder)
            for stale in final.parent.glob(f".{final.name}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            lacking = job.prerequisite.discard_damaged(self.runner.folder)
            if lacking:
                self.progress.note(
                    f"{job.text}: {final} lacked {', '.join(lacking)}; building it again"
                )
            Path(job.out).mkdir(parents=True)
        self.held[job_id] = claim
        self.started[job_id] = time.perf_counter()
        self.executor.submit(job_id, job)
        self.progress.started(job.text)
        return True

    def _finish(self, outcome: Outcome) -> bool:
        """Handle a finished job; True when it was resubmitted (still in flight)."""
        job_id = outcome.job_id
        job = self.jobs[job_id]
        if outcome.error is None:
            if job.cell is not None:
                assert outcome.record is not None
                self.runner.store.write(job.cell.key(self.runner.suite.name), outcome.record)
                self.ran += 1
                self.progress.finished(job.text, outcome.record)
            else:
                assert job.prerequisite is not None and job.out is not None
                os.replace(job.out, job.prerequisite.path(self.runner.folder))
                self.built.add(job_id)
                self.progress.built(job.text, time.perf_counter() - self.started[job_id])
            self.held.pop(job_id).release()
            return False
        if outcome.infra and self.attempts[job_id] < self.retries:
            self.attempts[job_id] += 1
            self.retried += 1
            self.progress.note(
                f"{job.text}: {outcome.error}; retrying ({self.attempts[job_id]} of {self.retries})"
            )
            if job.out is not None:
                shutil.rmtree(job.out, ignore_errors=True)
                Path(job.out).mkdir(parents=True)
            self.executor.submit(job_id, job)
            return True
        why = outcome.error or "failed"
        if outcome.infra:
            n = self.attempts[job_id]
            why += f" (after {n} retr{'y' if n == 1 else 'ies'})"
        self.failed[job_id] = why
        if job.out is not None:
            shutil.rmtree(job.out, ignore_errors=True)
        self.progress.failed_cell(job.text, why, cell=job.cell is not None)
        self.held.pop(job_id).release()
        return False


def run_grid(
    runner: Runner,
    cells: Sequence[Cell],
    executor: Executor | None = None,
    *,
    retries: int = 1,
    options: dict[str, Any] | None = None,
    poll: float = 0.5,
) -> dict[str, Any]:
    """Run every cell of ``cells`` without a usable record, sharing the folder with any other
    run of the suite; returns counts, the failed cells (``failed``: ``[(cell text, why)]``),
    wall time and the folder. ``options``: the runner's keyword options, for workers."""
    from pgm_plugins.bench.runner import RunnerError

    if retries < 0:
        raise RunnerError(f"retries {retries}: give an integer >= 0.")
    executor = executor or InProcess()
    loaded = runner._load(cells)
    changed = runner.stale(cells, loaded)
    if changed:
        runner._refuse_stale(changed)
    todo = [c for c, r in zip(cells, loaded, strict=True) if r is None]
    skipped = len(cells) - len(todo)
    spec = WorkerSpec.from_runner(runner, options)
    if not isinstance(executor, InProcess):
        spec.check(runner, todo)
    start = time.perf_counter()
    progress = Progress(len(cells), skipped, label=runner.suite.name, quiet=runner.quiet)
    grid = _Grid(runner, executor, Claims(runner.folder), progress, retries)
    prereqs: dict[str, Prerequisite] = {}
    needs: dict[Cell, list[str]] = {}
    for cell in todo:
        needs[cell] = []
        for p in runner.prerequisites(cell):
            prereqs.setdefault(p.digest, p)
            needs[cell].append(p.digest)
    pid = os.getpid()
    prereq_ids: dict[str, int] = {}
    for digest, p in prereqs.items():
        job_id = len(grid.jobs)
        out = runner.folder / ARTIFACTS_DIR / f".{digest}.{pid}-{uuid.uuid4().hex[:8]}.tmp"
        grid.jobs[job_id] = Job(p.claim, p.text(), prerequisite=p, out=str(out))
        prereq_ids[digest] = job_id
    cell_ids = []
    for cell in todo:
        job_id = len(grid.jobs)
        name = runner.store.path(cell.key(runner.suite.name)).stem
        grid.jobs[job_id] = Job(name, cell.text(), cell=cell)
        cell_ids.append(job_id)
    opened = time.perf_counter()
    executor.open(spec, runner)
    opened = time.perf_counter() - opened
    try:
        grid.drive(list(prereq_ids.values()), poll)
        runnable = []
        for job_id in cell_ids:
            needy = grid.jobs[job_id].cell
            assert needy is not None
            lost = [prereqs[d] for d in needs[needy] if not prereqs[d].built(runner.folder)]
            if lost:
                why = f"{lost[0].text()} failed: {grid.failed.get(prereq_ids[lost[0].digest])}"
                grid.failed[job_id] = why
                progress.failed_cell(needy.text(), why)
            else:
                runnable.append(job_id)
        grid.drive(runnable, poll)
    except KeyboardInterrupt:
        progress.close()
        held = f"; {grid.held_elsewhere('still waiting for')}" if grid.waiting else ""
        print(
            f"\ninterrupted: {progress.done} of {len(cells)} cells done (files in "
            f"{runner.folder}); the cells in progress were not written{held}. Run the same "
            "command again to resume.",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        for claim in grid.held.values():
            claim.release()
        executor.close()
        progress.close()
    return {
        "cells": len(cells),
        "skipped": skipped,
        "ran": grid.ran,
        "others": grid.others,
        "retried": grid.retried,
        "built": len(grid.built),
        "failed": [
            (grid.jobs[j].text, why)
            for j, why in sorted(grid.failed.items())
            if grid.jobs[j].cell is not None
        ],
        "wall_s": time.perf_counter() - start,
        "start_s": 0.0 if isinstance(executor, InProcess) else opened,
        "folder": str(runner.folder),
        "executor": executor.describe(),
    }
