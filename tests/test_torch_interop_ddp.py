"""DDP (gloo, two CPU processes): training works with find_unused_parameters True and False, a
rank missing a modality, a disabled block and an aux loss without targets; parameters match one
process with the same global batch."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
from ddp_worker import train, worker

#: the default config has per-sample loss terms only: DDP's mean of per-rank means equals the
#: global mean, so parameters match one process to float rounding
EXACT: dict[str, object] = {}
#: a batch-level term (InfoNCE over the batch, 'shared' paired learner) is not gathered across
#: ranks: each rank contrasts its own 4 samples, not the global 8, so the parameters differ from
#: one process (measured here: by 0.04 to 0.96 after 3 SGD steps at lr 0.1, from run to run); the
#: ranks themselves stay in sync exactly, which is what this job checks
BATCH_LEVEL = {"paired": "shared"}

JOBS = [
    {"name": "exact-unused-false", "scenario": "plain", "config": EXACT, "ddp": {}},
    {
        "name": "exact-unused-true",
        "scenario": "plain",
        "config": EXACT,
        "ddp": {"find_unused_parameters": True},
    },
    {"name": "batch-level", "scenario": "plain", "config": BATCH_LEVEL, "ddp": {}},
    # the host's own encoder of the missing modality goes unused on that rank, so DDP needs
    # find_unused_parameters=True whatever the block does
    {
        "name": "missing-unused-true",
        "scenario": "missing",
        "config": {},
        "ddp": {"find_unused_parameters": True},
    },
    {"name": "disabled", "scenario": "disabled", "config": EXACT, "ddp": {}},
    {"name": "no-targets", "scenario": "no_targets", "config": EXACT, "ddp": {}},
    {
        "name": "no-targets-unused-true",
        "scenario": "no_targets",
        "config": {},
        "ddp": {"find_unused_parameters": True},
    },
]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=worker, args=(r, 2, str(tmp / "store"), str(tmp), JOBS))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.terminate()
    assert not hung, "a DDP rank hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("job", JOBS, ids=[j["name"] for j in JOBS])
def test_ddp_ranks_stay_in_sync_and_match_one_process(ranks, job):
    r0, r1 = ranks[0][job["name"]], ranks[1][job["name"]]
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
        assert torch.isfinite(r0[k]).all()
    if job["scenario"] in ("plain", "disabled", "no_targets") and job["config"] is EXACT:
        single = train(job["scenario"], job["config"])
        for k in r0:
            torch.testing.assert_close(r0[k], single[k], rtol=1e-5, atol=1e-5)
