"""Executors, claims, retries, prerequisites: one grid gives the same records in process, on a
process pool and on Ray; a killed worker costs one retry of its cell; two runs of one suite
share the work; a prerequisite is built once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import bench_workers_plugin
import pytest

from pgm_plugins.bench.executors import InProcess, ProcessPool, RayExecutor
from pgm_plugins.bench.runner import Runner
from pgm_plugins.bench.suite import parse_suite, suite_name
from pgm_plugins.cli import main

TESTS = str(Path(__file__).parent)


@pytest.fixture
def registry(core_registry):
    core_registry.register_plugin(bench_workers_plugin, "bench_workers_plugin")
    core_registry.refresh()
    return core_registry


def _suite(registry, **changes):
    table = {
        "dataset": "tiny-workers",
        "hosts": ["late_fusion"],
        "arms": ["baseline", "pgm"],
        "seeds": [0, 1],
        "epochs": 2,
        "patience": 2,
        "batch": 24,
        **changes,
    }
    return parse_suite(
        "w", table, datasets=registry.datasets.names(), hosts=registry.bench_hosts.names()
    )


def _runner(registry, root, cls=Runner, **changes):
    return cls(_suite(registry, **changes), root, registry=registry, threads=1, quiet=True)


def _records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def _results(folder):
    """What a cell computed: its metrics and curves (times and machine aside)."""
    return {n: (r["metrics"], r["curves"], r["cell_digest"]) for n, r in _records(folder).items()}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the module's Ray tests (workers import tests/)."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",  # a new cluster: never RAY_ADDRESS's nor a `ray start` one's
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}},
    )
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_same_metrics_in_process_with_jobs_2_and_on_ray(registry, tmp_path, ray_cluster):
    runs = {
        "inprocess": InProcess(),
        "pool": ProcessPool(2),
        "ray": RayExecutor(),
    }
    got = {}
    for name, executor in runs.items():
        runner = _runner(registry, tmp_path / name)
        summary = runner.run(runner.plan(), executor=executor)
        assert summary["ran"] == 4 and not summary["failed"], summary
        got[name] = _results(tmp_path / name / "w")
    assert len(got["inprocess"]) == 4
    assert got["pool"] == got["inprocess"]
    assert got["ray"] == got["inprocess"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pool", "ray"])
def test_a_killed_worker_costs_its_cell_one_retry(registry, tmp_path, kind, request):
    """seed 1's cell kills its worker on its first attempt: that cell alone is retried (the
    other cell in flight is resubmitted uncharged), the grid completes, nothing lost or run
    twice."""
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    marker = tmp_path / "crashed"
    runner = _runner(
        registry,
        tmp_path,
        hosts=["crash_once"],
        arms=["baseline"],
        seeds=[0, 1, 2, 3],
        host_options={"crash_once": {"marker": str(marker)}},
    )
    executor = ProcessPool(2) if kind == "pool" else RayExecutor()
    summary = runner.run(runner.plan(), executor=executor, retries=1)
    assert marker.exists()  # the worker did die once
    assert summary["retried"] == 1 and not summary["failed"], summary
    assert summary["ran"] == 4
    records = _records(tmp_path / "w")
    assert sorted(r["key"]["seed"] for r in records.values()) == [0, 1, 2, 3]


class _FakeRay:
    """Records what ``ray.init`` was asked (no cluster: the choice of address is the point)."""

    def __init__(self):
        self.init_kwargs = None

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.init_kwargs = kwargs

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, fn):
        return self

    def options(self, **kwargs):
        return self


@pytest.mark.parametrize(
    ("address", "env", "expected", "described"),
    [
        # a new cluster, never one `ray start` left running
        (None, None, "local", "a new local Ray cluster"),
        ("local", "10.0.0.2:6379", "local", "a new local Ray cluster"),
        # Ray's own setting
        (None, "10.0.0.2:6379", "10.0.0.2:6379", "10.0.0.2:6379 (from $RAY_ADDRESS)"),
        # --address wins
        ("10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.1:6379", "10.0.0.1:6379"),
    ],
)
def test_ray_joins_the_cluster_asked_for_else_starts_a_new_one(
    registry, tmp_path, monkeypatch, address, env, expected, described
):
    from pgm_plugins.bench import executors

    fake = _FakeRay()
    monkeypatch.setattr(executors, "_import_ray", lambda: fake)
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    runner = _runner(registry, tmp_path)
    spec = executors.WorkerSpec(runner.suite, str(tmp_path), None, 1)
    executor = RayExecutor(address, jobs=2)
    executor.open(spec, runner)
    assert fake.init_kwargs["address"] == expected
    # a cluster of its own is sized by --jobs; a joined one keeps its own resources
    assert ("num_cpus" in fake.init_kwargs) == (expected == "local")
    assert executor.slots == 2
    assert executor.describe() == f"Ray ({described}, 2 at once)"


def test_other_errors_fail_the_cell_alone_and_memory_errors_are_retried(
    fresh_registry, tmp_path, capsys
):
    """In process: seed 1 runs out of memory once (retried, then done); seed 2's host raises
    (the grid goes on; the cell is reported with its error's last line; exit status 1; no
    file)."""
    fresh_registry.register_plugin(bench_workers_plugin, "bench_workers_plugin")
    fresh_registry.refresh()
    suite = tmp_path / "flaky.toml"
    marker = tmp_path / "oom"
    suite.write_text(
        textwrap.dedent(f"""
        dataset = "tiny-workers"
        hosts = ["flaky"]
        arms = ["baseline"]
        seeds = [0, 1, 2, 3]
        epochs = 1
        [host_options.flaky]
        marker = "{marker}"
        """)
    )
    results = tmp_path / "results"
    code = main(["bench", "run", str(suite), "--results", str(results), "--no-report"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "MemoryError: fake: out of memory; retrying (1 of 1)" in err
    assert "1 cell(s) failed" in err
    assert "flaky baseline fold 0 seed 2: ValueError: fake: seed 2 cannot be built" in err
    assert re.search(r"\[3/4\] flaky baseline fold 0 seed \d: test acc [0-9.]+ \(", err)
    seeds = sorted(r["key"]["seed"] for r in _records(results / suite_name(str(suite))).values())
    assert seeds == [0, 1, 3]


BOOT = """
import sys
sys.path.insert(0, {tests!r})
import bench_workers_plugin
from pgm_plugins.cli import main
from pgm_plugins.registry import get_registry

reg = get_registry()
reg.register_plugin(bench_workers_plugin, "bench_workers_plugin")
reg.refresh()
sys.exit(main(sys.argv[1:]))
"""

SHARED = """
dataset = "tiny-workers"
hosts = ["rendezvous"]
arms = ["baseline", "pgm"]
seeds = [0, 1, 2, 3, 4, 5, 6, 7]
epochs = 4
patience = 4
batch = 24

[host_options.rendezvous]
folder = {folder!r}
"""


@pytest.mark.slow
def test_two_runs_of_one_suite_share_the_work(tmp_path):
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT.format(tests=TESTS))
    suite = tmp_path / "shared.toml"
    (tmp_path / "met").mkdir()
    suite.write_text(SHARED.format(folder=str(tmp_path / "met")))
    results = tmp_path / "results"
    cmd = [sys.executable, str(boot), "bench", "run", str(suite), "--results", str(results)]
    cmd += ["--threads", "1", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    ran = [set(re.findall(r"^\[\d+/16\] (.+?): test", e, re.M)) for e in errs]
    # each run's first cell waits for the other run to reach its own (the rendezvous host), so
    # both do some of the work however slowly the second one starts
    assert not ran[0] & ran[1], "a cell ran in both"
    assert len(ran[0] | ran[1]) == 16
    assert all(ran), f"one run did all the work: {errs}"
    for e in errs:
        assert "finished by another run" in e
    folder = results / suite_name(str(suite))
    assert len(_records(folder)) == 16
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_prerequisite_is_built_once_and_reused(registry, tmp_path):
    runner = _runner(registry, tmp_path, cls=bench_workers_plugin.StageRunner, epochs=1)
    cells = runner.plan()
    assert len(cells) == 4
    summary = runner.run(cells)
    assert summary["built"] == 1 and summary["ran"] == 4 and not summary["failed"]
    log = tmp_path / "builds.log"
    assert len(log.read_text().splitlines()) == 1
    (artifact,) = (tmp_path / "w" / "artifacts").iterdir()
    assert (artifact / "stage.txt").read_text() == "first"
    for path in (tmp_path / "w").glob("*.json"):
        path.unlink()
    again = _runner(registry, tmp_path, cls=bench_workers_plugin.StageRunner, epochs=1)
    summary = again.run(cells)
    assert summary["built"] == 0 and summary["ran"] == 4
    assert len(log.read_text().splitlines()) == 1  # reused, not rebuilt


def test_a_prerequisite_that_lost_a_declared_file_is_built_again(registry, tmp_path, capsys):
    """A copy that left large files behind (or a hand clean-up) leaves the artifact's folder
    without a file it declares: the next run moves it aside and builds it, instead of failing
    every cell that needs it."""
    runner = _runner(registry, tmp_path, cls=bench_workers_plugin.StageRunner, epochs=1)
    cells = runner.plan()
    runner.run(cells[:1])
    (artifact,) = (tmp_path / "w" / "artifacts").iterdir()
    (prerequisite,) = runner.prerequisites(cells[0])
    assert prerequisite.built(tmp_path / "w") and prerequisite.missing(tmp_path / "w") == []
    (artifact / "stage.txt").unlink()
    (artifact / "notes.txt").write_text("left behind")
    assert not prerequisite.built(tmp_path / "w")
    assert prerequisite.missing(tmp_path / "w") == ["stage.txt"]
    again = _runner(registry, tmp_path, cls=bench_workers_plugin.StageRunner, epochs=1)
    again.quiet = False
    summary = again.run(cells)
    assert summary["built"] == 1 and summary["ran"] == 3 and not summary["failed"]
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 2
    assert sorted(p.name for p in artifact.iterdir()) == ["stage.txt"]  # rebuilt whole
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".")]
    assert "lacked stage.txt; building it again" in capsys.readouterr().err


def test_a_first_stage_declares_its_model_and_record(registry, tmp_path):
    from pgm_plugins.bench.stages import MODEL_FILE, RECORD_FILE

    runner = _runner(registry, tmp_path, epochs=1)
    cell = runner.plan()[0]
    prerequisite = runner._first_stage_prerequisite("ume", cell)
    assert prerequisite.files == (MODEL_FILE, RECORD_FILE)
    assert prerequisite.missing(tmp_path / "w") == [MODEL_FILE, RECORD_FILE]


PREREQ_BOOT = """
import sys
sys.path.insert(0, {tests!r})
import bench_workers_plugin
from pgm_plugins.bench.suite import parse_suite
from pgm_plugins.registry import get_registry

reg = get_registry()
reg.register_plugin(bench_workers_plugin, "bench_workers_plugin")
reg.refresh()
suite = parse_suite("w", {{"dataset": "tiny-workers", "hosts": ["late_fusion"],
    "arms": ["baseline", "pgm"], "seeds": [0, 1], "epochs": 1}},
    datasets=reg.datasets.names(), hosts=reg.bench_hosts.names())
runner = bench_workers_plugin.StageRunner(suite, sys.argv[1], registry=reg, threads=1)
summary = runner.run(runner.plan())
print(summary["built"], summary["ran"], summary["others"], len(summary["failed"]))
"""


@pytest.mark.slow
def test_two_runs_build_a_shared_prerequisite_once(tmp_path):
    boot = tmp_path / "boot.py"
    boot.write_text(PREREQ_BOOT.format(tests=TESTS))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(boot), str(tmp_path)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = [tuple(map(int, out.split())) for out, _ in outs]
    assert sum(c[0] for c in counts) == 1  # built once between them
    assert sum(c[1] for c in counts) == 4 and all(c[3] == 0 for c in counts)
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert len(_records(tmp_path / "w")) == 4


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--jobs", "0"], "jobs '0': give an integer >= 1"),
        (["--retries", "-1"], "retries '-1': give an integer >= 0"),
        (["--executor", "pol"], "--executor 'pol' is not one of"),
        (["--jobs", "2", "--executor", "inprocess"], "--jobs 2 runs worker processes"),
        (["--executor", "pool", "--address", "ray://x:10001"], "--address is for --executor ray"),
    ],
)
def test_bad_executor_options_exit_2_and_run_nothing(tmp_path, capsys, extra, needle):
    results = tmp_path / "results"
    try:
        code = main(["bench", "run", "quick", "--results", str(results), *extra])
    except SystemExit as exc:  # argparse's own check of the value
        code = exc.code
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not results.exists()


def test_ray_missing_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    results = tmp_path / "results"
    assert main(["bench", "run", "quick", "--results", str(results), "--executor", "ray"]) == 2
    assert "pip install 'pgm-plugins[ray]'" in capsys.readouterr().err
    assert not results.exists()


def test_a_plugin_made_inline_is_refused_before_workers_start(fresh_registry, tmp_path):
    import types

    from pgm_plugins import hookimpl
    from pgm_plugins.bench.runner import RunnerError

    plugin = types.ModuleType("inline_only")

    @hookimpl
    def pgm_register_datasets(register):
        register("tiny-inline", bench_workers_plugin.tiny, "tiny, made inline")

    plugin.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    fresh_registry.register_plugin(plugin, "inline_only")
    fresh_registry.refresh()
    runner = _runner(fresh_registry, tmp_path, dataset="tiny-inline")
    with pytest.raises(RunnerError, match=r"registered inline in this process.*entry point"):
        runner.run(runner.plan(), executor=ProcessPool(2))
    assert not list((tmp_path / "w").glob("*.json"))


def _pool_jobs(n: int, timeout: float) -> tuple[ProcessPool, int]:
    """``n`` jobs through a one-worker pool, one at a time as the driver hands them out (a
    spec that is not one: each job comes back at once as an error); returns the pool (open)
    and how many came back before a wait ran ``timeout`` seconds empty. The first wait also
    spawns the worker, which imports torch (seconds on a loaded machine, over 20 s from a cold
    page cache): it gets 300 s; a full pipe hangs the pool for good, so any limit finds it."""
    from pgm_plugins.bench.executors import Job

    pool = ProcessPool(1)
    pool.open("not a spec", None)
    back = 0
    for job_id in range(n):
        pool.submit(job_id, Job(f"j{job_id}", "a job"))
        got = pool.wait(timeout if job_id else max(timeout, 300))
        if not got:
            break
        back += len(got)
    return pool, back


def test_the_pool_reads_its_workers_start_notes_as_jobs_finish():
    """Each job's worker notes its start on a pipe the driver read only when a worker died:
    the pipe filled after about 2,700 jobs of one pool and the grid hung for good."""
    pool, back = _pool_jobs(30, timeout=30)
    try:
        assert back == 30
        assert pool._started.empty(), "the start notes pile up in the pipe"
    finally:
        pool.close()


@pytest.mark.slow
def test_a_pool_runs_more_jobs_than_its_start_pipe_holds():
    pool, back = _pool_jobs(3200, timeout=20)
    pool.close()
    assert back == 3200
