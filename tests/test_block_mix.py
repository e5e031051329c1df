"""``benchmarks/block_mix.py``'s summary (learned betas, the metric with every beta at 0) and its
table in the README / docs through ``benchmarks/readme_tables.py``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("block_mix", REPO / "benchmarks" / "block_mix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(fold: int, intact: float, beta0: float, betas: dict[str, float]) -> dict:
    return {"host": "h", "arm": "pgm", "fold": fold, "seed": 0, "metric": "acc2",
            "intact": intact, "beta0": beta0, "betas": betas}  # fmt: skip


def test_the_summary_is_the_change_with_every_beta_at_zero_and_the_largest_beta():
    mix = _module()
    rows = [
        _cell(0, 0.70, 0.70, {"a": 0.01, "b": -0.03}),
        _cell(1, 0.80, 0.79, {"a": 0.02, "b": 0.00}),
        _cell(2, 0.75, 0.77, {"a": -0.05, "b": 0.01}),
    ]
    (s,) = mix.summarise(rows)
    diffs = [0.0, -0.01, 0.02]
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3**0.5
    assert s["cells"] == 3 and s["cells_changed"] == 2
    assert s["max_abs_beta_mean"] == pytest.approx((0.03 + 0.02 + 0.05) / 3)
    assert s["max_abs_beta_max"] == pytest.approx(0.05)
    assert s["change_mean"] == pytest.approx(sum(diffs) / 3)
    assert s["change_high"] - s["change_mean"] == pytest.approx(half)
    assert mix.markdown([s])[2] == (
        "| h | pgm | 3 | 0.0333 (0.0500) | +0.0033 [-0.0346, +0.0413] (acc2) | 2 |"
    )


def test_the_docs_table_is_the_measurements_summaries(tmp_path):
    from test_bench_summary import _readme_tables

    mix = _module()
    (s,) = mix.summarise([_cell(0, 0.7, 0.7, {"a": 0.01}), _cell(1, 0.8, 0.8, {"a": 0.02})])
    tables = _readme_tables()
    for name in tables.MIXES["block-mix"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"suite": name[10:-5], "summary": [s], "cells": []}))
    text = tables.render("block-mix", tmp_path)
    lines = text.splitlines()
    assert lines[0].startswith("| suite | host | arm | cells |")
    assert lines[2] == (
        "| mosi | h | pgm | 2 | 0.0150 (0.0200) | +0.0000 [+0.0000, +0.0000] (acc2) | 0 |"
    )
    assert len(lines) == 2 + len(tables.MIXES["block-mix"])
