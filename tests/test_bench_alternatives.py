"""The report's methods comparison: PgM's best reading, chosen on validation, against the methods
users pick instead (Holm over them, detectable differences, the host margin, the outcome)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_bench_report import SUITE, record, write

from pgm_plugins.bench.alternatives import HOST_MARGIN, READINGS, aim_rows
from pgm_plugins.bench.report import build_report, verdict
from pgm_plugins.bench.stats import compare, holm


def _arm(root, arm, test, valid=None, host="h1", sizes=(80, 10, 20)):
    for seed, t in enumerate(test):
        key, body = record(host=host, arm=arm, seed=seed, primary_value=float(t), sizes=sizes)
        if valid is not None:
            body["metrics"]["valid"] = {**body["metrics"]["valid"], "acc2": float(valid[seed])}
        write(root, key, body)


def _noise(seed, n=6, scale=0.004):
    return np.random.default_rng(seed).normal(0, scale, n)


def test_the_reading_is_chosen_on_validation_never_on_test(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    # pgm is better on test, pgm-guided on validation: validation chooses
    _arm(tmp_path, "pgm", base + 0.05, valid=[0.70] * 6)
    _arm(tmp_path, "pgm-guided", base + 0.01 + _noise(1), valid=[0.75] * 6)
    _arm(tmp_path, "uni_heads", base + _noise(2))
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.reading == "pgm-guided"
    assert row.valid_means == {"pgm": pytest.approx(0.70), "pgm-guided": pytest.approx(0.75)}
    # a tie keeps the first reading
    _arm(tmp_path, "pgm-guided", base + 0.01, valid=[0.70] * 6)
    assert build_report(tmp_path, SUITE, plots=False).aim[0].reading == "pgm"
    # the third reading: the block's rebuilt representation replaces the host's
    _arm(tmp_path, "pgm-replace", base, valid=[0.71] * 6)
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.reading == "pgm-replace" and list(row.valid_means) == list(READINGS)


def test_aim_met_when_every_alternative_is_beaten_and_the_host_kept(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base + 0.06 + _noise(1))
    alts = {"uni_heads": 0.02, "umt": 0.01, "ogm_ge": 0.0, "mmpareto": 0.03}
    for i, (arm, gain) in enumerate(alts.items()):
        _arm(tmp_path, arm, base + gain + _noise(10 + i))
    report = build_report(tmp_path, SUITE, plots=False)
    (row,) = report.aim
    assert row.outcome == "met" and row.reasons == []
    assert list(row.versus) == list(alts)  # in ALTERNATIVES' order
    assert row.absent == ["agm"]
    cells = report.cells
    pgm = cells[cells["arm"] == "pgm"].sort_values("seed")["test.acc2"].to_numpy()
    ps = []
    for arm in alts:
        other = cells[cells["arm"] == arm].sort_values("seed")["test.acc2"].to_numpy()
        c = compare(pgm, other)  # one fixed split over seeds: the plain paired t
        v = row.versus[arm]
        got = (v["diff"], v["low"], v["high"], v["p"])
        assert got == pytest.approx((c.mean, c.low, c.high, c.p))
        assert v["detectable"] == pytest.approx(c.detectable)
        ps.append(c.p)
    assert [row.versus[a]["p_holm"] for a in alts] == pytest.approx(holm(ps))
    assert row.shortfall == pytest.approx(-row.vs_host["low"]) and row.shortfall < HOST_MARGIN
    assert row.room == pytest.approx(1 - base.mean())
    # the section, aim.csv and the verdict line say the same
    assert "## PgM's best reading against the methods users pick instead" in report.markdown
    assert "- **aim met**" in report.markdown
    frame = pd.read_csv(report.out_dir / "aim.csv")
    assert list(frame["arm"]) == ["baseline", *alts]
    assert set(frame["outcome"]) == {"met"} and set(frame["reading"]) == {"pgm"}
    assert verdict(report)[-1].startswith(
        "Aim on mosi-utterance/clean, host h1: `pgm` (chosen on validation) vs uni_heads, umt"
    )


def test_aim_not_met_names_each_reason(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base - 0.03 + _noise(1))  # short of the host
    _arm(tmp_path, "uni_heads", base - 0.03 + _noise(2, scale=0.01))  # level
    _arm(tmp_path, "umt", base + 0.02 + _noise(3))  # better than PgM
    (row,) = aim_rows(build_report(tmp_path, SUITE, plots=False).cells)
    assert row.outcome == "not met"
    text = "; ".join(row.reasons)
    assert "level with uni_heads" in text and "worse than umt" in text
    assert f"short of the host (95 % bound; the aim: below {HOST_MARGIN})" in text


def test_undecided_where_the_detectable_difference_exceeds_the_room_above_the_host(tmp_path):
    base = np.full(6, 0.995)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base + _noise(1, scale=0.006))
    _arm(tmp_path, "uni_heads", base + _noise(2, scale=0.006))
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.room == pytest.approx(0.005)
    assert row.detectable > row.room and row.outcome == "undecided"


def test_no_section_without_an_alternative_or_a_reading(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base + 0.01)
    _arm(tmp_path, "capacity", base + 0.01)
    report = build_report(tmp_path, SUITE, plots=False)
    assert report.aim == [] and "methods users pick instead" not in report.markdown
    assert not (report.out_dir / "aim.csv").exists()
    _arm(tmp_path, "uni_heads", base, host="h2")  # an alternative on another host, no PgM there
    assert build_report(tmp_path, SUITE, plots=False).aim == []


def test_diverged_cells_stay_out_and_too_few_cells_are_untested(tmp_path):
    _arm(tmp_path, "baseline", [0.7])
    _arm(tmp_path, "pgm", [0.72])
    _arm(tmp_path, "uni_heads", [0.71])
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.outcome == "not met"
    assert "untested against uni_heads (1 paired cell(s))" in row.reasons
    assert math.isnan(row.shortfall) and math.isnan(row.detectable)


def test_the_readme_summary_is_the_reports_rows(tmp_path):
    from test_bench_summary import _readme_tables

    from pgm_plugins.bench.alternatives import aim_summary

    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base + 0.03 + _noise(1))
    _arm(tmp_path, "pgm-guided", base + 0.03 + _noise(2), valid=[0.9] * 6)
    _arm(tmp_path, "umt", base + 0.03 + _noise(3))
    report = build_report(tmp_path, SUITE, plots=False)
    lines = aim_summary(report.aim)
    assert lines[0] == (
        "| data / host | PgM reading (settings) | PgM - host | PgM - `umt` | detectable | room "
        "| aim |"
    )
    (row,) = report.aim
    v = row.versus["umt"]
    assert lines[2].startswith("| mosi-utterance/clean / h1 | `pgm-guided` (1) | +0.0298 [")
    assert "] p<0.001 | +0.0007" in lines[2]
    assert f"[{v['low']:+.4f}, {v['high']:+.4f}] p_Holm={v['p_holm']:.3f}" in lines[2]
    assert lines[2].endswith(f"| {row.room:.3f} | {row.outcome} |")
    tables = _readme_tables()
    text = tables._aim_rows(tables.AimTable("", SUITE), tmp_path)
    assert text == "\n".join(lines) + "\n"


def test_a_larger_budget_is_named_beside_the_outcome(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    for seed, t in enumerate(base + 0.05):
        key, body = record(arm="pgm-guided", seed=seed, primary_value=float(t))
        body["arm"]["settings_tried"] = 7
        write(tmp_path, key, body)
    _arm(tmp_path, "uni_heads", base + _noise(2))
    report = build_report(tmp_path, SUITE, plots=False)
    (row,) = report.aim
    assert row.outcome == "met" and row.settings == {"baseline": 1, "pgm-guided": 7, "uni_heads": 1}
    assert row.caveats == [
        "`pgm-guided` tried 7 settings per cell, `uni_heads` 1: part of a difference may come "
        "from the larger budget"
    ]
    assert "- budgets: `pgm-guided` tried 7" in report.markdown
    assert "; budgets: `pgm-guided` tried 7" in verdict(report)[-1]
