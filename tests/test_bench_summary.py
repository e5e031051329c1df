"""The compact results table (``pgm_plugins.bench.summary``), ``pgm bench report SUITE...
--summary ARMS`` and ``benchmarks/readme_tables.py``, on the committed records."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pgm_plugins.bench.report import ReportError
from pgm_plugins.bench.stats import holm
from pgm_plugins.bench.summary import Row, summarise
from pgm_plugins.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARMS = ["baseline", "pgm", "capacity", "uni_heads", "mslr"]
AV_DIGITS = ["av-digits", "av-digits-timm", "av-digits-timm-long"]


def _readme_tables() -> ModuleType:
    path = REPO / "benchmarks" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_three_suites_make_one_table_with_holm_over_its_rows():
    table = summarise(RESULTS, AV_DIGITS, ARMS)
    assert [(r.suite, r.host) for r in table.rows] == [
        ("av-digits", "late_fusion"),
        ("av-digits-timm", "timm.av"),
        ("av-digits-timm-long", "timm.av"),
    ]
    assert table.p_holm == holm(table.p)
    assert table.p_holm[1] == pytest.approx(0.063, abs=5e-4)  # 0.032 alone, 3 rows: Holm
    assert table.markdown()[2:] == [
        "| late_fusion | 0.956 | 0.941 | 0.954 | 0.955 | 0.955 "
        "| -0.015 [-0.025, -0.005] p=0.014 (0.041) |",
        "| timm.av (av-digits-timm) | 0.950 | 0.976 | 0.935 | 0.970 | 0.971 "
        "| +0.026 [+0.004, +0.049] p=0.032 (0.063) |",
        "| timm.av (av-digits-timm-long) | 0.953 | 0.980 | 0.949 | 0.982 | - "
        "| +0.027 [+0.000, +0.054] p=0.050 (0.063) |",
    ]


def test_the_table_uses_the_reports_comparisons():
    # one suite alone: the summary's pgm - baseline is the report's (same test, same p)
    from pgm_plugins.bench.report import _cells, _comparisons, read_records

    records, _ = read_records(RESULTS / "mosi-standard", "mosi-standard")
    comps = _comparisons(_cells(records))
    table = summarise(RESULTS, ["mosi-standard"], ARMS)
    for i, row in enumerate(table.rows):
        hit = comps[
            (comps["host"] == row.host)
            & (comps["arm"] == "pgm")
            & (comps["reference"] == "baseline")
            & (comps["metric"] == "acc2")
        ].iloc[0]
        assert (table.diff[i], table.low[i], table.high[i], table.p[i]) == (
            hit["diff"],
            hit["low"],
            hit["high"],
            hit["p"],
        )
    assert table.markdown(p_digits=2)[3] == (
        "| mmsa.lmf | 0.776 | 0.757 | 0.755 | 0.753 | 0.771 "
        "| -0.018 [-0.030, -0.007] p=0.01 (0.04) |"
    )


def test_bad_input_names_what_is_valid():
    with pytest.raises(ReportError, match=r"arm 'baselin'.*Did you mean 'baseline'"):
        summarise(RESULTS, ["av-digits"], ["baselin", "pgm"])
    with pytest.raises(ReportError, match=r"no host 'timm'.*'late_fusion'"):
        summarise(RESULTS, ["av-digits"], ARMS, rows=[Row("av-digits", "timm")])
    with pytest.raises(ReportError, match=r"suite 'av-digit'.*Did you mean 'av-digits'"):
        summarise(RESULTS, ["av-digit"], ARMS)
    with pytest.raises(ReportError, match=r"different primary metrics \(acc, acc2\)"):
        summarise(RESULTS, ["av-digits", "mosi-standard"], ARMS)


def test_the_cli_prints_the_summary_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli(["bench", "report", *AV_DIGITS, "--results", str(RESULTS), "--summary", "pgm"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| host | pgm | pgm - baseline [95 %] p (Holm) |"
    assert out[2].startswith("| late_fusion | 0.941 | -0.015 [-0.025, -0.005] p=0.014 (0.041)")
    assert list(tmp_path.iterdir()) == []
    assert cli(["bench", "report", "--results", str(RESULTS), "--summary", "pgm"]) == 2
    assert "name the suite(s)" in capsys.readouterr().err


def test_the_committed_readme_tables_match_the_records():
    tables = _readme_tables()
    assert tables.main(["--file", str(REPO / "README.md"), "--check"]) == 0


def test_the_method_pages_tables_are_the_reports_rows():
    tables = _readme_tables()
    assert tables.main(["--file", str(REPO / "docs" / "method.md"), "--check"]) == 0
    selection = tables.render("method-selection", REPO / "benchmarks" / "results")
    # the design selection on validation, as the records give it
    assert "+0.0151 [-0.0021, +0.0323] p=0.078" in selection and "`pgm-gate`" in selection


def test_readme_tables_rewrites_marked_blocks_and_checks_them(tmp_path, capsys):
    tables = _readme_tables()
    page = tmp_path / "README.md"
    stale = "| host | old |\n| --- | --- |\n| x | 1 |\n"
    page.write_text(
        f"intro\n<!-- table:mosi-standard -->\n{stale}<!-- /table:mosi-standard -->\nend\n"
    )
    args = ["--file", str(page), "--results", str(RESULTS)]
    assert tables.main([*args, "--check"]) == 1
    diff = capsys.readouterr().out
    assert "-| x | 1 |" in diff and "+| mmsa.self_mm | 0.701 | 0.692 |" in diff
    assert "| x | 1 |" in page.read_text()  # --check changes nothing
    assert tables.main(args) == 0
    text = page.read_text()
    assert text.startswith("intro\n<!-- table:mosi-standard -->\n| host | baseline |")
    assert text.endswith("p=0.26 (0.79) |\n<!-- /table:mosi-standard -->\nend\n")
    assert tables.main([*args, "--check"]) == 0
    page.write_text("<!-- table:mosi-clen -->\n<!-- /table:mosi-clen -->\n")
    assert tables.main(args) == 2
    assert "unknown table 'mosi-clen'" in capsys.readouterr().err
    page.write_text("no tables here\n")
    assert tables.main([*args, "--check"]) == 2
    assert "no <!-- table:NAME -->" in capsys.readouterr().err


def _regenerate() -> ModuleType:
    path = REPO / "benchmarks" / "regenerate.py"
    spec = importlib.util.spec_from_file_location("regenerate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerate_one_report_checks_it_against_the_records(capsys, monkeypatch):
    """``--only`` rebuilds the named report folders (here a small one), then the tables (their
    check, run by the tests above, is recorded here, not run twice)."""
    regenerate = _regenerate()
    calls = []

    def run(cmd, cwd):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(regenerate.subprocess, "run", run)
    assert regenerate.main(["--only", "av_digits/main", "--check"]) == 0
    assert [c[-1] for c in calls] == ["--check", "--check"] and "docs" in calls[1][-2]
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "report of suite 'main'" in said and "report of suite 'mosi'" not in said


def test_regenerate_refuses_a_misspelt_folder_naming_the_nearest(capsys):
    assert _regenerate().main(["--only", "mosi-metods"]) == 2
    err = capsys.readouterr().err
    assert "--only 'mosi-metods' is not a report folder" in err and "'mosi-methods'" in err
