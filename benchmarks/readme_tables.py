"""Write the README's results tables from the committed records.

``python benchmarks/readme_tables.py`` rewrites every block ``<!-- table:NAME -->`` ...
``<!-- /table:NAME -->`` of README.md (or ``--file``) with the table :data:`TABLES` names,
computed by :func:`pgm_plugins.bench.summary.summarise` from ``benchmarks/results``;
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
BLOCK = re.compile(
    r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S
)


@dataclass(frozen=True)
class Table:
    """One README table: its rows (suite, host, label), p's digits and whether Holm is shown."""

    rows: tuple[Row, ...]
    p_digits: int = 3
    holm: bool = True


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


def render(name: str, results: Path) -> str:
    """The Markdown of table ``name`` (one line per row, a final newline)."""
    table = TABLES[name]
    suites = list(dict.fromkeys(r.suite for r in table.rows))
    summary = summarise(results, suites, ARMS, rows=table.rows)
    return "\n".join(summary.markdown(p_digits=table.p_digits, holm=table.holm)) + "\n"


def rewrite(text: str, results: Path) -> str:
    """``text`` with every marked block replaced by its table; unknown names are an error."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    if not names:
        raise ValueError(
            f"no <!-- table:NAME --> ... <!-- /table:NAME --> block; tables: {choices_text(TABLES)}"
        )
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(
            f"unknown table {unknown[0]!r}; valid: {choices_text(TABLES)}."
            + did_you_mean(unknown[0], TABLES)
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
