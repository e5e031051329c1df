"""Every statistic of the report on tiny and degenerate inputs: one cell, two cells, identical
cells, differences equal up to float rounding, all-NaN metrics, an arm whose cells all failed."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bench_report import SUITE, record, write

from pgm_plugins.bench.report import build_report, truth_agreement
from pgm_plugins.bench.stats import (
    NO_VARIATION,
    cells_to_detect,
    compare,
    detectable_at,
    holm,
    rank_correlation,
)
from pgm_plugins.bench.summary import summarise

# ------------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.81, 0.73], [0.815, 0.735]),  # equal differences, unequal in the last bits
        ([0.7, 0.7], [0.7, 0.7]),  # identical cells
        ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]),
        ([0.0, 0.0], [0.0, 0.0]),  # all zero: no scale at all
        ([1e6 + 0.5, 2e6 + 0.5], [1e6, 2e6]),  # large values, one constant offset
    ],
)
def test_differences_that_do_not_vary_get_no_p_and_no_interval(a, b):
    c = compare(a, b)
    assert c.varies is False
    assert math.isnan(c.p) and math.isnan(c.low) and math.isnan(c.high)
    assert math.isnan(c.detectable)
    assert c.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert NO_VARIATION in c.text() and "p=" not in c.text()


def test_two_cells_that_do_vary_are_tested():
    c = compare([0.81, 0.73], [0.80, 0.74])
    assert c.varies and 0 < c.p <= 1 and c.low < c.mean < c.high
    assert c.wins == 1 and c.n == 2
    # the smallest real step of an accuracy (one row of 100,000) still varies
    c = compare([0.5, 0.5 + 1e-5, 0.5], [0.4, 0.4, 0.4])
    assert c.varies and not math.isnan(c.p)


@pytest.mark.parametrize(
    ("a", "b", "needle"),
    [
        ([0.7], [0.6], "at least 2 cells, got 1"),
        ([], [], "at least 2 cells, got 0"),
        ([0.7, 0.8], [0.6], "one length, got 2 and 1"),
        ([0.7, float("nan")], [0.6, 0.5], "1 of the 4 given are NaN or infinite"),
        ([0.7, 0.8], [float("inf"), 0.5], "1 of the 4 given are NaN or infinite"),
    ],
)
def test_compare_refuses_what_it_cannot_test(a, b, needle):
    with pytest.raises(ValueError, match=needle):
        compare(a, b)


def test_holm_leaves_untestable_comparisons_out_of_the_family():
    p = [0.01, compare([0.81, 0.73], [0.815, 0.735]).p, 0.04]
    out = holm(p)
    assert math.isnan(out[1])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)  # m = 2, not 3
    assert holm([]) == []
    assert all(math.isnan(v) for v in holm([float("nan")] * 2))
    assert holm([0.3]) == [0.3]


def test_rank_correlation_of_degenerate_inputs_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(rank_correlation([1.0], [2.0]))
        assert math.isnan(rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(rank_correlation([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]))
    assert rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_truth_agreement_of_tied_and_single_modalities():
    assert truth_agreement({"a": 0.5}, {"a": 0.9})["pairs"] == 0
    tied = truth_agreement({"a": 0.5, "b": 0.5, "c": 0.5}, {"a": 0.9, "b": 0.9, "c": 0.9})
    assert tied["pairs"] == 0 and not tied["order_ok"] and math.isnan(tied["spearman"])


# ---------------------------------------------------------------------------- the report


def _cells(root: Path, host: str, arm: str, values: dict[int, float], **kw: object) -> None:
    for seed, v in values.items():
        key, body = record(host=host, arm=arm, seed=seed, primary_value=v, wf1=v - 0.1)
        body.update(kw)
        write(root, key, body)


def _cmp_cell(markdown: str, host: str, arm: str) -> str:
    """The 'vs baseline' cell of ``arm`` in ``host``'s table."""
    lines = markdown.split(f"host `{host}`", 1)[1].splitlines()
    row = next(x for x in lines if x.startswith(f"| `{arm}`"))
    return row.split(" | ")[-3]


def test_report_of_two_seeds_moving_together_says_no_variation(tmp_path):
    # the report: a 2-seed run printed -0.0050 [-0.0050, -0.0050] p<0.001 p_Holm<0.001
    _cells(tmp_path, "h1", "baseline", {0: 0.815, 1: 0.735})
    _cells(tmp_path, "h1", "pgm", {0: 0.81, 1: 0.73})
    _cells(tmp_path, "h2", "baseline", {0: 0.70, 1: 0.71, 2: 0.69})
    _cells(tmp_path, "h2", "pgm", {0: 0.73, 1: 0.72, 2: 0.74})
    rep = build_report(tmp_path, SUITE, plots=False)
    cell = _cmp_cell(rep.markdown, "h1", "pgm")
    assert cell == f"-0.0050 {NO_VARIATION} (0/2 better)"
    comp = rep.comparisons.set_index(["host", "arm", "reference", "metric"])
    flat = comp.loc[("h1", "pgm", "baseline", "acc2")]
    assert not flat["varies"] and math.isnan(flat["p"]) and math.isnan(flat["p_holm"])
    # Holm's family is the hosts that could be tested: h2 alone, so its p is not inflated
    h2 = comp.loc[("h2", "pgm", "baseline", "acc2")]
    assert h2["varies"] and h2["p_holm"] == pytest.approx(h2["p"])
    assert "p<" not in cell and "[" not in cell
    csv = pd.read_csv(tmp_path / SUITE / "report" / "report.csv")
    row = csv[(csv["host"] == "h1") & (csv["arm"] == "pgm")].iloc[0]
    assert row["vs_baseline_acc2_test"] == "no variation"
    assert math.isnan(row["vs_baseline_acc2_p"]) and row["vs_baseline_acc2_diff"] == pytest.approx(
        -0.005
    )


def test_report_of_identical_cells(tmp_path):
    _cells(tmp_path, "h1", "baseline", {0: 0.7, 1: 0.7})
    _cells(tmp_path, "h1", "pgm", {0: 0.7, 1: 0.7})
    rep = build_report(tmp_path, SUITE, plots=False)
    assert _cmp_cell(rep.markdown, "h1", "pgm") == f"+0.0000 {NO_VARIATION} (0/2 better)"
    row = rep.table[rep.table["arm"] == "pgm"].iloc[0]
    assert row["acc2_mean"] == pytest.approx(0.7) and row["acc2_std"] == pytest.approx(0.0)


def test_report_of_one_cell_per_arm(tmp_path):
    _cells(tmp_path, "h1", "baseline", {0: 0.6})
    _cells(tmp_path, "h1", "pgm", {0: 0.7})
    rep = build_report(tmp_path, SUITE, plots=False)
    assert _cmp_cell(rep.markdown, "h1", "pgm") == "- (n=1)"
    assert "0.7000 +- -" in rep.markdown  # no std of one cell
    assert not re.search(r"\bnan\b", rep.markdown, re.IGNORECASE)


def test_report_of_an_arm_whose_cells_all_failed(tmp_path):
    _cells(tmp_path, "h1", "baseline", {0: 0.6, 1: 0.62})
    _cells(tmp_path, "h1", "pgm", {0: 0.5, 1: 0.5}, stopped="non-finite")
    rep = build_report(tmp_path, SUITE, plots=False)
    assert _cmp_cell(rep.markdown, "h1", "pgm") == "- (n=0)"
    assert "| 2 (2 failed) |" in rep.markdown and "FAILED: 2 cell(s) diverged" in rep.markdown


def test_report_of_a_metric_that_is_nan_in_every_cell(tmp_path):
    # wf1 is NaN in every cell: left out of the table; NaN in every baseline cell only: shown,
    # and its comparison pairs nothing
    for arm, values in (("baseline", {0: 0.6, 1: 0.62}), ("pgm", {0: 0.64, 1: 0.61})):
        for seed, v in values.items():
            key, body = record(arm=arm, seed=seed, primary_value=v)
            body["metrics"]["test"]["wf1"] = float("nan")
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False)
    assert "wf1 mean" not in rep.markdown
    assert set(rep.comparisons["metric"]) == {"acc2"}
    key, body = record(arm="pgm", seed=0, primary_value=0.64)
    write(tmp_path, key, body)  # pgm seed 0 now has a wf1
    rep = build_report(tmp_path, SUITE, plots=False)
    comp = rep.comparisons.set_index(["arm", "reference", "metric"])
    assert comp.loc[("pgm", "baseline", "wf1"), "n"] == 0
    assert comp.loc[("pgm", "baseline", "acc2"), "n"] == 2
    assert "wf1 mean" in rep.markdown


def test_summary_table_says_no_variation_and_holm_skips_the_row(tmp_path):
    _cells(tmp_path, "h1", "baseline", {0: 0.815, 1: 0.735})
    _cells(tmp_path, "h1", "pgm", {0: 0.81, 1: 0.73})
    _cells(tmp_path, "h2", "baseline", {0: 0.70, 1: 0.71, 2: 0.69})
    _cells(tmp_path, "h2", "pgm", {0: 0.73, 1: 0.72, 2: 0.74})
    table = summarise(tmp_path, [SUITE], ["baseline", "pgm"])
    lines = table.markdown()
    h1 = next(x for x in lines if x.startswith("| h1 "))
    h2 = next(x for x in lines if x.startswith("| h2 "))
    assert f"-0.005 ({NO_VARIATION})" in h1 and "p=" not in h1
    assert table.p_holm[1] == pytest.approx(table.p[1])  # a family of one
    assert "p=" in h2


def _spread_one(n, seed=0):
    """``n`` paired differences with sample standard deviation exactly 1 (mean 0.1)."""
    d = np.random.default_rng(seed).normal(0, 1, n)
    return 0.1 + (d - d.mean()) / d.std(ddof=1)


@pytest.mark.parametrize("ratio", [0.0, 0.25])
def test_detectable_for_more_cells_is_what_compare_gives_at_that_spread(ratio):
    """``detectable_at(..., cells=m)``: the difference ``m`` cells of the same spread detect,
    as :func:`compare` measures it on such cells, at any alpha."""
    small, large = _spread_one(6), _spread_one(40, seed=1)
    d6 = compare(small, np.zeros(6), ratio).detectable
    d40 = compare(large, np.zeros(40), ratio).detectable
    assert detectable_at(d6, 6, 0.05, cells=40, ratio=ratio) == pytest.approx(d40)
    assert detectable_at(d6, 6, 0.05, cells=6, ratio=ratio) == pytest.approx(d6)
    assert detectable_at(d6, 6, 0.01, cells=6, ratio=ratio) == pytest.approx(
        detectable_at(d6, 6, 0.01)
    )
    # unlimited cells: the corrected test keeps sqrt(ratio) of the spread (here 1)
    floor = detectable_at(d6, 6, 0.05, cells=math.inf, ratio=ratio)
    assert floor == pytest.approx(math.sqrt(ratio) * (1.959964 + 0.841621), rel=1e-5)
    assert floor < detectable_at(d6, 6, 0.05, cells=10**6, ratio=ratio) + 1e-9
    assert math.isnan(detectable_at(d6, 6, 0.05, cells=1, ratio=ratio))


def test_cells_to_detect_is_the_fewest_cells_and_none_below_the_floor():
    d6 = compare(_spread_one(6), np.zeros(6), 0.25).detectable
    target = 1.6
    need = cells_to_detect(d6, 6, target, 0.05, 0.25)
    assert need is not None
    assert detectable_at(d6, 6, 0.05, cells=need, ratio=0.25) <= target
    assert detectable_at(d6, 6, 0.05, cells=need - 1, ratio=0.25) > target
    # below sqrt(0.25) * 2.80 = 1.40 no number of cells of these folds reaches it
    assert cells_to_detect(d6, 6, 1.3, 0.05, 0.25) is None
    # on one test set (ratio 0) enough seeds reach any positive target
    assert cells_to_detect(d6, 6, 0.05, 0.05) is not None
    assert cells_to_detect(math.nan, 6, 1.0, 0.05) is None
