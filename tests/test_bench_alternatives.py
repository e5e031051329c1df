"""The report's methods comparison: PgM's best reading, chosen on validation, against the methods
users pick instead (Holm over them, detectable differences, the host margin, the outcome)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_bench_report import SUITE, record, write

from pgm_plugins.bench.alternatives import HOST_MARGIN, READINGS, aim_markdown, aim_rows
from pgm_plugins.bench.report import build_report, verdict
from pgm_plugins.bench.stats import compare, detectable_at, holm


def _arm(root, arm, test, valid=None, host="h1", sizes=(80, 10, 20), folds=False):
    """One cell per value: seeds 0.. on one fixed split, or with ``folds`` folds 0.. at seed 0
    (each fold its own training and test set: the corrected resampled t)."""
    for i, t in enumerate(test):
        fold, seed = (i, 0) if folds else (0, i)
        key, body = record(
            host=host, arm=arm, fold=fold, seed=seed, primary_value=float(t), sizes=sizes
        )
        if valid is not None:
            body["metrics"]["valid"] = {**body["metrics"]["valid"], "acc2": float(valid[i])}
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


ALTS = {"uni_heads": 0.02, "umt": 0.01, "ogm_ge": 0.0, "mmpareto": 0.03}


def _winning_grid(root, folds=True, alts=ALTS):
    base = 0.7 + _noise(0)
    _arm(root, "baseline", base, folds=folds)
    _arm(root, "pgm", base + 0.06 + _noise(1), folds=folds)
    for i, (arm, gain) in enumerate(alts.items()):
        _arm(root, arm, base + gain + _noise(10 + i), folds=folds)
    return base


def test_aim_met_when_every_alternative_is_beaten_and_the_host_kept(tmp_path):
    _winning_grid(tmp_path)
    report = build_report(tmp_path, SUITE, plots=False)
    (row,) = report.aim
    assert row.outcome == "met" and row.reasons == [] and row.missing == []
    assert list(row.versus) == list(ALTS)  # in ALTERNATIVES' order
    assert row.absent == ["agm", "ume", "mslr"] and row.cells["pgm"] == 6
    cells = report.cells
    pgm = cells[cells["arm"] == "pgm"].sort_values("fold")["test.acc2"].to_numpy()
    ps = []
    for arm in ALTS:
        other = cells[cells["arm"] == arm].sort_values("fold")["test.acc2"].to_numpy()
        c = compare(pgm, other, 20 / 80)  # six folds: the corrected resampled t
        v = row.versus[arm]
        got = (v["diff"], v["low"], v["high"], v["p"])
        assert got == pytest.approx((c.mean, c.low, c.high, c.p))
        assert v["detectable"] == pytest.approx(c.detectable)
        # the detectable difference at Holm's strictest level, 0.05 / 4: a larger one
        t = sps.t
        se = c.detectable / (t.ppf(0.975, 5) + t.ppf(0.8, 5))
        assert v["detectable_holm"] == pytest.approx((t.ppf(1 - 0.05 / 8, 5) + t.ppf(0.8, 5)) * se)
        ps.append(c.p)
    assert [row.versus[a]["p_holm"] for a in ALTS] == pytest.approx(holm(ps))
    assert row.shortfall == pytest.approx(-row.vs_host["low"]) and row.shortfall < HOST_MARGIN
    # the room: above the best of the host and the alternatives (mmpareto here)
    best = cells[cells["arm"] == "mmpareto"]["test.acc2"].mean()
    assert row.room == pytest.approx(1 - best)
    # the section, aim.csv and the verdict line say the same
    assert "## PgM's best reading against the methods users pick instead" in report.markdown
    assert "- **aim met**" in report.markdown
    frame = pd.read_csv(report.out_dir / "aim.csv")
    assert list(frame["arm"]) == ["baseline", *ALTS]
    assert set(frame["outcome"]) == {"met"} and set(frame["reading"]) == {"pgm"}
    assert list(frame["cells"]) == [6] * 5
    assert verdict(report)[-1].startswith(
        "Aim on mosi-utterance/clean, host h1: `pgm` (chosen on validation) vs uni_heads, umt"
    )


def test_an_alternative_the_aim_does_not_name_counts_once_present(tmp_path):
    """The uni-modal ensemble and per-modality learning rates are compared like the named ones:
    a confident loss to one is not met, whatever the named comparisons say."""
    base = _winning_grid(tmp_path)
    _arm(tmp_path, "ume", base + 0.12 + _noise(20), folds=True)
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert list(row.versus) == [*ALTS, "ume"] and row.absent == ["agm", "mslr"]
    assert row.outcome == "not met" and any(r.startswith("worse than ume") for r in row.reasons)
    assert row.room == pytest.approx(1 - row.test_means["ume"])


def test_wins_on_one_fixed_test_set_leave_the_aim_undecided(tmp_path):
    """Seeds on one split see training noise only: every win confident is still not 'met'."""
    _winning_grid(tmp_path, folds=False)
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert all(v["p_holm"] < 0.05 and v["diff"] > 0 for v in row.versus.values())
    assert row.outcome == "undecided" and row.fixed_split
    assert row.reasons == [
        "one test set: the interval holds the seeds' training noise only, not the test set's "
        "sampling"
    ]


def test_the_aim_needs_every_alternative_it_names(tmp_path):
    """Wins over the alternatives present are not the aim while one it names has no cells;
    OGM-GE is not asked of a host that trains PgM as regression (an MMSA host on
    classification data: its block's config says so)."""
    _winning_grid(tmp_path, alts={"uni_heads": 0.02, "mmpareto": 0.03})
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.outcome == "incomplete" and row.missing == ["umt", "ogm_ge"]
    assert row.reasons == ["no cells of umt, ogm_ge (the aim names it)"]
    for path in (tmp_path / SUITE).glob("*arm=pgm__*.json"):
        body = json.loads(path.read_text())
        body["block_config"] = {"task": "regression"}
        path.write_text(json.dumps(body))
    report = build_report(tmp_path, SUITE, plots=False)
    assert set(report.cells.loc[report.cells["arm"] == "pgm", "trains"]) == {"regression"}
    assert set(report.cells.loc[report.cells["arm"] == "baseline", "trains"]) == {"classification"}
    (row,) = report.aim
    assert row.task == "regression" and row.missing == ["umt"]


def test_a_confident_loss_is_not_met_even_where_the_room_is_small(tmp_path):
    """'undecided' never hides a loss: PgM confidently below an alternative is 'not met' though
    the detectable difference exceeds the room."""
    base = np.full(6, 0.994)
    _arm(tmp_path, "baseline", base, folds=True)
    _arm(tmp_path, "pgm", base - 0.004 + _noise(1, scale=0.0004), folds=True)
    _arm(tmp_path, "uni_heads", base + _noise(2, scale=0.0004), folds=True)
    _arm(tmp_path, "umt", base - 0.004 + _noise(3, scale=0.004), folds=True)
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.detectable > row.room
    assert row.versus["uni_heads"]["p_holm"] < 0.05 and row.versus["uni_heads"]["diff"] < 0
    assert row.outcome == "not met"
    assert any(r.startswith("worse than uni_heads") for r in row.reasons)


def test_the_reading_is_chosen_on_the_cells_every_reading_has(tmp_path):
    """A reading with fewer cells is compared on validation over the shared (fold, seed)."""
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base, valid=[0.60, 0.60, 0.60, 0.90, 0.90, 0.90])
    _arm(tmp_path, "pgm-guided", base[:3], valid=[0.65, 0.65, 0.65])
    _arm(tmp_path, "uni_heads", base)
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    # over its own cells pgm's mean (0.75) would win; over seeds 0-2 (0.60 vs 0.65) it loses
    assert row.valid_means == {"pgm": pytest.approx(0.60), "pgm-guided": pytest.approx(0.65)}
    assert row.reading == "pgm-guided" and row.cells == {
        "baseline": 6,
        "pgm": 6,
        "pgm-guided": 3,
        "uni_heads": 6,
    }


def test_aim_not_met_names_each_reason(tmp_path):
    base = 0.7 + _noise(0)
    _arm(tmp_path, "baseline", base, folds=True)
    _arm(tmp_path, "pgm", base - 0.03 + _noise(1), folds=True)  # short of the host
    _arm(tmp_path, "uni_heads", base - 0.03 + _noise(2, scale=0.01), folds=True)  # level
    _arm(tmp_path, "umt", base + 0.02 + _noise(3), folds=True)  # better than PgM
    (row,) = aim_rows(build_report(tmp_path, SUITE, plots=False).cells)
    assert row.outcome == "not met"
    text = "; ".join(row.reasons)
    assert "level with uni_heads" in text and "worse than umt" in text
    assert f"the host: {row.shortfall:.4f} (95 % bound of host - PgM; the aim: below " in text
    assert "no cells of ogm_ge, mmpareto or agm" in text


def test_undecided_where_the_detectable_difference_exceeds_the_room_above_the_host(tmp_path):
    base = np.full(6, 0.995)
    _arm(tmp_path, "baseline", base)
    _arm(tmp_path, "pgm", base + _noise(1, scale=0.006))
    _arm(tmp_path, "uni_heads", base + _noise(2, scale=0.006))
    (row,) = build_report(tmp_path, SUITE, plots=False).aim
    assert row.room == pytest.approx(1 - max(row.host_mean, row.test_means["uni_heads"]))
    assert row.detectable > row.room and row.outcome == "undecided"
    # one test set: more seeds could detect a win as large as the room; the report says how many
    need = row.cells_needed
    assert need is not None and need > 6
    v = row.versus["uni_heads"]
    assert detectable_at(v["detectable"], 6, 0.05, cells=need) <= row.room
    assert detectable_at(v["detectable"], 6, 0.05, cells=need - 1) > row.room
    text = "\n".join(aim_markdown([row]))
    assert f"would need about {need} paired cells per comparison ({need} seed(s) on each" in text
    assert "on one test set they would still hold only the seeds' training noise" in text


def test_where_more_seeds_of_the_same_folds_cannot_decide_the_report_says_so(tmp_path):
    """Under the corrected resampled t the detectable difference never falls below
    sqrt(n_test / n_train) of the spread: six folds whose spread is far above the room stay
    undecided with any number of seeds."""
    base = np.full(6, 0.995)
    _arm(tmp_path, "baseline", base, folds=True)
    _arm(tmp_path, "pgm", base - 0.01 + _noise(1, scale=0.02), folds=True)
    _arm(tmp_path, "uni_heads", base - 0.01 + _noise(2, scale=0.02), folds=True)
    report = build_report(tmp_path, SUITE, plots=False)
    (row,) = report.aim
    assert row.outcome == "undecided" and row.folds == 6
    v = row.versus["uni_heads"]
    assert v["test"] == "corrected" and v["ratio"] == pytest.approx(0.25)
    assert row.cells_needed is None and row.detectable_unlimited > row.room
    assert row.detectable_unlimited == pytest.approx(
        detectable_at(v["detectable"], 6, 0.05, cells=math.inf, ratio=0.25)
    )
    assert (
        "more seeds of these folds cannot decide it" in (report.out_dir / "report.md").read_text()
    )
    frame = pd.read_csv(report.out_dir / "aim.csv")
    line = frame[frame["arm"] == "uni_heads"].iloc[0]
    assert line["detectable_unlimited"] == pytest.approx(row.detectable_unlimited)
    assert pd.isna(line["cells_needed"])


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
    assert row.outcome == "incomplete" and row.missing == ["umt", "ogm_ge", "mmpareto or agm"]
    assert row.settings == {"baseline": 1, "pgm-guided": 7, "uni_heads": 1}
    assert row.caveats == [
        "`pgm-guided` tried 7 settings per cell, `uni_heads` 1: part of a difference may come "
        "from the larger budget"
    ]
    assert "- budgets: `pgm-guided` tried 7" in report.markdown
    assert "; budgets: `pgm-guided` tried 7" in verdict(report)[-1]


def test_fold_means_check_averages_each_fold_s_seeds_first(tmp_path):
    """Seeds repeated on one fold's rows are not independent resamples: the check averages them
    per fold and runs the same corrected test over the folds."""
    rng = np.random.default_rng(7)
    values = {}
    for arm, shift in (("baseline", 0.0), ("pgm", 0.03), ("uni_heads", 0.01)):
        for fold in range(3):
            for seed in range(3):
                value = 0.7 + shift + 0.02 * fold + rng.normal(0, 0.01)
                values[(arm, fold, seed)] = value
                key, body = record(arm=arm, fold=fold, seed=seed, primary_value=float(value))
                write(tmp_path, key, body)
    report = build_report(tmp_path, SUITE, plots=False)
    (row,) = report.aim
    means = {
        arm: [np.mean([values[(arm, f, s)] for s in range(3)]) for f in range(3)]
        for arm in ("pgm", "uni_heads")
    }
    c = compare(means["pgm"], means["uni_heads"], 20 / 80)
    v = row.versus["uni_heads"]
    assert v["n"] == 9 and v["p_folds"] == pytest.approx(c.p)
    assert v["p_holm_folds"] == pytest.approx(c.p)  # one alternative: Holm changes nothing
    frame = pd.read_csv(report.out_dir / "aim.csv")
    assert frame.loc[frame["arm"] == "uni_heads", "p_folds"].iloc[0] == pytest.approx(c.p)
    # one seed per fold: nothing to average, no check
    _winning_grid(tmp_path / "one-seed")
    (row,) = build_report(tmp_path / "one-seed", SUITE, plots=False).aim
    assert all(math.isnan(v["p_folds"]) for v in row.versus.values())
