"""The compact results table of one or several suites: one row per host, the mean primary metric
of each arm, and one arm minus a reference paired over (fold, seed) with its 95 % interval, p
and Holm's p over the rows of the table.

Where a row's paired differences do not vary across cells the comparison shows the mean
difference and "no variation across cells", no interval or p, and Holm leaves the row out.

The numbers are the report's own (:mod:`pgm_plugins.bench.report`: the same cells, the same test
per comparison, corrected resampled t across folds, plain paired t for one split); only Holm's
family differs: here it is the table's rows, in the report the hosts of one data set. This is
the table the README shows (``benchmarks/readme_tables.py`` writes it from the committed
records; ``pgm bench report SUITE... --summary ARMS`` prints it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pgm_plugins.bench.report import (
    SINGLE_PREFIX,
    ReportError,
    _cells,
    _comparisons,
    _host_rows,
    _hosts,
    find_suites,
    read_records,
)
from pgm_plugins.bench.stats import NO_VARIATION, holm
from pgm_plugins.errors import choices_text, did_you_mean

__all__ = ["Row", "Summary", "summarise"]


@dataclass(frozen=True)
class Row:
    """One row of the table: ``host``'s cells in ``suite``, shown as ``label`` (default host)."""

    suite: str
    host: str
    label: str = ""


@dataclass(frozen=True)
class Summary:
    """The table: per row the arms' means and the comparison (NaN where missing)."""

    rows: list[Row]
    arms: list[str]
    primary: str
    arm: str  #: the compared arm (``pgm``)
    reference: str  #: what it is compared with (``baseline``)
    means: list[dict[str, float]]  #: per row: arm -> mean primary metric over its cells
    diff: list[float]  #: per row: mean of arm - reference over paired cells
    low: list[float]
    high: list[float]
    p: list[float]
    p_holm: list[float]  #: Holm's correction over the rows of this table
    varies: list[bool] | None = None  #: per row: False where the differences do not vary

    def markdown(self, digits: int = 3, p_digits: int = 3, holm: bool = True) -> list[str]:
        """The table as Markdown lines: host | one column per arm | the comparison."""
        title = f"{self.arm} - {self.reference} [95 %] p" + (" (Holm)" if holm else "")
        header = ["host", *self.arms, title]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for i, row in enumerate(self.rows):
            means = [_num(self.means[i].get(a, math.nan), digits) for a in self.arms]
            cells = [row.label or row.host, *means, self._cmp(i, p_digits, holm)]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def _cmp(self, i: int, p_digits: int, holm: bool) -> str:
        if self.varies is not None and not self.varies[i] and not math.isnan(self.diff[i]):
            return f"{self.diff[i]:+.3f} ({NO_VARIATION})"
        if math.isnan(self.p[i]):
            return "-"
        text = (
            f"{self.diff[i]:+.3f} [{self.low[i]:+.3f}, {self.high[i]:+.3f}] "
            f"p={self.p[i]:.{p_digits}f}"
        )
        return text + (f" ({self.p_holm[i]:.{p_digits}f})" if holm else "")


def _num(v: float, digits: int) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def summarise(
    results_dir: str | Path,
    suites: Sequence[str],
    arms: Sequence[str],
    rows: Sequence[Row] | None = None,
    arm: str = "pgm",
    reference: str = "baseline",
) -> Summary:
    """The table of ``rows`` (default: every host of every suite in ``suites``, in that order)
    read from ``results_dir/<suite>/*.json``. Raises :class:`ReportError` for a suite without
    records, an arm none of them ran, a row naming a host its suite lacks, or suites whose
    primary metrics differ."""
    results_dir = Path(results_dir)
    names = dict.fromkeys([*suites, *(r.suite for r in rows or ())])
    frames = {s: _suite(results_dir, s) for s in names}
    if rows is None:
        rows = _default_rows(frames)
    primaries = {str(cells["primary"].mode().iloc[0]) for cells, _ in frames.values()}
    if len(primaries) != 1:
        raise ReportError(
            f"suites {', '.join(frames)} have different primary metrics "
            f"({', '.join(sorted(primaries))}); one table compares one metric."
        )
    primary = primaries.pop()
    known = sorted({str(a) for cells, _ in frames.values() for a in cells["arm"]})
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ReportError(
            f"no cells of arm {unknown[0]!r} in suite(s) {', '.join(frames)}; arms there: "
            f"{choices_text(known)}." + did_you_mean(unknown[0], known)
        )
    means: list[dict[str, float]] = []
    diff: list[float] = []
    low: list[float] = []
    high: list[float] = []
    p: list[float] = []
    varies: list[bool] = []
    for row in rows:
        cells, comps = frames[row.suite]
        hosts = _hosts(cells)
        if row.host not in hosts:
            raise ReportError(
                f"suite {row.suite!r} has no host {row.host!r}; its hosts: {choices_text(hosts)}."
                + did_you_mean(row.host, hosts)
            )
        shown = _host_rows(cells, row.host)
        shown = shown[~shown["arm"].str.startswith(SINGLE_PREFIX)]
        by_arm = shown.groupby("arm")[f"test.{primary}"].mean()
        means.append({str(a): float(v) for a, v in by_arm.items()})
        hit = comps[
            (comps["host"] == row.host)
            & (comps["arm"] == arm)
            & (comps["reference"] == reference)
            & (comps["metric"] == primary)
        ]
        c = hit.iloc[0] if len(hit) else pd.Series(dtype=float)
        for out, key in ((diff, "diff"), (low, "low"), (high, "high"), (p, "p")):
            out.append(float(c.get(key, math.nan)))
        flag = c.get("varies", True)
        varies.append(not isinstance(flag, bool | np.bool_) or bool(flag))
    return Summary(
        list(rows),
        list(arms),
        primary,
        arm,
        reference,
        means,
        diff,
        low,
        high,
        p,
        holm(p),
        varies,
    )


def _default_rows(frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> list[Row]:
    """Every host of every suite; a host shown by several suites is labelled with its suite."""
    pairs = [(s, h) for s, (cells, _) in frames.items() for h in _hosts(cells)]
    seen = [h for _, h in pairs]
    return [Row(s, h, f"{h} ({s})" if seen.count(h) > 1 else h) for s, h in pairs]


def _suite(results_dir: Path, suite: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The usable cells of ``suite`` and their comparisons (the report's)."""
    source = results_dir / suite
    records, problems = read_records(source, suite) if source.is_dir() else ([], [])
    if not records:
        suites = find_suites(results_dir)
        raise ReportError(
            f"no usable result records for suite {suite!r} in {source} ({len(problems)} file(s) "
            f"skipped); suites with results there: {choices_text(suites)}."
            + did_you_mean(suite, suites)
        )
    cells = _cells(records)
    return cells, _comparisons(cells)
