"""Write the results tables of README.md and docs/method.md from the committed records.

``python benchmarks/readme_tables.py`` rewrites every block ``<!-- table:NAME -->`` ...
``<!-- /table:NAME -->`` of README.md (or ``--file``, e.g. ``docs/method.md``) with the table
:data:`TABLES` names, computed by :func:`pgm_plugins.bench.summary.summarise` from
``benchmarks/results``, the report table :data:`REPORTS` names (the rows of one host table of
``pgm bench report``, on test or validation scores), or the methods comparison :data:`AIMS`
names (the report's PgM-against-the-alternatives rows), or the block-mix measurements
:data:`MIXES` names (``benchmarks/block_mix.py``'s summaries);
``--check`` changes nothing and exits 1 with a diff when a block differs. A file without any
block, or a block naming an unknown table, is an error (exit 2).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pgm_plugins.bench.summary import Row, summarise
from pgm_plugins.errors import choices_text, did_you_mean

REPO = Path(__file__).resolve().parents[1]
ARMS = ("baseline", "pgm", "capacity", "uni_heads", "mslr")
#: the arms of the methods suites (mosi-methods, mosi-standard-methods, av-digits-timm-loso)
METHOD_ARMS = (*ARMS, "pgm-guided", "mmpareto", "ume", "umt", "ogm_ge")
BLOCK = re.compile(
    r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S
)


@dataclass(frozen=True)
class Table:
    """One README table: its rows (suite, host, label), p's digits and whether Holm is shown."""

    rows: tuple[Row, ...]
    p_digits: int = 3
    holm: bool = True
    arms: tuple[str, ...] = ARMS


def _mosi_clean() -> Table:
    hosts = ("late_fusion", "mmsa.lmf", "mmsa.misa", "mmsa.mult", "mmsa.tfn")
    rows = [Row("mosi", h) for h in hosts]
    rows += [Row("mosi-extra", "mmsa.self_mm"), Row("mosi-extra", "mmsa.mmim")]
    return Table(tuple(rows), p_digits=2, holm=False)


TABLES: dict[str, Table] = {
    # MOSI clean: suites mosi and, for Self-MM and MMIM, mosi-extra (the same folds)
    "mosi-clean": _mosi_clean(),
    "mosi-standard": Table(
        tuple(
            Row("mosi-standard", h)
            for h in ("late_fusion", "mmsa.lmf", "mmsa.misa", "mmsa.self_mm")
        ),
        p_digits=2,
    ),
    # the methods users pick instead (their comparison with PgM's best reading: AIMS)
    "methods-mosi": Table(
        tuple(Row("mosi-methods", h) for h in ("late_fusion", "mmsa.lmf", "mmsa.mult")),
        p_digits=2,
        arms=METHOD_ARMS,
    ),
    "methods-mosi-standard": Table(
        tuple(Row("mosi-standard-methods", h) for h in ("late_fusion", "mmsa.lmf", "mmsa.self_mm")),
        p_digits=2,
        arms=METHOD_ARMS,
    ),
    "methods-av-digits-loso": Table(
        (Row("av-digits-timm-loso", "timm.av"),),
        arms=METHOD_ARMS,
    ),
    "av-digits": Table(
        (
            Row("av-digits", "late_fusion", "late_fusion (MLP encoders, 30 epochs, patience 8)"),
            Row(
                "av-digits-timm",
                "timm.av",
                "timm.av (ResNet-18 + conv audio, 12 epochs, patience 3)",
            ),
            Row(
                "av-digits-timm-long",
                "timm.av",
                "timm.av, 30 epochs, patience 8 (`av-digits-timm-long`)",
            ),
        )
    ),
}


@dataclass(frozen=True)
class ReportTable:
    """Rows of one host table of a suite's report: ``root`` (under the results folder),
    ``suite``, the table's ``heading`` (``dataset / protocol / host `name```), the ``split``
    scored and the ``arms`` shown (all when empty)."""

    root: str
    suite: str
    heading: str
    split: str = "test"
    arms: tuple[str, ...] = ()


_LF = "host `late_fusion`"
REPORTS: dict[str, ReportTable] = {
    # docs/method.md: the first method study, read through the one reader
    "method-design": ReportTable("method", "design", f"synthetic / default / {_LF}", "valid"),
    "method-selection": ReportTable(
        "method",
        "synthetic",
        f"synthetic / default / {_LF}",
        "valid",
        ("baseline", "capacity", "pgm-project", "pgm-gate"),
    ),
    "method-synthetic": ReportTable("method", "synthetic", f"synthetic / default / {_LF}"),
    "method-mosi": ReportTable("method", "mosi", f"mosi-utterance / clean / {_LF}"),
}


@dataclass(frozen=True)
class AimTable:
    """The methods comparison of a suite's report (``root`` under the results folder,
    ``suite``): PgM's best reading against the alternatives, one line per (data set, host)."""

    root: str
    suite: str


#: the methods comparison's tables, from the report's own rows
AIMS: dict[str, AimTable] = {
    "aim-av-digits-loso": AimTable("", "av-digits-timm-loso"),
    "aim-mosi": AimTable("", "mosi-methods"),
    "aim-mosi-standard": AimTable("", "mosi-standard-methods"),
    "aim-mosi-replace": AimTable("", "mosi-replace"),
}


#: the block-mix measurements (``benchmarks/block_mix.py``): table name -> JSON files under the
#: results folder, their summaries in one table
MIXES: dict[str, tuple[str, ...]] = {
    "block-mix": (
        "block_mix-mosi.json",
        "block_mix-mosi-guided.json",
        "block_mix-av-digits-loso.json",
    ),
}


def _mix_rows(files: tuple[str, ...], results: Path) -> str:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("block_mix", REPO / "benchmarks" / "block_mix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = []
    for name in files:
        got = json.loads((results / name).read_text(encoding="utf-8"))
        summary += [{**s, "suite": got["suite"]} for s in got["summary"]]
    return "\n".join(module.markdown(summary)) + "\n"


def _aim_rows(spec: AimTable, results: Path) -> str:
    import tempfile

    from pgm_plugins.bench.alternatives import aim_summary
    from pgm_plugins.bench.report import build_report

    with tempfile.TemporaryDirectory() as out:
        report = build_report(results / spec.root, spec.suite, out, plots=False)
    return "\n".join(aim_summary(report.aim)) + "\n"


def _report_rows(spec: ReportTable, results: Path) -> str:
    import tempfile

    from pgm_plugins.bench.report import build_report

    with tempfile.TemporaryDirectory() as out:  # the committed reports stay as they are
        report = build_report(results / spec.root, spec.suite, out, plots=False, split=spec.split)
    lines = report.markdown.splitlines()
    start = lines.index(f"### {spec.heading}") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    rows = lines[start:end]
    keep = rows[:2] + [r for r in rows[2:] if not spec.arms or r.split("`")[1] in spec.arms]
    return "\n".join(keep) + "\n"


def render(name: str, results: Path) -> str:
    """The Markdown of table ``name`` (one line per row, a final newline)."""
    if name in REPORTS:
        return _report_rows(REPORTS[name], results)
    if name in AIMS:
        return _aim_rows(AIMS[name], results)
    if name in MIXES:
        return _mix_rows(MIXES[name], results)
    table = TABLES[name]
    suites = list(dict.fromkeys(r.suite for r in table.rows))
    summary = summarise(results, suites, table.arms, rows=table.rows)
    return "\n".join(summary.markdown(p_digits=table.p_digits, holm=table.holm)) + "\n"


def rewrite(text: str, results: Path) -> str:
    """``text`` with every marked block replaced by its table; unknown names are an error."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    if not names:
        raise ValueError(
            f"no <!-- table:NAME --> ... <!-- /table:NAME --> block; tables: {choices_text(TABLES)}"
        )
    known = [*TABLES, *REPORTS, *AIMS, *MIXES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown table {unknown[0]!r}; valid: {choices_text(known)}."
            + did_you_mean(unknown[0], known)
        )
    return BLOCK.sub(lambda m: m[1] + render(m["name"], results) + m[4], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=REPO / "README.md", help="default README.md")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if it differs")
    args = parser.parse_args(argv)
    old = args.file.read_text(encoding="utf-8")
    try:
        new = rewrite(old, args.results)
    except ValueError as exc:
        print(f"readme_tables: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(args.file), "from the records"
            )
        )
        return 1
    if new != old:
        args.file.write_text(new, encoding="utf-8")
        print(f"rewrote the tables of {args.file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
