"""``pgm bench run`` under torchrun: one cell trained by every rank with DDP, rank 0 writing.

The end-to-end test runs ``python -m torch.distributed.run --nproc_per_node 2`` (gloo, CPU) on
one late-fusion cell with the ``pgm`` arm and compares the record with one process at the same
global batch. Tolerance 1e-5 (absolute) on every metric and curve: the two runs compute the same
global-batch gradient (the chunks' gradients weighted by their share of the batch, so the
unequal chunks of a 75-row batch over 2 ranks weigh rows as one process does) and differ only in
the order of float additions (the all-reduce's sum of two half-batch gradients against one sum
over the batch): 3e-8 at most on the curves of a 4-epoch run of this kind, so 1e-5 leaves a
margin of 300 while a rank training on its own shuffle or chunk would not come near it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from pgm_plugins.bench.distributed import Ranks, chunk, from_env
from pgm_plugins.bench.runner import Runner, RunnerError
from pgm_plugins.bench.suite import load_suite

SUITE = """\
description = "torchrun check: one late-fusion cell with PgM"
dataset = "synthetic"
hosts = ["late_fusion"]
arms = ["pgm"]
seeds = [0]
epochs = 3
patience = 3
batch = 75
"""


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def test_chunks_are_contiguous_even_and_weighted_by_their_rows():
    idx = np.arange(100, 175)  # 75 rows over 2 ranks: 38 + 37
    parts = [chunk(idx, r, 2) for r in range(2)]
    assert [len(p) for p, _ in parts] == [38, 37]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), idx)
    assert [w for _, w in parts] == [38 / 75, 37 / 75]
    # fewer rows than ranks: the rank left over trains on the last row with weight 0
    part, weight = chunk(np.arange(3), 3, 4)
    assert part.tolist() == [2] and weight == 0.0
    assert sum(chunk(np.arange(3), r, 4)[1] for r in range(4)) == pytest.approx(1.0)


def test_torchrun_environment_is_read_and_a_broken_one_is_named():
    assert from_env({}) is None
    assert from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None  # one process: no DDP
    ranks = from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert ranks is not None and (ranks.rank, ranks.world, ranks.local) == (3, 4, 1)
    assert not ranks.main
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 but RANK .* torchrun"):
        from_env({"WORLD_SIZE": "2"})


@pytest.fixture
def gloo_world_of_one(monkeypatch):
    """A one-rank gloo group in this process: the DDP path of the runner, fast."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "0")  # rank 0's store binds a free port itself
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _small_npz_suite(tmp_path: Path) -> Path:
    """A 200-row two-view ``npz`` data set and a suite of one late-fusion PgM cell on it."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 5))
    labels = (a[:, 0] + b[:, 0] > 0).astype(np.int64)
    split = np.array(["train"] * 120 + ["valid"] * 40 + ["test"] * 40)
    np.savez(tmp_path / "views.npz", labels=labels, split=split, a=a, b=b)
    path = tmp_path / "small.toml"
    path.write_text(
        SUITE.replace('"synthetic"', '"npz"\noptions = {path = "views.npz"}').replace(
            "batch = 75", "batch = 25"
        )
    )
    return path


def test_the_ddp_path_on_one_rank_trains_as_one_process(tmp_path, gloo_world_of_one):
    """Every piece of the DDP path (global batches split by rank, DDP wrapper with the weighted
    hook, the all-reduced loss, validation broadcast from rank 0, rank 0 writing) on a world
    of one: the same record as one process, and ``train`` says how it ran."""
    path = _small_npz_suite(tmp_path)
    suite = load_suite(str(path))
    one = Runner(suite, tmp_path / "one", quiet=True)
    one.run(one.plan(folds=[0]))
    ddp = Runner(suite, tmp_path / "ddp", quiet=True)
    summary = ddp._run_ranks(Ranks(rank=0, world=1, local=0), ddp.plan(folds=[0]))
    assert summary["world_size"] == 1 and summary["ran"] == 1
    assert not dist.is_initialized()  # the runner left the group it made
    [a], [b] = _records(tmp_path / "one"), _records(tmp_path / "ddp")
    assert a["train"]["world_size"] == 1 and a["train"]["backend"] is None
    assert b["train"]["world_size"] == 1 and b["train"]["backend"] == "gloo"
    for split in ("valid", "test"):
        for k, v in a["metrics"][split].items():
            assert b["metrics"][split][k] == pytest.approx(v, abs=1e-6), (split, k)
    for k, v in a["curves"].items():
        np.testing.assert_allclose(b["curves"][k], v, atol=1e-6, err_msg=k)
    assert a["best_epoch"] == b["best_epoch"]


def test_a_host_without_train_model_is_refused_under_ddp(tmp_path, gloo_world_of_one):
    from pgm_plugins.bench.late_fusion import LateFusionRun

    path = _small_npz_suite(tmp_path)
    runner = Runner(load_suite(str(path)), tmp_path / "r", quiet=True)
    cells = runner.plan(folds=[0])
    original = LateFusionRun.__init__

    def without(self, *args, **kwargs):
        original(self, *args, **kwargs)
        del self.train_model

    LateFusionRun.__init__ = without  # type: ignore[method-assign]
    try:
        with pytest.raises(RunnerError, match=r"has no train_model: under torchrun"):
            runner._run_ranks(Ranks(rank=0, world=1, local=0), cells)
    finally:
        LateFusionRun.__init__ = original  # type: ignore[method-assign]
    assert _records(tmp_path / "r") == []  # nothing written


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process_and_only_rank_0_writes(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PGM_RESULTS_DIR", None)
    cli = ["-m", "pgm_plugins.cli", "bench", "run", str(path), "--folds", "0", "--no-report"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    torchrun.append("2")
    got = subprocess.run(
        [*torchrun, *cli, "--results", str(tmp_path / "ddp")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, *cli, "--results", str(tmp_path / "one"), "--quiet", "--threads", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # one record; rank 0 alone reports (the line printed where the record is written) and
    # speaks (the CLI's summary line)
    files = list((tmp_path / "ddp").rglob("*.json"))
    assert len(files) == 1
    assert got.stderr.count("(2 ranks, gloo): test acc") == 1, got.stderr[-3000:]
    assert got.stderr.count(": ran 1 cells") == 1
    [b], [a] = _records(tmp_path / "ddp"), _records(tmp_path / "one")
    assert b["train"]["world_size"] == 2 and b["train"]["backend"] == "gloo"
    assert a["train"]["world_size"] == 1
    # world size is part of what the cell computes (batch-level terms, CPU batch norm)
    assert b["cell_settings"]["world_size"] == 2 and "world_size" not in a["cell_settings"]
    assert b["epochs_run"] == a["epochs_run"] and b["best_epoch"] == a["best_epoch"]
    for split in ("valid", "test"):
        for k, v in a["metrics"][split].items():
            assert b["metrics"][split][k] == pytest.approx(v, abs=1e-5), (split, k)
    for k, v in a["curves"].items():
        np.testing.assert_allclose(b["curves"][k], v, rtol=0, atol=1e-5, err_msg=k)
