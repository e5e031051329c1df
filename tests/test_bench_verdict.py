"""What ``make bench`` tells: the verdict at the end of ``pgm bench run``, where the report and
plots are, one summary plot per data set, progress lines with an ETA in a log, and a quiet
``make setup`` that still shows a failing step."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_bench_cli import env  # noqa: F401  (the fixture: a tiny data set and suite)
from test_bench_report import SUITE, record, write

from pgm_plugins.bench.plots import mean_interval
from pgm_plugins.bench.report import build_report, verdict
from pgm_plugins.bench.suite import suite_name
from pgm_plugins.cli import main

REPO = Path(__file__).resolve().parents[1]


def _arm(root: Path, host: str, arm: str, values: list[float]) -> None:
    for seed, v in enumerate(values):
        write(root, *record(host=host, arm=arm, seed=seed, primary_value=v, wf1=v - 0.1))


def _line(lines: list[str], arm: str) -> str:
    return next(x for x in lines if x.strip().startswith(f"{arm} "))


def test_verdict_says_beats_level_or_worse_against_host_and_control(tmp_path):
    rng = np.random.default_rng(0)
    base = 0.7 + rng.normal(0, 0.01, 6)
    _arm(tmp_path, "h1", "baseline", list(base))
    _arm(tmp_path, "h1", "capacity", list(base + 0.1 + rng.normal(0, 0.002, 6)))
    _arm(tmp_path, "h1", "pgm", list(base + 0.05 + rng.normal(0, 0.002, 6)))
    _arm(tmp_path, "h1", "mslr", list(base + rng.normal(0, 0.02, 6)))
    _arm(tmp_path, "late_fusion", "only.a", list(base + 0.02))
    lines = verdict(build_report(tmp_path, SUITE, plots=False))
    assert lines[0].startswith("Verdict on mosi-utterance/clean, host h1: test acc2")
    assert "6 seed(s)" in lines[0]
    pgm = _line(lines, "pgm")
    assert re.search(r"beats the host: \+0\.0[45]\d\d \[", pgm)
    assert re.search(r"; worse than capacity: -0\.0[45]\d\d \[", pgm)
    assert "(6/6 better)" in pgm and "p_Holm<0.001" in pgm
    assert "level with the host" in _line(lines, "mslr")
    assert (
        "beats the host" in _line(lines, "capacity")
        and "capacity:" not in _line(lines, "capacity").split(";", 1)[0].split(":", 1)[0]
    )
    only = _line(lines, "only.a")
    assert "ahead of the host in every cell: +0.0200, no variation across cells, so no test" in only
    assert "capacity" not in only  # a single modality is compared with the host only
    assert any("level = no difference shown" in line for line in lines)
    # mslr is an alternative users pick instead: the aim's line follows, incomplete without the
    # alternatives the aim names
    assert lines[-1].startswith("Aim on mosi-utterance/clean, host h1: `pgm` (chosen on")
    assert "vs mslr: incomplete (no cells of uni_heads, umt" in lines[-1]


def test_verdict_of_untestable_comparisons(tmp_path):
    _arm(tmp_path, "h1", "baseline", [0.6])
    _arm(tmp_path, "h1", "pgm", [0.7])
    lines = verdict(build_report(tmp_path, SUITE, plots=False))
    assert "untested: 1 paired cell(s) with the host; a comparison needs 2" in _line(lines, "pgm")


def test_one_summary_plot_per_data_set_in_the_report(tmp_path):
    _arm(tmp_path, "h1", "baseline", [0.6, 0.62, 0.61])
    _arm(tmp_path, "h1", "pgm", [0.64, 0.66, 0.65])
    key, body = record(dataset="other", arm="baseline", primary_value=0.5)
    write(tmp_path, key, body)
    rep = build_report(tmp_path, SUITE)
    summaries = sorted(p.name for p in rep.plots if p.name.startswith("summary__"))
    assert summaries == ["summary__mosi-utterance__clean.png", "summary__other__clean.png"]
    for name in summaries:
        assert (rep.out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name[:-4]}]({name})" in rep.markdown


def test_mean_interval_is_the_t_interval():
    from scipy import stats

    v = [0.6, 0.62, 0.61, 0.65]
    mean, low, high = mean_interval(v)
    half = stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2
    assert (mean, low, high) == pytest.approx((np.mean(v), np.mean(v) - half, np.mean(v) + half))
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
    assert all(np.isnan(mean_interval([float("nan")])))


def test_run_ends_with_the_verdict_and_where_the_report_is(env, capsys):  # noqa: F811
    suite, results = env
    assert _run("run", suite, "--results", results, "--arms", "baseline", "pgm") == 0
    out, err = capsys.readouterr()
    name = suite_name(str(suite))
    tail = out.rstrip("\n").splitlines()[-6:]
    assert tail[0].startswith("Verdict on tiny/default, host late_fusion: test acc")
    assert tail[1].lstrip().startswith("pgm ") and "the host" in tail[1]
    assert tail[2].startswith("  (the host = arm baseline")
    report = results / name / "report"
    assert tail[-3] == f"Full report: {report / 'report.md'} (table: report.csv)"
    assert tail[-2].startswith(f"Plots in {report}: summary__tiny__default.png")
    assert tail[-1] == (
        f"Again later: `pgm bench report {name} --results {results}`; every suite and its "
        f"cells: `pgm bench list --results {results}`"
    )
    assert (report / "summary__tiny__default.png").is_file()
    # stderr is not a terminal here: one line per cell with the elapsed time and an ETA
    progress = [x for x in err.splitlines() if x.startswith("[")]
    assert len(progress) == 4
    assert progress[0].startswith("[1/4] late_fusion baseline fold 0 seed 0: test acc ")
    assert all(", ETA " in x and "; elapsed " in x for x in progress)
    assert progress[-1].endswith("ETA 0 s")
    # what it printed finds the results again
    assert _run("report", name, "--results", results, "--format", "none") == 0
    assert _run("list", "--results", results) == 0
    assert f"  {name:<16} done 4; from {suite}" in capsys.readouterr().out


def _run(*args: object) -> int:
    return main(["bench", *map(str, args)])


# ----------------------------------------------------------------------------- make setup


FAKE_PYTHON = """#!/bin/sh
# a stand-in for python: `-m venv DIR` makes DIR/bin/python (this script), `-m pip` is noisy
# and fails when FAKE_PIP_FAIL is set; anything else (a script on stdin, -c) succeeds quietly
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  i=0
  while [ $i -lt 40 ]; do echo "WARNING: a packaging warning nobody asked for" >&2; i=$((i+1)); done
  if [ -n "$FAKE_PIP_FAIL" ]; then echo "ERROR: no matching distribution for $*" >&2; exit 1; fi
  exit 0
fi
[ "$1" = "-" ] && cat >/dev/null
exit 0
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("fail", [False, True])
def test_make_setup_is_quiet_and_shows_a_failing_step(tmp_path, fail):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    run = subprocess.run(
        ["make", "-s", "-C", str(REPO), "setup", f"VENV={venv}", f"PYTHON={fake}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **({"FAKE_PIP_FAIL": "1"} if fail else {})},
    )
    shown = run.stdout + run.stderr
    if not fail:
        assert run.returncode == 0, shown
        assert "WARNING" not in shown and len(shown.splitlines()) <= 3
        assert "packaging warning" in (venv / "setup.log").read_text()
        assert (venv / ".pgm-installed").is_file()
    else:
        assert run.returncode != 0
        assert "ERROR: no matching distribution" in run.stderr
        assert f"make setup: failed: {venv}/bin/python -m pip install" in run.stderr
        assert not (venv / ".pgm-installed").exists()
