"""``pgm bench report``: record checks, tables, paired statistics, Holm, plots, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pgm_plugins.bench.report import (
    CONTRACT,
    build_report,
    check_record,
    main,
    truth_agreement,
)
from pgm_plugins.bench.results import ResultStore
from pgm_plugins.bench.stats import compare, holm

SUITE = "toy"


def record(
    dataset: str = "mosi-utterance",
    protocol: str = "clean",
    host: str = "h1",
    arm: str = "baseline",
    fold: int = 0,
    seed: int = 0,
    primary_value: float = 0.7,
    wf1: float = 0.6,
    sizes: tuple[int, int, int] = (80, 10, 20),
    block: int = 0,
    shares: dict[str, float] | None = None,
    parts: dict[str, Any] | None = None,
    truth: dict[str, Any] | None = None,
    step_ms: float = 2.0,
    train_digest: str | None = "fixed",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record in the shape of docs/results.md (key, body)."""
    key = {
        "suite": SUITE,
        "dataset": dataset,
        "protocol": protocol,
        "host": host,
        "arm": arm,
        "fold": fold,
        "seed": seed,
    }
    test = {"acc": primary_value, "acc2": primary_value, "wf1": wf1, "macro_f1": wf1}
    body = {
        "status": "done",
        "suite": {"name": SUITE, "file": "toy.toml", "digest": "abc"},
        # one training set per fold, the same in every seed (a fixed split) by default
        **({"train_digest": f"{train_digest}-fold{fold}"} if train_digest else {}),
        "data": {
            "name": dataset,
            "protocol": protocol,
            "description": "hand-made records",
            "rows": 110,
            "shapes": {"a": [4], "b": [4]},
            "task": "classification",
            "num_classes": 2,
            "digest": "d0",
            "primary": "acc2",
            "changes": [],
        },
        "host": {"name": host, "description": "", "changes": []},
        "arm": {"name": arm, "kind": "", "description": "", "changes": {}},
        "setting": {},
        "selection": [],
        "primary": "acc2",
        "higher_is_better": True,
        "metrics": {"valid": dict(test), "test": test},
        "sizes": {"train": sizes[0], "valid": sizes[1], "test": sizes[2]},
        "curves": {"train_loss": [1.0], "valid_loss": [1.0], "valid_primary": [0.5]},
        "best_epoch": 0,
        "epochs_run": 1,
        "epoch_cap": 5,
        "patience": 2,
        "train": {"lr": 0.001},
        "parameters": {"host": 1000, "block": block},
        "time": {"wall_s": 1.5, "train_s": 1.0, "steps": 10, "step_ms": step_ms},
        "shares": shares,
        "parts": parts,
        "truth": truth,
        "env": {"git": {"commit": "0123456789abcdef", "dirty": False}},
    }
    return key, body


def write(root: Path, key: dict[str, Any], body: dict[str, Any]) -> Path:
    return ResultStore(root / SUITE).write(key, body)


def grid(
    root: Path,
    values: dict[tuple[str, str], dict[tuple[int, int], float]],
    sizes: tuple[int, int, int] = (80, 10, 20),
) -> None:
    """Write records ``values[(host, arm)][(fold, seed)] = primary``; wf1 = primary - 0.1."""
    for (host, arm), cells in values.items():
        for (fold, seed), v in cells.items():
            write(
                root,
                *record(
                    host=host,
                    arm=arm,
                    fold=fold,
                    seed=seed,
                    primary_value=v,
                    wf1=v - 0.1,
                    sizes=sizes,
                    block=0 if arm == "baseline" else 50,
                ),
            )


def random_values(rng: np.random.Generator, folds: int, seeds: int, shift: float) -> dict:
    return {
        (f, s): float(0.6 + shift + 0.05 * rng.standard_normal())
        for f in range(folds)
        for s in range(seeds)
    }


# ------------------------------------------------------------------------------- statistics


def test_corrected_resampled_t_matches_a_hand_calculation():
    a = [0.71, 0.69, 0.74, 0.70, 0.73]
    b = [0.70, 0.66, 0.71, 0.71, 0.69]
    d = [x - y for x, y in zip(a, b, strict=True)]  # 0.01, 0.03, 0.03, -0.01, 0.04
    mean = sum(d) / 5
    var = sum((x - mean) ** 2 for x in d) / 4
    ratio = 20 / 80
    se = math.sqrt((1 / 5 + ratio) * var)
    t = mean / se
    crit = sps.t.ppf(0.975, 4)
    c = compare(a, b, test_train_ratio=ratio)
    assert c.mean == pytest.approx(0.02)
    assert c.p == pytest.approx(2 * sps.t.sf(abs(t), 4))
    assert (c.low, c.high) == pytest.approx((mean - crit * se, mean + crit * se))
    assert c.wins == 4 and c.n == 5
    # ratio 0 is the plain paired t-test
    assert compare(a, b).p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    # a lower-is-better metric counts the cells where the arm is lower as wins
    assert compare(a, b, higher_is_better=False).wins == 1


def test_holm_matches_a_hand_calculation():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


# ---------------------------------------------------------------------------------- tables


def test_table_numbers_equal_pandas_and_tests_follow_the_folds(tmp_path):
    rng = np.random.default_rng(0)
    values = {
        ("h1", "baseline"): random_values(rng, 3, 2, 0.0),
        ("h1", "pgm"): random_values(rng, 3, 2, 0.02),
        ("h1", "capacity"): random_values(rng, 3, 2, 0.01),
    }
    grid(tmp_path, values, sizes=(80, 10, 20))
    rep = build_report(tmp_path, SUITE, plots=False)
    assert rep.problems == []
    for arm in ("baseline", "pgm", "capacity"):
        v = pd.Series(list(values[("h1", arm)].values()))
        row = rep.table[(rep.table["host"] == "h1") & (rep.table["arm"] == arm)].iloc[0]
        assert row["acc2_mean"] == pytest.approx(v.mean())
        assert row["acc2_std"] == pytest.approx(v.std())
        assert row["wf1_mean"] == pytest.approx((v - 0.1).mean())
        assert row["n"] == len(v)
    # several folds share training data: the corrected test with n_test / n_train = 20 / 80
    comp = rep.comparisons
    row = comp[
        (comp["arm"] == "pgm") & (comp["reference"] == "baseline") & (comp["metric"] == "acc2")
    ]
    keys = sorted(values[("h1", "pgm")])
    want = compare(
        [values[("h1", "pgm")][k] for k in keys],
        [values[("h1", "baseline")][k] for k in keys],
        0.25,
    )
    assert row["test"].item() == "corrected" and row["ratio"].item() == pytest.approx(0.25)
    assert row["diff"].item() == pytest.approx(want.mean)
    assert row["p"].item() == pytest.approx(want.p)
    assert (row["low"].item(), row["high"].item()) == pytest.approx((want.low, want.high))
    # the files are there
    out = tmp_path / SUITE / "report"
    assert (out / "report.md").read_text() == rep.markdown
    csv = pd.read_csv(out / "report.csv")
    assert list(csv["arm"]) == list(rep.table["arm"])
    assert csv.loc[csv["arm"] == "pgm", "vs_baseline_acc2_p"].item() == pytest.approx(want.p)


def test_one_fixed_split_uses_the_plain_paired_t(tmp_path):
    rng = np.random.default_rng(1)
    values = {
        ("h1", "baseline"): random_values(rng, 1, 5, 0.0),
        ("h1", "pgm"): random_values(rng, 1, 5, 0.03),
    }
    grid(tmp_path, values)
    comp = build_report(tmp_path, SUITE, plots=False).comparisons
    row = comp[(comp["arm"] == "pgm") & (comp["metric"] == "acc2")]
    keys = sorted(values[("h1", "pgm")])
    want = sps.ttest_rel(
        [values[("h1", "pgm")][k] for k in keys], [values[("h1", "baseline")][k] for k in keys]
    )
    assert row["test"].item() == "paired"
    assert row["p"].item() == pytest.approx(want.pvalue)


def test_holm_runs_over_every_comparison_of_a_data_set_with_one_reference(tmp_path):
    """One family per (reference, metric): the data set's hosts x arms."""
    rng = np.random.default_rng(2)
    values = {}
    for host in ("h1", "h2", "h3"):
        values[(host, "baseline")] = random_values(rng, 1, 4, 0.0)
        values[(host, "pgm")] = random_values(rng, 1, 4, 0.04)
        values[(host, "capacity")] = random_values(rng, 1, 4, 0.02)
    grid(tmp_path, values)
    comp = build_report(tmp_path, SUITE, plots=False).comparisons
    fam = comp[(comp["reference"] == "baseline") & (comp["metric"] == "acc2")]
    assert len(fam) == 6 and set(fam["arm"]) == {"pgm", "capacity"}
    assert fam["p_holm"].tolist() == pytest.approx(holm(fam["p"].tolist()))
    assert (fam["p_holm"] >= fam["p"]).all()
    other = comp[(comp["reference"] == "capacity") & (comp["metric"] == "acc2")]
    assert other["p_holm"].tolist() == pytest.approx(holm(other["p"].tolist()))


def test_unpaired_cells_are_counted_and_left_out(tmp_path):
    rng = np.random.default_rng(3)
    base = random_values(rng, 2, 3, 0.0)
    pgm = random_values(rng, 2, 3, 0.02)
    del pgm[(1, 2)]  # this cell of pgm is missing
    pgm[(5, 9)] = 0.9  # and this one has no baseline partner
    grid(tmp_path, {("h1", "baseline"): base, ("h1", "pgm"): pgm})
    rep = build_report(tmp_path, SUITE, plots=False)
    row = rep.comparisons[
        (rep.comparisons["arm"] == "pgm") & (rep.comparisons["metric"] == "acc2")
    ].iloc[0]
    assert (row["n"], row["unpaired_arm"], row["unpaired_ref"]) == (5, 1, 1)
    keys = sorted(set(base) & set(pgm))
    assert row["diff"] == pytest.approx(np.mean([pgm[k] - base[k] for k in keys]))
    assert "unpaired: `pgm` vs `baseline`: 1 cell(s) of `pgm` and 1 of `baseline`" in rep.markdown


def test_single_modalities_appear_in_every_host_table_with_the_best_marked(tmp_path):
    rng = np.random.default_rng(4)
    values = {
        ("h1", "baseline"): random_values(rng, 1, 3, 0.0),
        ("h2", "baseline"): random_values(rng, 1, 3, 0.0),
        ("late_fusion", "only.a"): random_values(rng, 1, 3, -0.2),
        ("late_fusion", "only.b"): random_values(rng, 1, 3, 0.1),
    }
    grid(tmp_path, values)
    table = build_report(tmp_path, SUITE, plots=False).table
    for host in ("h1", "h2"):
        rows = table[table["host"] == host].set_index("arm")
        assert {"baseline", "only.a", "only.b"} <= set(rows.index)
        assert rows.loc["only.b", "best_single"] and not rows.loc["only.a", "best_single"]
        assert rows.loc["only.b", "cells_from_host"] == "late_fusion"
    assert "late_fusion" not in set(table["host"])


# ------------------------------------------------------------------------------- bad files


def test_corrupt_partial_and_misfiled_records_are_reported_and_skipped(tmp_path):
    rng = np.random.default_rng(5)
    values = {("h1", "baseline"): random_values(rng, 1, 3, 0.0)}
    grid(tmp_path, values)
    folder = tmp_path / SUITE
    # truncated JSON (a partly written file)
    key, body = record(seed=7, primary_value=0.0)
    path = write(tmp_path, key, body)
    truncated = path.read_text()[:200]
    path.write_text(truncated)
    # a record without metrics
    key, body = record(seed=8, primary_value=0.0)
    del body["metrics"]
    no_metrics = write(tmp_path, key, body)
    # the file of one cell holding another cell's key
    key, body = record(seed=9, primary_value=0.0)
    wrong = folder / ResultStore(folder).path({**key, "seed": 10}).name
    wrong.write_text(json.dumps({"key": key, **body}))
    # a key with a field the contract does not have
    key, body = record(seed=11, primary_value=0.0)
    extra = ResultStore(folder).write({**key, "variant": "x"}, body)

    rep = build_report(tmp_path, SUITE, plots=False)
    reasons = {p.path.name: p.reason for p in rep.problems}
    assert set(reasons) == {path.name, no_metrics.name, wrong.name, extra.name}
    assert "corrupt JSON" in reasons[path.name]
    assert "'metrics'" in reasons[no_metrics.name]
    assert "wrong key" in reasons[wrong.name] and "wrong key" in reasons[extra.name]
    # nothing of them is averaged in
    row = rep.table[rep.table["arm"] == "baseline"].iloc[0]
    assert row["n"] == 3
    assert row["acc2_mean"] == pytest.approx(np.mean(list(values[("h1", "baseline")].values())))
    for name in reasons:
        assert name in rep.markdown


def test_check_record_names_what_is_wrong(tmp_path):
    key, body = record()
    path = ResultStore(tmp_path).path(key)
    assert check_record({"key": key, **body}, path, SUITE) is None
    assert "not a JSON object" in check_record([1], path, SUITE)
    for field in CONTRACT[1:]:
        partial = {"key": key, **{k: v for k, v in body.items() if k != field}}
        assert repr(field) in check_record(partial, path, SUITE)
    bad = {"key": key, **body, "status": "running"}
    assert "status" in check_record(bad, path, SUITE)
    bad = {"key": key, **body, "metrics": {"valid": {}, "test": {"acc": 0.5}}}
    assert "acc2" in check_record(bad, path, SUITE)
    bad = {"key": key, **body, "metrics": {"valid": {}, "test": {"acc2": "high"}}}
    assert "not a number" in check_record(bad, path, SUITE)
    bad = {"key": {**key, "seed": "0"}, **body}
    assert "seed" in check_record(bad, path, SUITE)
    assert "suite" in check_record({"key": key, **body}, path, "other")


def test_nothing_to_report_is_a_clear_error(tmp_path, capsys):
    assert main(None, tmp_path / "absent", None, "markdown") == 2
    assert "no results under" in capsys.readouterr().err
    assert main("quick", tmp_path / "absent", None, "markdown") == 2
    assert "pgm bench run" in capsys.readouterr().err
    (tmp_path / "res" / "quick").mkdir(parents=True)
    assert main("quick", tmp_path / "res", None, "markdown") == 2
    assert "no result records for suite 'quick'" in capsys.readouterr().err
    bad = tmp_path / "res" / "quick" / "x.json"
    bad.write_text("{")
    assert main("quick", tmp_path / "res", None, "markdown") == 2
    assert "none of the 1 result file(s)" in capsys.readouterr().err


def test_a_misspelt_suite_points_at_the_suite_that_ran_not_at_running_the_typo(tmp_path, capsys):
    write(tmp_path, *record())
    assert main(SUITE[:-1], tmp_path, None, "none") == 2
    err = capsys.readouterr().err
    assert f"Did you mean {SUITE!r}" in err and f"Report it: `pgm bench report {SUITE}`" in err
    assert "pgm bench run" not in err
    assert main("quick", tmp_path / "res", None, "html") == 2
    assert "unknown format 'html'" in capsys.readouterr().err


def test_main_prints_csv_and_reports_every_suite(tmp_path, capsys):
    grid(tmp_path, {("h1", "baseline"): {(0, 0): 0.5, (0, 1): 0.6}})
    assert main(None, tmp_path, None, "csv") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("suite,dataset,protocol,host,arm")
    assert (tmp_path / SUITE / "report" / "report.csv").read_text() == out


# ------------------------------------------------------------------------- truth and plots


def test_truth_agreement_is_computed_from_the_shares():
    truth = {"true_uni_share": {"a": 0.75, "b": 0.25, "c": None}}
    got = truth_agreement({"a": 0.6, "b": 0.4, "c": 0.9}, truth)
    assert (got["pairs"], got["pairs_ok"], got["order_ok"]) == (1, 1, True)
    assert math.isnan(got["spearman"])  # two known modalities
    got = truth_agreement({"a": 0.3, "b": 0.4, "c": 0.0}, truth)
    assert (got["pairs_ok"], got["order_ok"]) == (0, False)
    three = {"a": 0.8, "b": 0.5, "c": 0.2}
    got = truth_agreement({"a": 0.5, "b": 0.6, "c": 0.1}, three)
    assert (got["pairs"], got["pairs_ok"], got["order_ok"]) == (3, 2, False)
    assert got["spearman"] == pytest.approx(sps.spearmanr([0.5, 0.6, 0.1], [0.8, 0.5, 0.2])[0])
    got = truth_agreement({"a": 0.5, "b": 0.6, "c": 0.1}, {"order_by_uni_share": ["b", "a", "c"]})
    assert got["order_ok"] and got["spearman"] == pytest.approx(1.0)


def test_truth_line_counts_the_cells(tmp_path):
    truth = {"true_uni_share": {"a": 0.75, "b": 0.25}}
    learned = [
        {"a": 0.6, "b": 0.4},
        {"a": 0.7, "b": 0.2},
        {"a": 0.3, "b": 0.5},
        {"a": 0.5, "b": 0.1},
    ]
    for seed, shares in enumerate(learned):
        for arm in ("baseline", "pgm"):
            key, body = record(
                dataset="synthetic",
                protocol="default",
                arm=arm,
                seed=seed,
                shares=shares if arm == "pgm" else None,
                truth=truth,
            )
            write(tmp_path, key, body)
    md = build_report(tmp_path, SUITE, plots=False).markdown
    assert "as the truth does in 3/4 cells (0.75)" in md
    # an arm whose shares are fixed (not the gate partitioner) is not judged against the truth
    for seed in range(4):
        key, body = record(
            dataset="synthetic",
            protocol="default",
            arm="interaction",
            seed=seed,
            shares={"a": 0.5, "b": 0.5},
            truth=truth,
        )
        body["block_config"] = {"partitioner": "split"}
        write(tmp_path, key, body)
    md = build_report(tmp_path, SUITE, plots=False).markdown
    assert md.count("as the truth does in") == 1
    assert "fixed shares (partitioner split): not learned" in md


def _parts(rng: np.random.Generator, uni: int, paired: int, rows: int = 30) -> dict[str, Any]:
    return {
        "uni": rng.standard_normal((rows, uni)).round(4).tolist(),
        "paired": rng.standard_normal((rows, paired)).round(4).tolist(),
        "y": rng.integers(0, 2, rows).tolist(),
    }


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(6)
    for host in ("h1", "h2"):
        for seed in range(3):
            shares = {"a": float(rng.uniform()), "b": float(rng.uniform())}
            parts = {"a": _parts(rng, 4, 4), "b": _parts(rng, 3, 5)}
            for arm in ("baseline", "pgm"):
                key, body = record(
                    host=host,
                    arm=arm,
                    seed=seed,
                    shares=shares if arm == "pgm" else None,
                    parts=parts if arm == "pgm" else None,
                )
                write(tmp_path, key, body)
    out = tmp_path / "out"
    rep = build_report(tmp_path, SUITE, out)
    names = sorted(p.name for p in rep.plots)
    assert names == [
        "parts__mosi-utterance__clean__h1.png",
        "parts__mosi-utterance__clean__h2.png",
        "shares__mosi-utterance__clean.png",
        "summary__mosi-utterance__clean.png",
    ]
    for p in rep.plots:
        assert p.parent == out
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        assert p.name in rep.markdown


def test_step_time_file_and_cells_step_time(tmp_path):
    grid(tmp_path, {("mmsa.h1", "baseline"): {(0, 0): 0.5}, ("mmsa.h1", "pgm"): {(0, 0): 0.6}})
    step = tmp_path / "step_time.json"
    step.write_text(
        json.dumps(
            {
                "commit": "feedbeef",
                "dirty": False,
                "settings": {"threads": 1},
                "machine": {"load_average_before": [0.5]},
                "results": [
                    {
                        "kind": "h1",
                        "host_parameters": 1000,
                        "block_parameters": 100,
                        "step_s_median": {"host": 0.01},
                        "ratio_pgm": 1.25,
                        "ratio_pgm_small": 1.1,
                        "ratio_identity": 1.0,
                        "ratio_floor": 1.2,
                    }
                ],
            }
        )
    )
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[step])
    assert "x1.250" in rep.markdown and str(step) in rep.markdown
    assert "host 10.0 ms/step" in rep.markdown
    assert "the block's own cost alone x1.200" in rep.markdown
    assert "measured under load" in rep.markdown


# --------------------------------------------------------------- records from the runner


def _runner_data(protocol=None, data_dir=None, n=80):
    from pgm_plugins.bench.data.bench_data import BenchData, Fold

    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = rng.normal(size=(n, 5)).astype(np.float32)
    y = (a[:, 0] + b[:, 0] > 0).astype(np.int64)

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n)
        out = []
        for k in range(2):
            test = perm[k * 20 : (k + 1) * 20]
            rest = np.setdiff1d(perm, test)
            out.append(Fold(rest[:-12], rest[-12:], test, k, seed))
        return out

    return BenchData(
        "tinyrep",
        protocol or "default",
        "tiny report data",
        {"a": a, "b": b},
        y,
        "classification",
        folds,
        "1" * 64,
        "acc",
        num_classes=2,
        extras={"truth": {"order_by_uni_share": ["a", "b"]}},
    )


def test_the_runners_records_pass_the_checks_and_make_a_report(tmp_path, core_registry):
    import types

    import torch

    from pgm_plugins import hookimpl
    from pgm_plugins.bench.runner import Runner
    from pgm_plugins.bench.suite import parse_suite

    plugin = types.ModuleType("tiny_report_plugin")

    @hookimpl
    def pgm_register_datasets(register):
        register("tinyrep", _runner_data, "tiny report data")

    plugin.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    reg = core_registry
    reg.register_plugin(plugin, "tinyrep")
    reg.refresh()
    table = {
        "dataset": "tinyrep",
        "hosts": ["late_fusion"],
        "arms": ["baseline", "pgm", "capacity", "only.a", "only.b"],
        "seeds": [0, 1],
        "epochs": 1,
        "patience": 1,
        "batch": 32,
    }
    suite = parse_suite("rep", table, datasets=reg.datasets.names(), hosts=reg.bench_hosts.names())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = Runner(suite, tmp_path, registry=reg, quiet=True)
        runner.run(runner.plan())
    finally:
        torch.set_num_threads(threads)
    rep = build_report(tmp_path, "rep", plots=False)
    assert rep.problems == []
    assert len(rep.cells) == 2 * 2 * 5
    rows = rep.table.set_index("arm")
    assert set(rows.index) == {"baseline", "pgm", "capacity", "only.a", "only.b"}
    assert (rows["n"] == 4).all()
    comp = rep.comparisons
    pgm = comp[(comp["arm"] == "pgm") & (comp["reference"] == "baseline")].iloc[0]
    assert pgm["test"] == "corrected" and pgm["n"] == 4
    assert pgm["ratio"] == pytest.approx(20 / 48)


def test_a_lower_is_better_primary_and_the_regression_metrics(tmp_path):
    rng = np.random.default_rng(7)
    maes: dict[str, dict[int, float]] = {}
    for host, arm, shift in (
        ("h1", "baseline", 0.0),
        ("h1", "pgm", -0.05),
        ("late_fusion", "only.a", 0.3),
        ("late_fusion", "only.b", 0.1),
    ):
        maes[arm] = {}
        for seed in range(4):
            key, body = record(host=host, arm=arm, seed=seed)
            mae = float(0.8 + shift + 0.02 * rng.standard_normal())
            maes[arm][seed] = mae
            test = {"mae": mae, "corr": 0.5, "acc7": 0.3, "acc2_has0": 0.7, "acc2_non0": 0.72}
            body.update(primary="mae", higher_is_better=False)
            body["metrics"] = {"valid": dict(test), "test": test}
            body["data"] = {**body["data"], "task": "regression", "primary": "mae"}
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False)
    rows = rep.table.set_index("arm")
    assert {"mae_mean", "corr_mean", "acc7_mean", "acc2_non0_mean", "acc2_has0_mean"} <= set(
        rep.table.columns
    )
    assert rows.loc["only.b", "best_single"] and not rows.loc["only.a", "best_single"]
    comp = rep.comparisons
    row = comp[(comp["arm"] == "pgm") & (comp["metric"] == "mae")].iloc[0]
    lower = sum(maes["pgm"][s] < maes["baseline"][s] for s in range(4))
    assert row["wins"] == lower
    assert "lower is better" in rep.markdown


def test_several_suites_need_a_name(tmp_path):
    from pgm_plugins.bench.report import ReportError

    grid(tmp_path, {("h1", "baseline"): {(0, 0): 0.5, (0, 1): 0.6}})
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.json").write_text("{}")
    with pytest.raises(ReportError, match="2 suites with results \\('other', 'toy'\\)"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="Did you mean 'toy'"):
        build_report(tmp_path, "tyo")


def test_mixed_digests_and_legacy_records_are_flagged(tmp_path):
    rng = np.random.default_rng(3)
    for seed in range(3):
        for arm in ("baseline", "pgm"):
            key, body = record(
                arm=arm,
                seed=seed,
                primary_value=float(0.6 + 0.05 * rng.standard_normal()),
                train_digest=None,
            )
            if seed == 2:  # a later run: other data, other settings
                body["data"]["digest"] = "f" * 64
                body["cell_digest"] = f"{arm}-new"
            elif seed == 1:
                body["cell_digest"] = f"{arm}-old"
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[])
    md = rep.markdown
    assert "WARNING: 2 data digests in this folder" in md
    assert "WARNING: cells of h1/baseline, h1/pgm ran with different settings" in md
    assert "2 record(s) predate cell digests" in md
    # no train_digest (older records), one fold: the plain t, with a warning that says why
    assert set(rep.comparisons.loc[rep.comparisons["n"] >= 2, "test"]) == {"paired-by-folds"}
    assert "predate train_digest" in md


def _digested(arm: str) -> dict[str, Any]:
    """A current cell digest, so the provenance flags only what a test sets."""
    from pgm_plugins.bench.record import DIGEST_SCHEME

    return {"cell_digest": arm, "cell_settings": {"digest_scheme": DIGEST_SCHEME}}


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        (
            {"train": {"lr": 0.001, "device": "cuda:0 (NVIDIA H100 80GB HBM3)"}},
            "devices cpu x3, cuda x3",
        ),
        ({"train": {"lr": 0.001, "precision": "bf16"}}, "precisions bf16 x3, fp32 x3"),
        (
            {"machine": {"cpu": {"model": "Xeon", "capability": "AVX2", "isa": ["avx2"]}}},
            "2 kinds of CPU (AVX2: avx2 x3, AVX512: avx2+avx512f x3)",
        ),
    ],
)
def test_a_comparison_that_mixes_devices_precisions_or_cpus_is_flagged(tmp_path, change, flag):
    """The same cell differs between devices, precisions and CPUs with other vector units (a
    MulT cell by 0.01 in validation accuracy between two CPUs): the report says so."""
    rng = np.random.default_rng(5)
    for seed in range(3):
        for arm in ("baseline", "pgm"):
            key, body = record(
                arm=arm, seed=seed, primary_value=float(0.6 + 0.05 * rng.standard_normal())
            )
            body |= _digested(arm)
            cpu = {"model": "Xeon", "capability": "AVX512", "isa": ["avx2", "avx512f"]}
            body["env"]["machine"] = {"cpu": cpu}
            if arm == "pgm":
                if "machine" in change:
                    body["env"]["machine"] = change["machine"]
                else:
                    body.update(change)
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[])
    row = rep.comparisons[(rep.comparisons["arm"] == "pgm") & (rep.comparisons["n"] == 3)]
    assert set(row["provenance"]) == {flag}
    assert f"- provenance of `pgm`/`baseline`: {flag}" in rep.markdown


@pytest.mark.parametrize(
    ("named", "flags"),
    [
        ({"baseline", "pgm"}, {""}),  # one CPU
        (set(), {""}),  # none says: nothing to compare
        ({"pgm"}, {"3/6 CPU cells do not name their CPU"}),  # older records beside newer
    ],
)
def test_cells_that_do_not_name_their_cpu_are_flagged_only_beside_cells_that_do(
    tmp_path, named, flags
):
    for seed in range(3):
        for arm in ("baseline", "pgm"):
            key, body = record(
                arm=arm, seed=seed, primary_value=0.6 + 0.01 * seed + 0.02 * (arm == "pgm")
            )
            body |= _digested(arm)
            if arm in named:
                body["env"]["machine"] = {"cpu": {"model": "Xeon", "capability": "AVX2", "isa": []}}
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[])
    assert set(rep.comparisons["provenance"]) == flags


def test_report_test_kind_follows_the_training_rows(tmp_path):
    rng = np.random.default_rng(4)
    for seed in range(4):
        for arm in ("baseline", "pgm"):
            key, body = record(
                arm=arm,
                seed=seed,
                primary_value=float(0.6 + 0.05 * rng.standard_normal()),
                train_digest=f"seed{seed}",  # a split drawn per seed, fold 0 always
            )
            body["independent_seeds"] = False
            write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[])
    row = rep.comparisons[(rep.comparisons["arm"] == "pgm") & (rep.comparisons["metric"] == "acc2")]
    assert row["test"].item() == "corrected" and row["ratio"].item() == pytest.approx(20 / 80)
    for p in (tmp_path / SUITE).glob("*.json"):  # fresh rows per seed (synthetic)
        r = json.loads(p.read_text())
        r["independent_seeds"] = True
        p.write_text(json.dumps(r))
    rep = build_report(tmp_path, SUITE, plots=False, step_time_files=[])
    row = rep.comparisons[(rep.comparisons["arm"] == "pgm") & (rep.comparisons["metric"] == "acc2")]
    assert row["test"].item() == "independent" and "fresh, disjoint rows" in rep.markdown


def test_report_of_every_suite_goes_past_unusable_folders(tmp_path, capsys):
    other = tmp_path / "aaa_method"  # sorted before the suite: JSON that is not a record
    other.mkdir()
    (other / "summary.json").write_text('{"not": "a record"}')
    grid(tmp_path, {("h1", "baseline"): {(0, 0): 0.6, (0, 1): 0.7}})
    assert main(None, tmp_path, None, "none") == 0
    err = capsys.readouterr().err
    assert "aaa_method" in err and f"report of suite {SUITE!r}" in err
    assert (tmp_path / SUITE / "report" / "report.md").is_file()
    assert main("aaa_method", tmp_path, None, "none") == 2  # named: still an error


# ------------------------------------------------- committed reports, inputs and shown paths

REPO = Path(__file__).resolve().parents[1]


def test_a_committed_report_comes_out_identical(tmp_path, monkeypatch):
    # benchmarks/results/av-digits-timm-long/report was written by `pgm bench report
    # av-digits-timm-long --step-times adapters/*/benchmarks/results/step_time*.json`; only the
    # line naming the folder the records were read from depends on where it ran
    monkeypatch.chdir(REPO)
    suite = "av-digits-timm-long"
    committed = REPO / "benchmarks" / "results" / suite / "report"
    steps = sorted(REPO.glob("adapters/*/benchmarks/results/step_time*.json"))
    rep = build_report(REPO / "benchmarks" / "results", suite, tmp_path, step_time_files=steps)

    def lines(text: str) -> list[str]:
        return [x for x in text.splitlines() if not x.startswith("- records: ")]

    assert lines(rep.markdown) == lines((committed / "report.md").read_text(encoding="utf-8"))
    assert f"cells read from `benchmarks/results/{suite}`" in rep.markdown
    written = (tmp_path / "report.csv").read_text(encoding="utf-8")
    assert written == (committed / "report.csv").read_text(encoding="utf-8")


def test_without_step_times_the_report_says_none_was_given(tmp_path):
    grid(tmp_path, {("mmsa.h1", "baseline"): {(0, 0): 0.5}, ("mmsa.h1", "pgm"): {(0, 0): 0.6}})
    rep = build_report(tmp_path, SUITE, plots=False)
    said = [x for x in rep.markdown.splitlines() if "step-time" in x.lower()]
    assert said == [
        "## Step-time microbenchmark",
        "(no step-time microbenchmark was given (pass --step-times FILE...))",
    ]
    assert "adapters/" not in rep.markdown


def test_a_missing_step_time_file_is_named(tmp_path, capsys):
    grid(tmp_path, {("h1", "baseline"): {(0, 0): 0.5}})
    gone = tmp_path / "step_time_gone.json"
    with pytest.raises(ValueError, match=r"no step-time file .*step_time_gone\.json"):
        build_report(tmp_path, SUITE, plots=False, step_time_files=[gone])
    assert main(SUITE, tmp_path, fmt="none", step_times=[gone]) == 2
    assert "step_time_gone.json" in capsys.readouterr().err


def test_paths_are_shown_relative_inside_the_current_folder_else_absolute(tmp_path, monkeypatch):
    from pgm_plugins.bench.report import shown_path

    (tmp_path / "inside").mkdir()
    monkeypatch.chdir(tmp_path)
    assert shown_path(Path("inside") / "x.json") == str(Path("inside") / "x.json")
    assert shown_path(tmp_path / "inside" / "x.json") == str(Path("inside") / "x.json")
    monkeypatch.chdir(tmp_path / "inside")
    assert shown_path(tmp_path / "y.json") == str(tmp_path.resolve() / "y.json")
    grid(tmp_path, {("h1", "baseline"): {(0, 0): 0.5}})
    rep = build_report(tmp_path, SUITE, plots=False)
    assert f"cells read from `{tmp_path.resolve() / SUITE}`" in rep.markdown
