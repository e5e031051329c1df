"""``benchmarks/gpu_block_cost.py``, the block-cost script for a GPU machine, smoked on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    path = REPO / "benchmarks" / "gpu_block_cost.py"
    spec = importlib.util.spec_from_file_location("gpu_block_cost_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check(out: Path, cases: list[str], arms: list[str], steps: int) -> dict:
    record = json.loads(out.read_text())
    assert [r["case"] for r in record["results"]] == cases
    assert record["machine"]["device"] == "cpu" and record["versions"]["torch"]
    for res in record["results"]:
        assert list(res["arms"]) == arms
        for arm, entry in res["arms"].items():
            assert "error" not in entry, entry.get("error")
            assert entry["step_ms"]["median"] > 0 and entry["aten_calls_fwd_bwd"] > 0
            assert entry["syncs_per_step"] is None  # counted on CUDA only
            if arm != "host":
                assert entry["ratio_to_host"]["median"] > 0
                # the block adds operators to the host's forward and backward
                assert entry["aten_calls_fwd_bwd"] > res["arms"]["host"]["aten_calls_fwd_bwd"]
    return record


def test_late_fusion_smoke_on_cpu(tmp_path):
    out = tmp_path / "cost.json"
    args = ["--device", "cpu", "--steps", "3", "--warmup", "1", "--small", "--out", str(out)]
    assert _script().main([*args, "--cases", "late_fusion", "--arms", "pgm", "deferred"]) == 0
    _check(out, ["late_fusion"], ["host", "pgm", "deferred"], 3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # inductor's own use of deprecated helpers
@pytest.mark.filterwarnings("ignore::UserWarning")  # MMSA's and timm's construction warnings
def test_the_gpu_cases_smoke_on_cpu_with_every_cpu_arm(tmp_path):
    pytest.importorskip("pgm_mmsa")
    pytest.importorskip("pgm_timm")
    out = tmp_path / "cost.json"
    args = ["--device", "cpu", "--steps", "3", "--warmup", "1", "--small", "--out", str(out)]
    assert _script().main([*args, "--cases", "mult", "timm_av"]) == 0
    record = _check(out, ["mult", "timm_av"], ["host", "pgm", "deferred", "compiled"], 3)
    assert record["arms"]["compiled"] == {"check_finite": "deferred", "compile": True}
