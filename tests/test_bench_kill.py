"""SIGKILL a running ``pgm bench run`` and run it again: no finished cell lost or rerun, no
partial result file counted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pgm_plugins.bench.suite import suite_name

#: a process that registers a tiny data set, then runs the ``pgm`` command line
BOOT = """
import sys
import types

import numpy as np
import torch

from pgm_plugins import hookimpl
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.cli import main
from pgm_plugins.registry import get_registry


def tiny(protocol=None, data_dir=None, n=160):
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(n, 8)).astype(np.float32) for m in ("a", "b")}
    y = (x["a"][:, 0] * x["b"][:, 0] > 0).astype(np.int64)

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n)
        return [Fold(perm[:96], perm[96:128], perm[128:], 0, seed)]

    return BenchData("tiny", "default", "tiny", x, y, "classification", folds, "2" * 64, "acc",
                     num_classes=2)


plugin = types.ModuleType("tiny_kill_plugin")


@hookimpl
def pgm_register_datasets(register):
    register("tiny", tiny, "tiny")


plugin.pgm_register_datasets = pgm_register_datasets
reg = get_registry()
reg.register_plugin(plugin, "tiny")
reg.refresh()
torch.set_num_threads(1)
sys.exit(main(sys.argv[1:]))
"""

SUITE = """
dataset = "tiny"
hosts = ["late_fusion"]
arms = ["baseline", "pgm", "capacity", "interaction"]
seeds = [0, 1, 2, 3]
epochs = 6
patience = 6
batch = 16
"""


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}


def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    boot = tmp_path / "boot.py"
    boot.write_text(BOOT)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    folder = results / suite_name(str(suite))  # a user's suite file: <stem>-<8 hex>
    cmd = [sys.executable, str(boot), "bench", "run", str(suite), "--results", str(results)]
    cmd += ["--quiet", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "first.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while not list(folder.glob("*.json")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no cell finished within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _stamps(folder)
    total = 4 * 4
    assert 1 <= len(before) < total, "the run finished before the kill: make the suite longer"
    for name in before:  # every file that exists is whole
        assert json.loads((folder / name).read_text())["status"] == "done"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    after = _stamps(folder)
    assert len(after) == total
    assert {k: after[k] for k in before} == before  # nothing finished was rerun or lost
    records = [json.loads((folder / n).read_text()) for n in after]
    keys = {json.dumps(r["key"], sort_keys=True) for r in records}
    assert len(keys) == total and all(r["status"] == "done" for r in records)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


#: a driver that starts the ``--jobs`` pool, has its worker say its PID, then waits
POOL_DRIVER = """
import os
import time

from pgm_plugins.bench.executors import ProcessPool

pool = ProcessPool(1)
pool.open(None, None)
print(pool._pool.submit(os.getpid).result(), flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie. Its parent (init, a subreaper) may reap it between any two of
    these calls: a /proc entry gone (or gone while read) means gone too."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_the_pool_workers_of_a_driver_killed_with_sigkill_exit(tmp_path):
    """SIGKILL of ``pgm bench run --jobs N`` (or the OOM killer) left its N workers alive,
    each blocked forever on the driver's queue with torch and its data loaded."""
    with subprocess.Popen(
        [sys.executable, "-c", POOL_DRIVER], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    ) as proc:
        try:
            assert proc.stdout is not None
            worker = int(proc.stdout.readline())
            assert _alive(worker)
        finally:
            proc.kill()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(worker)
    if alive:
        with contextlib.suppress(ProcessLookupError):  # it may leave just now
            os.kill(worker, signal.SIGKILL)
    assert not alive, "the pool worker outlived its driver"
