"""PgM's best reading against the methods users pick instead: the question a user deciding
whether to put PgM into their model asks, answered per (data set, protocol, host) from a
suite's cells.

- **PgM's best reading** is chosen on validation: of the readings present (:data:`READINGS`:
  ``pgm``, the first, ``pgm-guided``, the second, and ``pgm-replace``, where the host receives the
  block's rebuilt representation itself), the one with the best mean validation score of the
  primary metric over the (fold, seed) cells every reading has (all its cells where they share
  none; ties: the first). Test scores never choose.
- **Against each alternative** present (:data:`ALTERNATIVES`: ``uni_heads``, ``umt``,
  ``ogm_ge``, ``mmpareto``, ``agm``, which the aim names, and ``ume`` and ``mslr``, which a
  user would also pick instead and which count alike once present): the best reading minus the
  alternative on the test primary metric, paired over (fold, seed) with the report's test
  (:func:`~pgm_plugins.bench.pairing.paired_comparison`), Holm's correction over these
  comparisons of the row, and each one's smallest detectable difference (80 % power) at Holm's
  strictest level (0.05 / k for k comparisons), so that it is the difference these cells could
  confirm.
- **Against the host**: the 95 % upper bound of how far the reading falls short of the host
  (host - PgM for a higher-is-better metric) must lie below :data:`HOST_MARGIN`.
- **Room**: the distance from the best of the host and the alternatives (their mean test
  scores) to the metric's perfect value (:data:`~pgm_plugins.bench.metrics.PERFECT`): the
  largest win over all of them that is possible at all.
- **More seeds?** Where the detectable difference exceeds the room, the row says whether more
  seeds could change that: the fewest paired cells (at the measured spread) at which every
  comparison could detect a win as large as the room, or, under the corrected resampled t, that
  no number of seeds of these folds can (its variance keeps ``n_test / n_train`` of the spread
  however many cells: :func:`~pgm_plugins.bench.stats.detectable_at` with unlimited cells).
- **Outcome**, the first that applies:

  - ``not met``: the reading is confidently worse than an alternative (Holm) or than the host;
  - ``met``: it beats every alternative present, among them every one the aim names
    (:data:`REQUIRED`, on the tasks each supports), with confidence (Holm's p <
    :data:`CONFIDENCE`), the host bound holds, and the cells test on more than one test set;
  - ``undecided``: the largest detectable difference exceeds the room (these cells cannot show
    a win that large), or everything holds but on one fixed test set, where the spread over
    seeds is training noise only and the test set's own sampling is in no interval;
  - ``not met``: a comparison is level, or the host bound fails;
  - ``incomplete``: every comparison present is won, but an alternative the aim names has no
    cells yet (the run is not finished, or the suite leaves it out).

Every arm's tuning budget (settings trained per cell, the best kept on validation) is shown
beside it, with its number of cells, and a row says where the reading tried more settings than
an alternative (a caveat, not a reason): a reading that tried more settings had more chances on
validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pgm_plugins.bench.formatting import number
from pgm_plugins.bench.metrics import PERFECT
from pgm_plugins.bench.pairing import fold_means_p, paired_comparison
from pgm_plugins.bench.stats import cells_to_detect, detectable_at, holm

__all__ = [
    "ALTERNATIVES",
    "CONFIDENCE",
    "HOST_MARGIN",
    "READINGS",
    "REQUIRED",
    "AimRow",
    "aim_frame",
    "aim_markdown",
    "aim_rows",
    "aim_summary",
    "aim_verdict",
]

#: PgM's readings, in the order a tie on validation prefers them: the default block, the block
#: guided by uni-modal training, and the block whose rebuilt representation replaces the host's
READINGS = ("pgm", "pgm-guided", "pgm-replace")
#: the methods users pick instead, in the order the tables show them: those the aim names
#: (:data:`REQUIRED`), then Du et al.'s uni-modal ensemble and per-modality learning rates
ALTERNATIVES = ("uni_heads", "umt", "ogm_ge", "mmpareto", "agm", "ume", "mslr")
#: the alternatives the aim must beat: each entry one of its arms (``mmpareto`` or ``agm``), on
#: the tasks the method supports (OGM-GE's score is a class probability: classification only)
REQUIRED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("uni_heads",), ("classification", "regression")),
    (("umt",), ("classification", "regression")),
    (("ogm_ge",), ("classification",)),
    (("mmpareto", "agm"), ("classification", "regression")),
)
#: the report's tests whose cells all share one test set (seed noise only)
FIXED_SPLIT_TESTS = ("paired", "paired-by-folds")
#: how far (in the primary metric's units) PgM may fall short of the host: the 95 % upper
#: bound of host - PgM must lie below it
HOST_MARGIN = 0.01
#: Holm's p below which a comparison counts as confident
CONFIDENCE = 0.05


@dataclass
class AimRow:
    """The comparison of one (data set, protocol, host)."""

    dataset: str
    protocol: str
    host: str
    metric: str  #: the primary metric (test scores)
    higher: bool  #: whether a larger ``metric`` is better
    reading: str  #: PgM's reading chosen on validation
    valid_means: dict[str, float]  #: each reading's mean validation primary metric
    settings: dict[str, int]  #: each shown arm's tuning budget (settings per cell)
    test_means: dict[str, float]  #: each shown arm's mean test primary metric
    host_mean: float  #: the host's (``baseline``'s) mean test primary metric
    #: the distance of the best of the host's and the alternatives' means to the metric's
    #: perfect value (NaN: unknown)
    room: float
    #: reading - host (:func:`~pgm_plugins.bench.pairing.paired_comparison`)
    vs_host: dict[str, Any]
    shortfall: float  #: 95 % upper bound of how far the reading falls short of the host
    #: alternative -> reading - alternative (the same, with ``p_holm``)
    versus: dict[str, dict[str, Any]] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)  #: alternatives without cells here
    missing: list[str] = field(default_factory=list)  #: what :data:`REQUIRED` lacks here
    cells: dict[str, int] = field(default_factory=dict)  #: each shown arm's cells
    task: str = ""  #: the task the host trains PgM on (``trains``; else the data's)
    folds: int = 1  #: the folds (test sets) the reading's cells cover
    outcome: str = ""  #: ``met``, ``not met``, ``undecided`` or ``incomplete``
    reasons: list[str] = field(default_factory=list)  #: why it is not met
    #: what qualifies the outcome: alternatives that tried fewer settings than the reading
    caveats: list[str] = field(default_factory=list)

    @property
    def detectable(self) -> float:
        """The largest smallest-detectable difference among the comparisons with alternatives,
        at Holm's strictest level."""
        values = [v["detectable_holm"] for v in self.versus.values()]
        values = [v for v in values if not math.isnan(v)]
        return max(values) if values else math.nan

    @property
    def detectable_unlimited(self) -> float:
        """:attr:`detectable` with unlimited cells of the same folds and spread: under the
        corrected test more seeds cannot bring it below ``sqrt(n_test / n_train)`` of the
        spread (on one fixed test set it tends to 0)."""
        values = [v["detectable_unlimited"] for v in self.versus.values()]
        values = [v for v in values if not math.isnan(v)]
        return max(values) if values else math.nan

    @property
    def cells_needed(self) -> int | None:
        """The fewest paired cells per comparison (at the measured spread) at which every
        comparison could detect a difference as large as the room; ``None`` where no number
        of cells of these folds can (or nothing is tested)."""
        needed = [v.get("cells_needed") for v in self.versus.values() if v["n"] >= 2]
        if not needed or any(c is None for c in needed):
            return None
        return max(c for c in needed if c is not None)

    @property
    def fixed_split(self) -> bool:
        """Whether the cells compared share one test set (the report's plain paired t)."""
        return self.vs_host.get("test") in FIXED_SPLIT_TESTS


def _better(diff: float, higher: bool) -> bool:
    return diff > 0 if higher else diff < 0


def _common_valid(cells: pd.DataFrame, readings: list[str]) -> dict[str, float]:
    """Each reading's mean validation primary over the (fold, seed) cells every reading has
    (each over all its cells where they share none)."""
    scores = {
        r: cells[cells["arm"] == r]
        .set_index(["fold", "seed"])["valid.primary"]
        .astype(float)
        .dropna()
        for r in readings
    }
    common = scores[readings[0]].index
    for r in readings[1:]:
        common = common.intersection(scores[r].index)
    return {
        r: float((v.loc[common] if len(common) else v).mean()) if len(v) else math.nan
        for r, v in scores.items()
    }


def _row(ds: str, proto: str, host: str, data: pd.DataFrame) -> AimRow | None:
    primary = str(data["primary"].mode().iloc[0])
    higher = bool(data["higher_is_better"].mode().iloc[0])
    cells = data[(data["host"] == host) & ~data["failed"]]
    arms = set(cells["arm"])
    readings = [r for r in READINGS if r in arms]
    present = [a for a in ALTERNATIVES if a in arms]
    if not readings or not present or "baseline" not in arms:
        return None
    # the task the host trains PgM on (an MMSA host: regression, whatever the data's task)
    column = "trains" if "trains" in cells else "task"
    task = str(cells.loc[cells["arm"].isin(readings), column].mode().iloc[0])
    valid = _common_valid(cells, readings)
    chosen = readings[0]
    for r in readings[1:]:  # strictly better on validation replaces the earlier reading
        if not math.isnan(valid[r]) and (
            math.isnan(valid[chosen]) or _better(valid[r] - valid[chosen], higher)
        ):
            chosen = r
    col = f"test.{primary}"
    shown = ["baseline", *readings, *present]
    by_arm = {a: cells[cells["arm"] == a] for a in shown}
    means = {a: float(by_arm[a][col].mean()) for a in shown}
    host_mean = means["baseline"]
    perfect = PERFECT.get(primary)
    vs_host = paired_comparison(by_arm[chosen], by_arm["baseline"], col, higher)
    if vs_host["varies"] is False:  # every cell moved by the same amount: that is the bound
        shortfall = -vs_host["diff"] if higher else vs_host["diff"]
    else:
        shortfall = -vs_host["low"] if higher else vs_host["high"]
    versus = {a: paired_comparison(by_arm[chosen], by_arm[a], col, higher) for a in present}
    k = sum(1 for v in versus.values() if not math.isnan(v["p"]))
    level = CONFIDENCE / max(k, 1)  # Holm's strictest step
    for v, p in zip(versus.values(), holm([v["p"] for v in versus.values()]), strict=True):
        v["p_holm"] = p
        v["detectable_holm"] = detectable_at(v["detectable"], v["n"], level)
        ratio = 0.0 if math.isnan(v["ratio"]) else v["ratio"]
        v["detectable_unlimited"] = detectable_at(
            v["detectable"], v["n"], level, cells=math.inf, ratio=ratio
        )
    for a, v in versus.items():
        v["p_folds"] = fold_means_p(by_arm[chosen], by_arm[a], col, higher)
    for v, p in zip(versus.values(), holm([v["p_folds"] for v in versus.values()]), strict=True):
        v["p_holm_folds"] = p
    best = [host_mean, *(means[a] for a in present)]
    best = [b for b in best if not math.isnan(b)]
    top = (max(best) if higher else min(best)) if best else math.nan
    room = abs(perfect - top) if perfect is not None else math.nan
    for v in versus.values():
        ratio = 0.0 if math.isnan(v["ratio"]) else v["ratio"]
        v["cells_needed"] = cells_to_detect(v["detectable"], v["n"], room, level, ratio)
    tested = {a for a, v in versus.items() if v["n"] >= 2}
    row = AimRow(
        dataset=ds,
        protocol=proto,
        host=host,
        metric=primary,
        higher=higher,
        reading=chosen,
        valid_means=valid,
        settings={a: int(by_arm[a]["settings"].max()) for a in shown},
        test_means=means,
        host_mean=host_mean,
        room=room,
        vs_host=vs_host,
        shortfall=float(shortfall),
        versus=versus,
        absent=[a for a in ALTERNATIVES if a not in arms],
        missing=[
            " or ".join(names)
            for names, tasks in REQUIRED
            if task in tasks and not any(n in tested for n in names)
        ],
        cells={a: len(by_arm[a]) for a in shown},
        task=task,
        folds=int(by_arm[chosen]["fold"].nunique()),
    )
    _judge(row)
    return row


def _confident(v: dict[str, Any], p_key: str = "p_holm") -> bool:
    return v["n"] >= 2 and v["varies"] is not False and v.get(p_key, math.nan) < CONFIDENCE


def _judge(row: AimRow) -> None:
    """Set ``row.outcome``, ``row.reasons`` and ``row.caveats`` (the module docstring's rules)."""
    reasons = []  # each one decides the row against the aim (with power enough)
    lost = False
    for arm, v in row.versus.items():
        if v["n"] < 2:
            reasons.append(f"untested against {arm} ({v['n']} paired cell(s))")
        elif v["varies"] is False:
            reasons.append(f"against {arm} the difference does not vary ({v['diff']:+.4f})")
            lost |= not _better(v["diff"], row.higher)
        elif not (_confident(v) and _better(v["diff"], row.higher)):
            worse = _confident(v)
            lost |= worse
            reasons.append(
                f"{'worse than' if worse else 'level with'} {arm}: {v['diff']:+.4f} "
                f"[{v['low']:+.4f}, {v['high']:+.4f}] p_Holm={v['p_holm']:.3f}"
            )
    h = row.vs_host
    if math.isnan(row.shortfall):
        reasons.append(f"untested against the host ({h['n']} paired cell(s))")
    elif not row.shortfall < HOST_MARGIN:
        worse = _confident(h, "p") and not _better(h["diff"], row.higher)
        lost |= worse
        reasons.append(
            f"{'confidently below' if worse else 'may fall short of'} the host: "
            f"{row.shortfall:.4f} (95 % bound of host - PgM; the aim: below {HOST_MARGIN})"
        )
    decided = bool(reasons)
    if row.missing:
        reasons.append("no cells of " + ", ".join(row.missing) + " (the aim names it)")
    if row.fixed_split:
        reasons.append(
            "one test set: the interval holds the seeds' training noise only, not the test "
            "set's sampling"
        )
    row.reasons = reasons
    row.caveats = [
        f"the win over {arm} is not confident over fold means (p_Holm {v['p_holm_folds']:.3f}: "
        "seeds averaged per fold first)"
        for arm, v in row.versus.items()
        if _confident(v)
        and _better(v["diff"], row.higher)
        and not v["p_holm_folds"] < CONFIDENCE
        and not math.isnan(v["p_holm_folds"])
    ]
    fewer = [a for a in row.versus if row.settings[a] < row.settings[row.reading]]
    if fewer:
        row.caveats += [
            f"`{row.reading}` tried {row.settings[row.reading]} settings per cell, "
            + ", ".join(f"`{a}` {row.settings[a]}" for a in fewer)
            + ": part of a difference may come from the larger budget"
        ]
    won_on_one_test_set = not decided and not row.missing
    underpowered = not math.isnan(row.detectable) and row.detectable > row.room
    if lost:
        row.outcome = "not met"
    elif not reasons:
        row.outcome = "met"
    elif won_on_one_test_set or underpowered:
        row.outcome = "undecided"
    elif decided:
        row.outcome = "not met"
    else:
        row.outcome = "incomplete"


def aim_rows(cells: pd.DataFrame) -> list[AimRow]:
    """One :class:`AimRow` per (data set, protocol, host) whose cells hold the host, a PgM
    reading and at least one alternative (none otherwise). ``cells``: the report's cell table
    on test scores, with its ``valid.primary`` column and diverged cells marked ``failed``."""
    rows = []
    for (ds, proto), data in cells.groupby(["dataset", "protocol"], sort=True):
        hosts = sorted(set(data["host"]))
        for host in hosts:
            row = _row(str(ds), str(proto), str(host), data)
            if row is not None:
                rows.append(row)
    return rows


def _cmp(v: dict[str, Any]) -> str:
    if v["n"] < 2:
        return f"- (n={v['n']})"
    if v["varies"] is False:
        return f"{v['diff']:+.4f} (no variation)"
    return f"{v['diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def aim_markdown(rows: Sequence[AimRow]) -> list[str]:
    """The report's section: per host, the chosen reading, one table row per arm shown and the
    outcome with its reasons. Empty when no row."""
    if not rows:
        return []
    md = [
        "## PgM's best reading against the methods users pick instead",
        "",
        f"PgM's reading ({', '.join(f'`{r}`' for r in READINGS)}) is chosen on the mean "
        "validation score; against each alternative present the difference is paired over "
        "(fold, seed) on test with the report's test (n: the paired cells), Holm over the "
        "alternatives of the row (p_Holm, fold means: the same with each fold's seeds averaged "
        "first, a check where seeds repeat on one fold's rows); detectable: the smallest "
        "difference these cells detect (80 % "
        "power, alpha 0.05 before Holm; the row's largest at Holm's strictest level). The aim: "
        f"beat every alternative present with confidence (p_Holm < {CONFIDENCE}), among them "
        f"every one it names ({', '.join(' or '.join(n) for n, _ in REQUIRED)}; OGM-GE on "
        "classification only), and fall short "
        f"of the host by less than {HOST_MARGIN} (95 % bound). Not met where PgM is confidently "
        "worse than an alternative or the host, or level where the cells could show the win; "
        "undecided where the largest detectable difference exceeds the room (the distance from "
        "the best of the host and the alternatives to a perfect score), or where every win "
        "rests on one test set; incomplete where every comparison present is won but a named "
        "alternative has no cells. The reading is chosen on the validation mean over the cells "
        "every reading has. A reading's validation score is that of the setting its cells kept, "
        "the best of its `settings`: a reading that tried more settings looks better on "
        "validation by selection alone, and may fall back on test.",
        "",
    ]
    for r in rows:
        md += [f"### {r.dataset} / {r.protocol} / host `{r.host}`", ""]
        md.append(
            f"- reading chosen on validation: **`{r.reading}`** ("
            + ", ".join(f"`{k}` {number(v)}" for k, v in r.valid_means.items())
            + f", validation {r.metric})"
        )
        md.append("")
        header = [
            "arm",
            "settings",
            "cells",
            f"test {r.metric} mean",
            f"`{r.reading}` - arm [95 %]",
            "n",
            "p",
            "p_Holm",
            "p_Holm, fold means",
            "detectable",
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        shown = ["baseline", *r.valid_means, *r.versus]
        for a in shown:
            v = r.vs_host if a == "baseline" else r.versus.get(a)
            cells = [f"`{a}`", str(r.settings[a]), str(r.cells[a]), number(r.test_means[a])]
            if v is None:  # the readings themselves
                cells += ["", "", "", "", "", ""]
            else:
                holm_p = v.get("p_holm", math.nan)
                folds_p = v.get("p_holm_folds", math.nan)
                cells += [
                    _cmp(v),
                    str(v["n"]),
                    _p(v["p"]),
                    _p(holm_p),
                    _p(folds_p),
                    number(v["detectable"]),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        md += [*lines, ""]
        md.append(
            f"- against the host: `{r.reading}` falls short of it by at most "
            f"{number(r.shortfall)} (95 % bound; the aim: below {HOST_MARGIN}); room above the "
            f"best of the host and the alternatives: {number(r.room)}; largest detectable "
            f"difference at Holm's strictest level: {number(r.detectable)}"
        )
        more = _more_cells(r)
        if more:
            md.append(f"- {more}")
        if r.absent:
            md.append(
                "- not in these cells: "
                + ", ".join(f"`{a}`" for a in r.absent)
                + " (left out of the suite, or not run yet)"
            )
        md.append(f"- **aim {r.outcome}**" + (": " + "; ".join(r.reasons) if r.reasons else ""))
        md += [f"- budgets: {c}" for c in r.caveats]
        md.append("")
    return md


def _more_cells(r: AimRow) -> str:
    """Where the cells cannot detect a win as large as the room: whether more seeds could (how
    many cells, at the measured spread) or not (the corrected test's floor). Empty otherwise."""
    if math.isnan(r.detectable) or math.isnan(r.room) or not r.detectable > r.room:
        return ""
    needed = r.cells_needed
    if needed is None:
        return (
            "more seeds of these folds cannot decide it: with unlimited cells at the measured "
            "spread the largest detectable difference would still be "
            f"{number(r.detectable_unlimited)} (the corrected test keeps sqrt(n_test / n_train) "
            "of the spread), above the room; it takes more test sets or larger ones"
        )
    seeds = math.ceil(needed / max(r.folds, 1))
    text = (
        f"a win as large as the room would need about {needed} paired cells per comparison "
        f"({seeds} seed(s) on each of the {r.folds} fold(s)) at the measured spread; a smaller "
        "win needs more"
    )
    if r.fixed_split:
        text += " (and on one test set they would still hold only the seeds' training noise)"
    return text


def aim_frame(rows: Sequence[AimRow]) -> pd.DataFrame:
    """``aim.csv``: one line per (data set, protocol, host, compared arm: the host and each
    alternative) with the chosen reading, budgets, means, the comparison and the outcome."""
    out = []
    for r in rows:
        for arm, v in [("baseline", r.vs_host), *r.versus.items()]:
            out.append(
                {
                    "dataset": r.dataset,
                    "protocol": r.protocol,
                    "host": r.host,
                    "metric": r.metric,
                    "reading": r.reading,
                    "reading_settings": r.settings[r.reading],
                    "reading_mean": r.test_means[r.reading],
                    "arm": arm,
                    "arm_settings": r.settings[arm],
                    "arm_mean": r.test_means[arm],
                    "cells": r.cells[arm],
                    **{
                        k: v.get(k, math.nan)
                        for k in (
                            "n",
                            "unpaired_arm",
                            "unpaired_ref",
                            "test",
                            "diff",
                            "low",
                            "high",
                            "p",
                            "p_holm",
                            "detectable",
                            "detectable_holm",
                            "p_folds",
                            "p_holm_folds",
                            "detectable_unlimited",
                        )
                    },
                    "cells_needed": v.get("cells_needed"),
                    "shortfall_bound": r.shortfall,
                    "room": r.room,
                    "missing": "; ".join(r.missing),
                    "outcome": r.outcome,
                }
            )
    return pd.DataFrame(out)


def aim_summary(rows: Sequence[AimRow], p_digits: int = 3) -> list[str]:
    """The compact table of the README: one line per (data set, host) with the reading chosen,
    its budget, its difference to the host and to each alternative (95 % interval, Holm's p),
    the largest detectable difference (at Holm's strictest level), the room above the best of
    the host and the alternatives, and the outcome."""
    alts = [a for a in ALTERNATIVES if any(a in r.versus for r in rows)]

    def diff(v: dict[str, Any] | None, holm_p: bool) -> str:
        if v is None:
            return "-"
        text = _cmp(v)
        p = v.get("p_holm", math.nan) if holm_p else v["p"]
        if math.isnan(p):
            return text
        shown = f"<{10.0**-p_digits:.{p_digits}f}" if p < 10.0**-p_digits else f"={p:.{p_digits}f}"
        return f"{text} p{'_Holm' if holm_p else ''}{shown}"

    header = [
        "data / host",
        "PgM reading (settings)",
        "PgM - host",
        *[f"PgM - `{a}`" for a in alts],
        "detectable",
        "room",
        "aim",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [
            f"{r.dataset}/{r.protocol} / {r.host}",
            f"`{r.reading}` ({r.settings[r.reading]})",
            diff(r.vs_host, False),
            *[diff(r.versus.get(a), True) for a in alts],
            number(r.detectable, 3),
            number(r.room, 3),
            r.outcome,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def aim_verdict(rows: Sequence[AimRow]) -> list[str]:
    """One line per row for the run's closing verdict."""
    return [
        f"Aim on {r.dataset}/{r.protocol}, host {r.host}: `{r.reading}` (chosen on validation) "
        f"vs {', '.join(r.versus)}: {r.outcome}"
        + (" (" + "; ".join(r.reasons) + ")" if r.reasons else "")
        + "".join(f"; budgets: {c}" for c in r.caveats)
        for r in rows
    ]
