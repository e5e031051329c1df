"""A bench plugin that worker processes can import (tests/ is on their path): a tiny data set,
hosts that crash, fail or run out of memory on purpose, and a runner whose cells need a shared
prerequisite. Spawned pool workers and Ray workers do not see plugins made inline in a test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pgm_plugins import hookimpl
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.prerequisites import Prerequisite
from pgm_plugins.bench.runner import Runner


def tiny(protocol=None, data_dir=None, n=120):
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(n, 6)).astype(np.float32) for m in ("a", "b")}
    y = (x["a"][:, 0] + x["b"][:, 0] > 0).astype(np.int64)

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n)
        return [Fold(perm[:72], perm[72:96], perm[96:], 0, seed)]

    return BenchData(
        "tiny", "default", "tiny", x, y, "classification", folds, "3" * 64, "acc", num_classes=2
    )


def _late_fusion(data, seed, modalities):
    from pgm_plugins.bench.late_fusion import LateFusionRun

    return LateFusionRun(data, seed, modalities, hidden=8)


def crash_once(data, seed, modalities, *, marker: str = ""):
    """late_fusion; seed 1 kills its process (exit 9) the first time (``marker`` missing)."""
    if seed == 1 and marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(9)
    return _late_fusion(data, seed, modalities)


def flaky(data, seed, modalities, *, marker: str = ""):
    """late_fusion; seed 1 runs out of memory the first time, seed 2 always fails."""
    if seed == 1 and marker and not Path(marker).exists():
        Path(marker).write_text("1")
        raise MemoryError("fake: out of memory")
    if seed == 2:
        raise ValueError("fake: seed 2 cannot be built")
    return _late_fusion(data, seed, modalities)


@hookimpl
def pgm_register_datasets(register):
    register("tiny-workers", tiny, "tiny data for the executor tests")


_MET: set[str] = set()


def rendezvous(data, seed, modalities, *, folder: str = "", runs: int = 2):
    """late_fusion; the first cell each process builds waits (up to 120 s) until ``runs``
    processes have reached theirs, so two runs of one suite surely overlap however slowly the
    second one starts (a loaded machine)."""
    if folder and folder not in _MET:
        _MET.add(folder)
        Path(folder, f"ready-{os.getpid()}").write_text("")
        deadline = time.monotonic() + 120
        while len(list(Path(folder).glob("ready-*"))) < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rendezvous: fewer than {runs} runs reached {folder}")
            time.sleep(0.05)
    return _late_fusion(data, seed, modalities)


@hookimpl
def pgm_register_bench_hosts(register):
    register("crash_once", crash_once, "late_fusion whose seed-1 cell kills its worker once")
    register("flaky", flaky, "late_fusion: seed 1 out of memory once, seed 2 always fails")
    register("rendezvous", rendezvous, "late_fusion; each run's first cell waits for a second run")


# ---------------------------------------------------------------------- prerequisites
def build_stage(runner, prerequisite, out: Path) -> None:
    """The shared first stage: logs each build (one line per build) and takes a while, so a
    second run started at once finds it claimed."""
    log = Path(runner.folder).parent / "builds.log"
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(float(prerequisite.key.get("sleep", 0.0)))
    (out / "stage.txt").write_text(str(prerequisite.key["stage"]))


class StageRunner(Runner):
    """Every cell needs the one first stage; a cell checks it is there before training."""

    def prerequisites(self, cell):
        key = {"stage": "first", "sleep": 1.0}
        build = "bench_workers_plugin:build_stage"
        return [Prerequisite(key, build, "first stage", files=("stage.txt",))]

    def run_cell(self, cell):
        (p,) = self.prerequisites(cell)
        assert (p.path(self.folder) / "stage.txt").read_text() == "first"
        return super().run_cell(cell)


@hookimpl
def pgm_register_arms(register):
    """A second arm on the ``ume`` first stage (``umt`` under another name): two arms that
    share one first stage per host, fold and seed."""
    import dataclasses

    from pgm_plugins.bench.methods.umt import umt_arm

    register(dataclasses.replace(umt_arm(), name="workers.umt_again"))
