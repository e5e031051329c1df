"""The first method study's committed records, read through the one reader (its numbers stay
as published in docs/method.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgm_plugins.bench.record import read_records
from pgm_plugins.bench.stats import compare

METHOD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "method"


def _by(records, arm, split="test", metric="acc"):
    return {
        (r["key"]["seed"], r["key"]["fold"]): r["metrics"][split][metric]
        for _, r in records
        if r["key"]["arm"] == arm
    }


@pytest.mark.parametrize(
    ("study", "cells"),
    [
        ("synthetic", 180),
        ("design", 40),
        ("mosi", 105),
        ("synthetic_gate_default", 90),
        ("mosi_gate_default", 15),
    ],
)
def test_every_study_folder_reads_whole(study, cells):
    good, problems = read_records(METHOD / study, study)
    assert problems == [] and len(good) == cells
    for _, r in good:
        assert r["upgraded_from"] == 0 and r["key"]["suite"] == study
        assert r["key"]["host"] == "late_fusion" and r["key"]["arm"] != "host"
        assert r["primary"] == "acc" and "wf1" in r["metrics"]["test"]


def test_mosi_keeps_the_settings_the_study_chose_and_its_published_numbers():
    good, _ = read_records(METHOD / "mosi", "mosi")
    chosen = {r["key"]["arm"]: r["setting"] for _, r in good}
    assert chosen["baseline"] == {"lr": 0.001, "dropout": 0.0}
    assert chosen["pgm"] == {"lr": 0.003, "dropout": 0.0}
    assert all(len(r["selection"]) == 4 for _, r in good)
    pgm, cap = _by(good, "pgm"), _by(good, "capacity")
    assert f"{np.mean(list(pgm.values())):.3f}" == "0.700"
    assert f"{np.std(list(pgm.values()), ddof=1):.3f}" == "0.084"
    keys = sorted(pgm)
    ratio = float(np.mean([r["sizes"]["test"] / r["sizes"]["train"] for _, r in good]))
    c = compare([pgm[k] for k in keys], [cap[k] for k in keys], ratio)
    assert (f"{c.mean:+.3f}", f"{c.low:+.3f}", f"{c.high:+.3f}", f"{c.p:.2f}") == (
        "-0.000",
        "-0.057",
        "+0.057",
        "0.99",
    )


def test_synthetic_keeps_its_published_numbers():
    good, _ = read_records(METHOD / "synthetic", "synthetic")
    default = [(p, r) for p, r in good if r["key"]["protocol"] == "default"]
    pgm, base = _by(default, "pgm"), _by(default, "baseline")
    keys = sorted(pgm)
    c = compare([pgm[k] for k in keys], [base[k] for k in keys])
    assert (f"{c.mean:+.3f}", f"{c.low:+.3f}", f"{c.high:+.3f}", f"{c.p:.3f}") == (
        "+0.021",
        "-0.004",
        "+0.045",
        "0.088",
    )
    probes = [r["extra"]["probe"] for _, r in default if "probe" in r["extra"]]
    assert len(probes) == 20  # pgm and interaction, 10 seeds each


def test_a_partial_study_file_is_left_out_by_reason(tmp_path):
    src = sorted((METHOD / "design").glob("*.json"))
    folder = tmp_path / "design"
    folder.mkdir()
    for p in src[:3]:
        shutil.copy(p, folder / p.name)
    raw = json.loads(src[0].read_text())
    del raw["metrics"]
    (folder / src[0].name).write_text(json.dumps(raw))
    good, problems = read_records(folder, "design")
    assert len(good) == 2 and len(problems) == 1
    assert "'metrics'" in problems[0].reason and problems[0].path.name == src[0].name


def test_a_validation_report_scores_validation_rows_only(tmp_path):
    from pgm_plugins.bench.report import build_report

    report = build_report(METHOD, "mosi", tmp_path, split="valid")
    good, _ = read_records(METHOD / "mosi", "mosi")
    valid = {(r["key"]["arm"], r["key"]["seed"], r["key"]["fold"]): r for _, r in good}
    pgm = [r["metrics"]["valid"]["acc"] for k, r in valid.items() if k[0] == "pgm"]
    assert f"{np.mean(pgm):.4f} +- {np.std(pgm, ddof=1):.4f}" in report.markdown
    ratio = np.mean([r["sizes"]["valid"] / r["sizes"]["train"] for r in valid.values()])
    corrected = report.comparisons[report.comparisons["test"] == "corrected"]
    assert np.allclose(corrected["ratio"], ratio, rtol=0.05)  # valid rows, not test rows
    assert "learned uni share" not in report.markdown  # shares were measured on test rows
    assert "scores: the **valid** split" in report.markdown
    assert [p.name for p in report.plots] == ["summary__mosi-utterance__clean.png"]
