"""``pgm bench report``: tables, paired statistics and plots from a suite's result records.

Reads every record under ``<results_dir>/<suite>/*.json`` (one per cell, the shape of
``docs/results.md``: see :data:`CONTRACT`), checks each one and reports a corrupt,
partial or malformed file by path and reason instead of averaging it. Per (data set, protocol,
host): every arm as mean +- std over its cells of the primary and secondary metrics; its
difference to ``baseline``, ``capacity`` and ``uni_heads`` (:data:`REFERENCES`) paired over
(fold, seed) with a 95 % interval, p and the smallest detectable difference
(the corrected resampled t-test of Nadeau & Bengio when the cells come from several folds that
share training data, the plain paired t-test for one fixed split over seeds), Holm-corrected over
the hosts of the data set per family (arm, reference, metric); the ``only.<m>`` arms of host
``late_fusion`` in every host's table; parameter overhead; the step-time microbenchmark and the
cells' own step time (measured under load); PgM's best reading against the methods users pick
instead (:mod:`pgm_plugins.bench.alternatives`, also written to ``aim.csv``). Writes
``report.md``, ``report.csv`` and PNG plots atomically into ``<results_dir>/<suite>/report/``
(or ``out_dir``).

Phases: read and check the records (:func:`read_records`), pair and test them
(``_comparisons``), build the table model once (:class:`DataSection` > :class:`HostTable` >
:class:`ArmRow`), then render it: Markdown (``_header_md``, ``_section_md``, ``_host_md``,
``_cost_md``, ``_contributions_md``, ``_shares_md``, ``_microbench_md``) and CSV
(``_csv_row``). The step-time
microbenchmark files are an input (``step_time_files``); nothing is read from the repository.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

try:
    import pandas as pd
except ModuleNotFoundError as exc:  # pragma: no cover - the bench extra is missing
    raise ModuleNotFoundError(
        f"pgm bench report needs pandas, scipy and matplotlib ({exc}); install them with "
        "`pip install 'pgm-plugins[bench]'`."
    ) from exc

from pgm_plugins._io import atomic_write_text
from pgm_plugins.bench.alternatives import AimRow, aim_frame, aim_markdown, aim_rows, aim_verdict
from pgm_plugins.bench.arms import SINGLE_HOST, SINGLE_PREFIX
from pgm_plugins.bench.formatting import number
from pgm_plugins.bench.metrics import LOWER_IS_BETTER
from pgm_plugins.bench.pairing import paired_comparison
from pgm_plugins.bench.record import REQUIRED as CONTRACT
from pgm_plugins.bench.record import (
    Problem,
    check_record,
    provenance,
    read_records,
)
from pgm_plugins.bench.stats import NO_VARIATION, holm, rank_correlation
from pgm_plugins.errors import PgMError, choices_text, did_you_mean, nearest

__all__ = [
    "CONTRACT",
    "Problem",
    "Report",
    "ReportError",
    "build_report",
    "check_record",
    "contributions_table",
    "find_suites",
    "main",
    "read_records",
    "shown_path",
    "truth_agreement",
    "verdict",
]

#: arms every other arm is compared with, in this order
REFERENCES = ("baseline", "capacity", "uni_heads")
#: how the verdict names each reference
_REFERENCE_TEXT = {"baseline": "the host", "capacity": "capacity", "uni_heads": "uni_heads"}
#: metrics shown beside the primary one (those present in the records)
SECONDARY = {
    "classification": ("acc2", "wf1"),
    "regression": ("mae", "corr", "acc7", "acc2_non0", "acc2_has0"),
    "retrieval": ("map_a2i", "map_i2a"),
}
#: Holm's p below which the verdict calls a difference confident
CONFIDENCE = 0.05
#: what the report says when no step-time microbenchmark file was given
NO_STEP_TIMES = "no step-time microbenchmark was given (pass --step-times FILE...)"
_ARM_ORDER = ("baseline", "pgm", "capacity", "uni_heads", "mslr", "interaction")
FORMATS = ("markdown", "csv", "none")
#: the splits a report can score: ``test`` (the default) or ``valid`` (to choose between
#: settings or designs without reading test data; written to ``report-valid/``)
SPLITS = ("test", "valid")


class ReportError(PgMError, ValueError):
    """Nothing to report: no results folder, no suite, or no readable record."""


@dataclass
class Report:
    """What :func:`build_report` made (and wrote into ``out_dir``)."""

    suite: str
    source: Path  #: the folder the records were read from
    out_dir: Path
    markdown: str
    table: pd.DataFrame  #: one row per data set / protocol / host / arm (report.csv)
    cells: pd.DataFrame  #: one row per accepted record
    comparisons: pd.DataFrame  #: one row per (host, arm, reference, metric), Holm included
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    #: PgM's best reading against the alternatives, per host that has both (test split only)
    aim: list[AimRow] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return float(self.cells["wall_s"].sum()) if len(self.cells) else 0.0


# ----------------------------------------------------------------------------------- reading


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def find_suites(results_dir: Path) -> list[str]:
    """Suites (sub-folders holding ``*.json`` records) under ``results_dir``."""
    if not results_dir.is_dir():
        return []
    return sorted(p.name for p in results_dir.iterdir() if p.is_dir() and any(p.glob("*.json")))


def _cells(records: Sequence[tuple[Path, dict[str, Any]]], split: str = "test") -> pd.DataFrame:
    """One row per record; its ``split`` scores in the columns ``test.<metric>`` (the report's
    one score column per metric, whichever split it holds: see :data:`SPLITS`)."""
    rows = []
    for path, r in records:
        key = r["key"]
        sizes = r["sizes"]
        tm = r["time"]
        prov = provenance(r)
        row: dict[str, Any] = {
            "dataset": key["dataset"],
            "protocol": key["protocol"],
            "host": key["host"],
            "arm": key["arm"],
            "fold": key["fold"],
            "seed": key["seed"],
            "task": r["data"]["task"],
            # the task the cell's block trained on (MMSA hosts: regression on +-1 labels)
            "trains": (r.get("block_config") or {}).get("task") or r["data"]["task"],
            "data_digest": r["data"].get("digest"),
            "data_description": r["data"].get("description", ""),
            "primary": r["primary"],
            "higher_is_better": r["higher_is_better"],
            "n_train": sizes["train"],
            "n_test": sizes.get(split, np.nan),  # rows scored (the split's), for the t-test
            "host_params": r["parameters"]["host"],
            "block_params": r["parameters"]["block"],
            # the arm's tuning budget: settings trained per cell, the best kept on validation
            "settings": int(
                (r.get("arm") or {}).get("settings_tried") or len(r.get("selection") or []) or 1
            ),
            "wall_s": float(tm["wall_s"]),
            "epoch_cap": r["epoch_cap"] if _is_int(r["epoch_cap"]) else np.nan,
            "patience": r["patience"] if _is_int(r["patience"]) else np.nan,
            "epochs_run": r["epochs_run"] if _is_int(r["epochs_run"]) else np.nan,
            "step_ms": float(tm["step_ms"]) if _is_number(tm.get("step_ms")) else np.nan,
            # what early stopping watched: the runner's records, the validation primary metric
            "stopped_on": (r.get("train") or {}).get("early_stopping")
            or f"validation {r['primary']}",
            # measured on test rows: left out of a report on another split
            "shares": r["shares"] if split == "test" else None,
            "parts": r["parts"] if split == "test" else None,
            "contributions": r.get("contributions") if split == "test" else None,
            "truth": r["truth"],
            "failed": r.get("stopped") == "non-finite",
            "partitioner": (r.get("block_config") or {}).get("partitioner"),
            "cell_digest": r.get("cell_digest"),
            "train_digest": r.get("train_digest"),
            "independent_seeds": bool(r.get("independent_seeds", False)),
            "commit": prov["commit"],
            "dirty": prov["dirty"],
            "digest_scheme": prov["scheme"],
            "device": prov["device"],
            "precision": prov["precision"],
            "cpu": prov["cpu"],
            "path": str(path),
        }
        for m, v in r["metrics"][split].items():
            row[f"test.{m}"] = float(v)
        # what a choice among arms may read whichever split is scored: the validation primary
        valid = (r["metrics"].get("valid") or {}).get(r["primary"])
        row["valid.primary"] = float(valid) if isinstance(valid, int | float) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- statistics


def _metrics_of(group: pd.DataFrame) -> list[str]:
    primary = str(group["primary"].mode().iloc[0])
    task = str(group["task"].mode().iloc[0])
    out = [primary]
    for m in SECONDARY[task]:
        if m != primary and f"test.{m}" in group and group[f"test.{m}"].notna().any():
            out.append(m)
    return out


def _higher(metric: str, primary: str, primary_higher: bool) -> bool:
    return primary_higher if metric == primary else metric not in LOWER_IS_BETTER


def _arm_sort(arms: Iterable[str]) -> list[str]:
    def rank(a: str) -> tuple[int, str]:
        if a in _ARM_ORDER:
            return (_ARM_ORDER.index(a), a)
        if a.startswith(SINGLE_PREFIX):
            return (len(_ARM_ORDER) + 2, a)
        return (len(_ARM_ORDER) + (0 if a.startswith("pgm") else 1), a)

    return sorted(set(arms), key=rank)


def _host_rows(cells: pd.DataFrame, host: str) -> pd.DataFrame:
    """The cells shown in ``host``'s table: its own arms and the ``only.<m>`` arms."""
    own = cells[(cells["host"] == host) & ~cells["arm"].str.startswith(SINGLE_PREFIX)]
    single = cells[(cells["host"] == SINGLE_HOST) & cells["arm"].str.startswith(SINGLE_PREFIX)]
    return pd.concat([own, single], ignore_index=True)


def _comparisons(cells: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (ds, proto), data in cells.groupby(["dataset", "protocol"], sort=True):
        primary = str(data["primary"].mode().iloc[0])
        higher = bool(data["higher_is_better"].mode().iloc[0])
        metrics = _metrics_of(data)
        for host in _hosts(data):
            shown = _host_rows(data, host)
            for arm in _arm_sort(shown["arm"]):
                a = shown[(shown["arm"] == arm) & ~shown["failed"]]
                for ref in REFERENCES:
                    b = data[(data["host"] == host) & (data["arm"] == ref) & ~data["failed"]]
                    if arm == ref or b.empty:
                        continue
                    if arm.startswith(SINGLE_PREFIX) and ref != REFERENCES[0]:
                        continue  # a single modality is compared with the host, not a control
                    for metric in metrics:
                        col = f"test.{metric}"
                        if col not in data:
                            continue
                        row: dict[str, Any] = {
                            "dataset": ds,
                            "protocol": proto,
                            "host": host,
                            "arm": arm,
                            "reference": ref,
                            "metric": metric,
                        }
                        higher_m = _higher(metric, primary, higher)
                        row.update(paired_comparison(a, b, col, higher_m))
                        rows.append(row)
    columns = ["dataset", "protocol", "host", "arm", "reference", "metric", "n"]
    frame = pd.DataFrame(
        rows,
        columns=[
            *columns,
            "unpaired_arm",
            "unpaired_ref",
            "test",
            "ratio",
            "diff",
            "low",
            "high",
            "p",
            "wins",
            "varies",
            "detectable",
            "provenance",
        ],
    )
    frame["p_holm"] = np.nan
    if len(frame):
        family = ["dataset", "protocol", "reference", "metric"]
        for _, idx in frame.groupby(family, sort=False).groups.items():
            frame.loc[idx, "p_holm"] = holm(frame.loc[idx, "p"].tolist())
    return frame


def _hosts(data: pd.DataFrame) -> list[str]:
    hosts = sorted(set(data.loc[~data["arm"].str.startswith(SINGLE_PREFIX), "host"]))
    return hosts or sorted(set(data["host"]))


def truth_agreement(shares: Mapping[str, float], truth: Mapping[str, Any]) -> dict[str, Any]:
    """Whether learned uni ``shares`` order the modalities as the ground ``truth`` does.

    ``truth`` is a synthetic record's ``truth``: ``{"true_uni_share": {m: share | None}}`` (None:
    a noise modality, left out), a plain ``{m: share}``, or ``{"order_by_uni_share": [m, ...]}``
    (largest first). Over the modalities with a known share: ``pairs`` compared (pairs the truth
    ties are left out), ``pairs_ok`` in the true order, ``order_ok`` when all of them are, and
    the Spearman correlation where more than two modalities are known (else NaN).
    """
    if isinstance(truth.get("true_uni_share"), Mapping):
        true = {m: v for m, v in truth["true_uni_share"].items() if v is not None}
    elif isinstance(truth.get("order_by_uni_share"), list):
        order = truth["order_by_uni_share"]
        true = {m: float(len(order) - i) for i, m in enumerate(order)}
    else:
        true = {m: v for m, v in truth.items() if _is_number(v)}
    mods = [m for m in true if m in shares]
    pairs = ok = 0
    for i, m in enumerate(mods):
        for n in mods[i + 1 :]:
            if true[m] == true[n]:
                continue
            pairs += 1
            ok += (shares[m] - shares[n]) * (true[m] - true[n]) > 0
    rho = (
        rank_correlation([shares[m] for m in mods], [true[m] for m in mods])
        if len(mods) > 2
        else float("nan")
    )
    return {
        "modalities": mods,
        "pairs": pairs,
        "pairs_ok": int(ok),
        "order_ok": bool(pairs and ok == pairs),
        "spearman": rho,
    }


# ---------------------------------------------------------------------------- step time file


def shown_path(path: Path) -> str:
    """``path`` as the report shows it: relative to the current directory when inside it, else
    absolute (the same report from the same records wherever the package is installed)."""
    full = Path(path).resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)


def _step_files(step: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    return sorted({e["file"] for v in step.values() for e in v})


def _file_date(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cI", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out:
        return f"committed {out}"
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return f"modified {stamp:%Y-%m-%d %H:%M} UTC (not committed)"


def _load_text(load: Any) -> str:
    if isinstance(load, list | tuple) and load and _is_number(load[0]):
        return f"{load[0]:.1f}"
    return "?"


def _host_kind(host: str) -> str:
    name = host.lower()
    for prefix in ("mmsa.", "mmsa_", "mmsa-"):
        name = name.removeprefix(prefix)
    return name


def load_step_times(paths: Iterable[Path]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Step-time microbenchmark results per host kind (``mult``, ``lmf`` ...) and notes."""
    out: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    for path in sorted(paths):
        try:
            data = json.loads(path.read_text())
            results = data["results"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            notes.append(f"step-time file {path} left out: {exc!r}")
            continue
        shown = shown_path(path)
        for r in results:
            try:
                entry = {
                    "file": shown,
                    "date": _file_date(path),
                    "commit": str(data.get("commit", "?"))[:10],
                    "dirty": data.get("dirty"),
                    "threads": (data.get("settings") or {}).get("threads"),
                    "load": _load_text((data.get("machine") or {}).get("load_average_before")),
                    "adapter": r.get("adapter", ""),
                    "host_ms": 1e3 * float(r["step_s_median"]["host"]),
                    "ratio_pgm": float(r["ratio_pgm"]),
                    "ratio_small": float(r.get("ratio_pgm_small", np.nan)),
                    "ratio_identity": float(r.get("ratio_identity", np.nan)),
                    "ratio_floor": float(r.get("ratio_floor", np.nan)),
                    "host_params": int(r["host_parameters"]),
                    "block_params": int(r["block_parameters"]),
                }
            except (KeyError, TypeError, ValueError) as exc:
                notes.append(f"step-time file {path}: entry {r.get('kind')!r} left out ({exc!r})")
                continue
            out.setdefault(str(r.get("kind", "?")), []).append(entry)
    return out, notes


# ---------------------------------------------------------------------------------- markdown


def _p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def _constant(row: Mapping[str, Any]) -> bool:
    """Whether a comparison's paired differences did not vary (``compare``'s ``varies``)."""
    v = row.get("varies")
    return isinstance(v, bool | np.bool_) and not v


def _cmp_text(row: Mapping[str, Any]) -> str:
    """A comparison as the host table shows it: the mean difference with its 95 % interval, p,
    Holm's p and the wins; differences that do not vary get no interval and no p."""
    if row["n"] < 2:
        return f"- (n={row['n']})"
    if _constant(row):
        return f"{row['diff']:+.4f} {NO_VARIATION} ({int(row['wins'])}/{row['n']} better)"
    return (
        f"{row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}] "
        f"p{_p(row['p'])} p_Holm{_p(row['p_holm'])} ({int(row['wins'])}/{row['n']} better)"
    )


def _table_md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


_TEST_TEXT = {
    "corrected": lambda r: (
        f"corrected resampled t (n_test/n_train = {r.mean():.3f}): the paired cells trained on "
        "different but overlapping row sets (several folds, or a split drawn per seed)"
    ),
    "paired": lambda r: (
        "plain paired t over seeds: every paired cell trained on the same rows (one fixed "
        "split; only the model's seed differs)"
    ),
    "independent": lambda r: (
        "plain paired t over seeds: the data set draws fresh, disjoint rows for every seed "
        "(independent samples, no shared training data)"
    ),
    "paired-by-folds": lambda r: (
        "plain paired t over seeds, chosen by the fold count because the records predate "
        "train_digest: if the split is drawn per seed the interval is too narrow (rerun)"
    ),
}


# ------------------------------------------------------------------------------ table model


@dataclass(frozen=True)
class ArmRow:
    """One arm of a host table: its cells' statistics and its comparisons, computed once."""

    arm: str
    best_single: bool  #: the single modality with the best mean primary metric (marked *)
    n: int
    failed: int
    host_params: int
    block_params: int
    overhead_pct: float  #: block parameters as % of the arm's host
    settings: int  #: the tuning budget: settings trained per cell (the most of its cells)
    step_ms: float  #: the cells' own mean step time (under load)
    wall_s: float
    stats: dict[str, tuple[float, float, int]]  #: metric -> (mean, std, count)
    comparisons: pd.DataFrame  #: this arm's rows of :attr:`Report.comparisons`


@dataclass(frozen=True)
class HostTable:
    """The table of one host in one data set / protocol: its arms and the ``only.<m>`` arms."""

    host: str
    host_params: int
    rows: list[ArmRow]
    comparisons: pd.DataFrame  #: the host's rows of :attr:`Report.comparisons`
    microbench: list[dict[str, Any]]  #: step-time microbenchmark entries of the host's kind
    base_ms: float  #: the cells' mean step time of ``baseline`` and ``pgm`` (NaN: none)
    pgm_ms: float


@dataclass(frozen=True)
class DataSection:
    """One data set / protocol: what its cells share, what is wrong with them, its host tables."""

    dataset: str
    protocol: str
    task: str
    primary: str
    higher: bool
    metrics: list[str]  #: the primary metric first, then the secondary ones present
    description: str
    cells: pd.DataFrame
    digests: list[str]
    mixed_seeds: str  #: seeds whose cells read different data ("" when none)
    test_kinds: list[str]  #: the tests used (keys of ``_TEST_TEXT``)
    ratios: pd.Series  #: n_test / n_train of the comparisons under the corrected test
    undigested: int  #: records without a cell digest
    mixed_settings: list[str]  #: host/arm pairs with several cell digests
    failed: pd.DataFrame  #: diverged cells
    best_single: str | None
    caps: list[int]
    patience: list[int]
    hosts: list[HostTable]

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.protocol}"

    def notes(self) -> list[str]:
        """The section's warnings, as listed under Notes."""
        out = []
        if self.mixed_seeds:
            out.append(f"{self.name}: different data digests within seed(s) {self.mixed_seeds}")
        elif len(self.digests) > 1:
            out.append(f"{self.name}: {len(self.digests)} data digests in one suite folder")
        if self.undigested:
            out.append(f"{self.name}: {self.undigested} record(s) without cell_digest")
        if self.mixed_settings:
            out.append(f"{self.name}: several cell digests in " + ", ".join(self.mixed_settings))
        if len(self.failed):
            out.append(f"{self.name}: {len(self.failed)} diverged cell(s)")
        return out


def _sections(
    cells: pd.DataFrame, comps: pd.DataFrame, step: Mapping[str, list[dict[str, Any]]]
) -> list[DataSection]:
    return [
        _data_section(ds, proto, data, comps, step)
        for (ds, proto), data in cells.groupby(["dataset", "protocol"], sort=True)
    ]


def _data_section(
    ds: str,
    proto: str,
    data: pd.DataFrame,
    comps: pd.DataFrame,
    step: Mapping[str, list[dict[str, Any]]],
) -> DataSection:
    primary = str(data["primary"].mode().iloc[0])
    higher = bool(data["higher_is_better"].mode().iloc[0])
    metrics = _metrics_of(data)
    per_seed = data.dropna(subset=["data_digest"]).groupby("seed")["data_digest"].nunique()
    sub = comps[(comps["dataset"] == ds) & (comps["protocol"] == proto)]
    used = sub[sub["n"] >= 2]
    groups = data.dropna(subset=["cell_digest"]).groupby(["host", "arm"])["cell_digest"]
    singles = data[(data["host"] == SINGLE_HOST) & data["arm"].str.startswith(SINGLE_PREFIX)]
    best_single = None
    if len(singles):
        means = singles.groupby("arm")[f"test.{primary}"].mean()
        best_single = str(means.idxmax() if higher else means.idxmin())
    return DataSection(
        dataset=ds,
        protocol=proto,
        task=str(data["task"].mode().iloc[0]),
        primary=primary,
        higher=higher,
        metrics=metrics,
        description=f"{data['data_description'].iloc[0]}".strip(),
        cells=data,
        digests=sorted(set(data["data_digest"].dropna())),
        mixed_seeds=", ".join(str(s) for s in per_seed[per_seed > 1].index),
        test_kinds=sorted(set(used["test"])),
        ratios=used.loc[used["test"] == "corrected", "ratio"],
        undigested=int(data["cell_digest"].isna().sum()),
        mixed_settings=[f"{h}/{a}" for (h, a), n in groups.nunique().items() if n > 1],
        failed=data[data["failed"]],
        best_single=best_single,
        caps=sorted({int(v) for v in data["epoch_cap"].dropna()}),
        patience=sorted({int(v) for v in data["patience"].dropna()}),
        hosts=[
            _host_table(data, host, metrics, best_single, sub[sub["host"] == host], step)
            for host in _hosts(data)
        ],
    )


def _host_table(
    data: pd.DataFrame,
    host: str,
    metrics: Sequence[str],
    best_single: str | None,
    comps: pd.DataFrame,
    step: Mapping[str, list[dict[str, Any]]],
) -> HostTable:
    shown = _host_rows(data, host)
    cols = [f"test.{m}" for m in metrics if f"test.{m}" in shown]
    summary = shown.groupby("arm")[cols].agg(["mean", "std", "count"])
    hp = shown.loc[shown["host"] == host, "host_params"]
    own = shown[shown["host"] == host]
    return HostTable(
        host=host,
        host_params=int(hp.mode().iloc[0]) if len(hp) else 0,
        rows=[
            _arm_row(arm, shown[shown["arm"] == arm], metrics, summary, best_single, comps)
            for arm in _arm_sort(shown["arm"])
        ],
        comparisons=comps,
        microbench=list(step.get(_host_kind(host)) or []),
        base_ms=float(own.loc[own["arm"] == "baseline", "step_ms"].mean()),
        pgm_ms=float(own.loc[own["arm"] == "pgm", "step_ms"].mean()),
    )


def _arm_row(
    arm: str,
    a: pd.DataFrame,
    metrics: Sequence[str],
    summary: pd.DataFrame,
    best_single: str | None,
    comps: pd.DataFrame,
) -> ArmRow:
    block = int(a["block_params"].mode().iloc[0])
    arm_host = int(a["host_params"].mode().iloc[0])
    stats = {}
    for m in metrics:
        col = f"test.{m}"
        mean, std, cnt = (summary.loc[arm, (col, s)] for s in ("mean", "std", "count"))
        stats[m] = (mean, std, int(cnt))
    return ArmRow(
        arm=arm,
        best_single=arm == best_single,
        n=len(a),
        failed=int(a["failed"].sum()),
        host_params=arm_host,
        block_params=block,
        overhead_pct=100.0 * block / arm_host if arm_host else float("nan"),
        settings=int(a["settings"].max()),
        step_ms=float(a["step_ms"].mean()),
        wall_s=float(a["wall_s"].sum()),
        stats=stats,
        comparisons=comps[comps["arm"] == arm],
    )


# ------------------------------------------------------------------------ markdown renderer


def _markdown(
    suite: str,
    source: Path,
    cells: pd.DataFrame,
    sections: Sequence[DataSection],
    step: Mapping[str, list[dict[str, Any]]],
    problems: Sequence[Problem],
    notes: Sequence[str],
) -> str:
    md = _header_md(suite, source, cells, problems)
    for section in sections:
        md += _section_md(section)
        for table in section.hosts:
            md += _host_md(section, table)
            md += [*_cost_md(table, step), f"- host parameters: {table.host_params:,}", ""]
        md += _contributions_md(section.cells)
        md += _shares_md(section.cells)
    md += _microbench_md(step, {_host_kind(h) for h in cells["host"]})
    if problems:
        md += ["## Skipped result files", ""]
        md += [f"- `{shown_path(p.path)}`: {p.reason}" for p in problems]
        md.append("")
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(md)


def _header_md(
    suite: str, source: Path, cells: pd.DataFrame, problems: Sequence[Problem]
) -> list[str]:
    total = float(cells["wall_s"].sum())
    commits = Counter(
        f"{c[:10] if c else '?'}{' (dirty)' if d else ''}"
        for c, d in zip(cells["commit"], cells["dirty"], strict=True)
    )
    return [
        f"# Benchmark report: suite `{suite}`",
        "",
        f"- records: {len(cells)} cells read from `{shown_path(source)}`; {len(problems)} file(s)"
        " skipped" + (" (listed at the end)" if problems else ""),
        f"- wall time, all cells: {total:.0f} s ({total / 3600:.2f} h) on the machines that ran "
        "them",
        "- code: " + ", ".join(f"{c} x{n}" for c, n in commits.most_common()),
        "- statistics: mean +- std (ddof 1) over cells; differences arm - reference paired over "
        "(fold, seed) with a 95 % interval; the corrected resampled t-test of Nadeau & Bengio "
        "(2003) where the paired cells trained on different but overlapping rows (several folds, "
        "or a split drawn per seed: their records' train_digest differ), the plain paired "
        "t-test where all trained on the same rows (one fixed split, seeds only) or on fresh "
        "independent rows per seed (synthetic). Diverged cells are counted as failed and left "
        "out of means and comparisons. p_Holm: Holm's correction over every comparison of a "
        "data set with one reference (its hosts x arms), one family per (reference, metric).",
        "",
    ]


def _section_md(s: DataSection) -> list[str]:
    """The data set's heading and the bullet lines on what its cells share or lack."""
    data = s.cells
    md = [f"## {s.dataset} / {s.protocol}", "", s.description or "(no description)", ""]
    md.append(
        f"- task: {s.task}; primary metric: **{s.primary}** "
        f"({'higher' if s.higher else 'lower'} is better); also shown: "
        + (", ".join(s.metrics[1:]) or "none")
    )
    if s.mixed_seeds:
        md.append(
            f"- WARNING: cells of one seed read different data (digests differ within "
            f"seed(s) {s.mixed_seeds}): the arms did not all see the same data"
        )
    elif len(s.digests) > 1:
        md.append(
            f"- WARNING: {len(s.digests)} data digests in this folder (the suite's data "
            "changed between runs): the cells did not all see the same data"
        )
    elif s.digests:
        md.append(f"- data digest {s.digests[0][:16]}")
    if s.test_kinds:
        md.append("- test: " + "; ".join(_TEST_TEXT[k](s.ratios) for k in s.test_kinds))
    if s.undigested:
        md.append(
            f"- {s.undigested} record(s) predate cell digests: whether they ran with the "
            "suite's current settings cannot be checked"
        )
    if s.mixed_settings:
        md.append(
            "- WARNING: cells of " + ", ".join(s.mixed_settings) + " ran with different settings "
            "(several cell digests): see each record's cell_settings"
        )
    if len(s.failed):
        md.append(
            f"- FAILED: {len(s.failed)} cell(s) diverged (non-finite loss or predictions); "
            "they are counted in each arm's `failed` and left out of means and comparisons: "
            + ", ".join(
                f"{r.host}/{r.arm} fold {r.fold} seed {r.seed}" for r in s.failed.itertuples()
            )
        )
    if s.best_single is not None:
        md.append(
            f"- single modalities (host `{SINGLE_HOST}`, shown in every host's table): "
            f"best is `{s.best_single}` on {s.primary} (marked *)"
        )
    if s.caps:
        hit = int((data["epochs_run"] >= data["epoch_cap"]).sum())
        md.append(
            f"- training: epoch cap {'/'.join(map(str, s.caps))}, early stopping on the "
            f"{' / '.join(sorted(set(data['stopped_on'])))} with patience "
            f"{'/'.join(map(str, s.patience))}; epochs run "
            f"mean {data['epochs_run'].mean():.1f}, {hit}/{len(data)} cells reached the cap"
        )
    md += [f"- wall time of these cells: {data['wall_s'].sum():.0f} s", ""]
    return md


def _host_md(s: DataSection, t: HostTable) -> list[str]:
    """A host's table, its footnote and the comparisons left unpaired. A reference's column is
    shown where the host has cells of it (``baseline`` always)."""
    arms = {r.arm for r in t.rows}
    refs = [ref for ref in REFERENCES if ref == REFERENCES[0] or ref in arms]
    header = [
        "arm",
        "n (failed)",
        "settings",
        *[f"{m} mean +- std" for m in s.metrics],
        "block params (+% of host)",
        *[f"vs {ref} ({s.primary})" for ref in refs],
        "detectable vs host**",
        "step ms*",
    ]
    rows = []
    for r in t.rows:
        primary = r.comparisons[r.comparisons["metric"] == s.primary]
        cmp_cells, detectable = [], "-"
        for ref in refs:
            hit = primary[primary["reference"] == ref]
            cmp_cells.append(_cmp_text(hit.iloc[0]) if len(hit) else "-")
            if ref == REFERENCES[0] and len(hit):
                detectable = number(float(hit.iloc[0]["detectable"]))
        rows.append(
            [
                f"`{r.arm}`" + (" *" if r.best_single else ""),
                f"{r.n}" + (f" ({r.failed} failed)" if r.failed else ""),
                str(r.settings),
                *[f"{number(mean)} +- {number(std)}" for mean, std, _ in r.stats.values()],
                f"{r.block_params:,} ({r.overhead_pct:+.1f} %)" if r.block_params else "0",
                *cmp_cells,
                detectable,
                number(r.step_ms, 1),
            ]
        )
    md = [f"### {s.dataset} / {s.protocol} / host `{t.host}`", ""]
    md += [*_table_md(header, rows), ""]
    md.append(
        "\\* step ms: the cells' own mean training-step time, measured under load "
        "(other jobs shared the machine); see the microbenchmark for the cost. settings: "
        "the arm's tuning budget, trainings per cell with the best on validation kept. "
        "\\*\\* detectable vs host: the smallest difference from the host these paired cells "
        "detect with 80 % power at alpha 0.05 (two-sided, before Holm)."
    )
    hc = t.comparisons
    unpaired = hc[(hc["metric"] == s.primary) & (hc["unpaired_arm"] + hc["unpaired_ref"] > 0)]
    for _, r in unpaired.iterrows():
        md.append(
            f"- unpaired: `{r['arm']}` vs `{r['reference']}`: {r['unpaired_arm']} cell(s) "
            f"of `{r['arm']}` and {r['unpaired_ref']} of `{r['reference']}` have no "
            f"partner (fold, seed) and are left out of that comparison (n={r['n']})"
        )
    return md + _provenance_md(hc[hc["metric"] == s.primary])


def _provenance_md(comps: pd.DataFrame) -> list[str]:
    """One line per distinct set of provenance flags, naming the comparisons it concerns."""
    by_flags: dict[str, list[str]] = {}
    for _, r in comps.iterrows():
        if r["provenance"]:
            by_flags.setdefault(r["provenance"], []).append(f"`{r['arm']}`/`{r['reference']}`")
    return [f"- provenance of {', '.join(pairs)}: {flags}" for flags, pairs in by_flags.items()]


def _cost_md(t: HostTable, step: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """The step-time lines under a host's table: the cells' own and the microbenchmark's."""
    cost = []
    if not (math.isnan(t.base_ms) or math.isnan(t.pgm_ms)) and t.base_ms > 0:
        cost.append(
            f"- cells' mean step time (under load): pgm {t.pgm_ms:.1f} ms / baseline "
            f"{t.base_ms:.1f} ms = x{t.pgm_ms / t.base_ms:.2f}"
        )
    cost += [_microbench_line(e) for e in t.microbench]
    if step and not t.microbench:
        cost.append(
            f"- step-time microbenchmark: no entry for host `{t.host}` in "
            + ", ".join(f"`{f}`" for f in _step_files(step))
        )
    return cost


def _microbench_line(e: Mapping[str, Any]) -> str:
    return (
        f"- step-time microbenchmark (`{e['file']}`, {e['date']}, commit {e['commit']}"
        f"{' dirty' if e['dirty'] else ''}, {e['threads']} thread(s), load average "
        f"{e['load']}): host {e['host_ms']:.1f} ms/step; with PgM "
        f"x{e['ratio_pgm']:.3f}, small block x{e['ratio_small']:.3f}, identity "
        f"hooks x{e['ratio_identity']:.3f}"
        + (
            ""
            if math.isnan(e["ratio_floor"])
            else f", the block's own cost alone x{e['ratio_floor']:.3f}"
        )
        + f"; block {e['block_params']:,} params "
        f"= {100 * e['block_params'] / e['host_params']:.1f} % of the host's "
        f"{e['host_params']:,}" + (f" (adapter {e['adapter']})" if e["adapter"] else "")
    )


# ----------------------------------------------------------------------------- csv renderer


def _csv_rows(suite: str, sections: Sequence[DataSection]) -> list[dict[str, Any]]:
    return [_csv_row(suite, s, t, r) for s in sections for t in s.hosts for r in t.rows]


def _csv_row(suite: str, s: DataSection, t: HostTable, r: ArmRow) -> dict[str, Any]:
    """One line of report.csv: identity, counts, cost, statistics, comparisons."""
    micro = t.microbench[0] if t.microbench else None
    row: dict[str, Any] = {
        "suite": suite,
        "dataset": s.dataset,
        "protocol": s.protocol,
        "host": t.host,
        "arm": r.arm,
        "cells_from_host": SINGLE_HOST if r.arm.startswith(SINGLE_PREFIX) else t.host,
        "best_single": r.best_single,
        "primary": s.primary,
        "n": r.n,
        "failed": r.failed,
        "host_params": r.host_params,
        "block_params": r.block_params,
        "settings": r.settings,
        "overhead_pct": r.overhead_pct,
        "step_ms_mean_under_load": r.step_ms,
        "wall_s_total": r.wall_s,
        "microbench_ratio_pgm": micro["ratio_pgm"] if micro else np.nan,
        "microbench_file": micro["file"] if micro else "",
    }
    for m, (mean, std, cnt) in r.stats.items():
        row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_n": cnt})
    for ref in REFERENCES:
        for _, c in r.comparisons[r.comparisons["reference"] == ref].iterrows():
            for k in ("diff", "low", "high", "p", "p_holm", "detectable", "n", "test"):
                row[f"vs_{ref}_{c['metric']}_{k}"] = c[k]
            if _constant(c):
                row[f"vs_{ref}_{c['metric']}_test"] = "no variation"
            row[f"vs_{ref}_{c['metric']}_unpaired"] = c["unpaired_arm"] + c["unpaired_ref"]
    return row


def _build(
    suite: str,
    source: Path,
    cells: pd.DataFrame,
    problems: list[Problem],
    notes: list[str],
    step_paths: Iterable[Path],
) -> tuple[str, pd.DataFrame, pd.DataFrame, list[str]]:
    """The report's phases: comparisons, step times, the table model, then its renderers."""
    comps = _comparisons(cells)
    step, step_notes = load_step_times(step_paths)
    sections = _sections(cells, comps, step)
    notes = [*notes, *step_notes, *(n for s in sections for n in s.notes())]
    markdown = _markdown(suite, source, cells, sections, step, problems, notes)
    return markdown, _csv_frame(_csv_rows(suite, sections), cells), comps, notes


def _csv_frame(rows: list[dict[str, Any]], cells: pd.DataFrame) -> pd.DataFrame:
    """report.csv rows with a fixed column order (identity, counts, metrics, comparisons)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    metrics: list[str] = []
    for _, data in cells.groupby(["dataset", "protocol"], sort=True):
        metrics += [m for m in _metrics_of(data) if m not in metrics]
    cols = list(rows[0])[: list(rows[0]).index("wall_s_total") + 1]
    cols += [f"{m}_{k}" for m in metrics for k in ("mean", "std", "n")]
    cols += [
        f"vs_{ref}_{m}_{k}"
        for ref in REFERENCES
        for m in metrics
        for k in ("diff", "low", "high", "p", "p_holm", "detectable", "n", "unpaired", "test")
    ]
    cols = [c for c in cols if c in frame.columns]
    cols += [c for c in frame.columns if c not in cols]
    frame = frame[cols]
    for c in cols:
        if c.endswith(("_n", "_unpaired")) or c == "n":
            frame[c] = frame[c].astype("Int64")
    return frame


#: the measures of a record's ``contributions``, as the report names them
CONTRIBUTION_MEASURES = {
    "shapley": "Shapley value",
    "probe": "probe",
    "uni": "uni part",
    "paired": "paired part",
    "beta": "mix beta",
}


def contributions_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The records' ``contributions`` (docs/results.md), summarised per (data set, protocol,
    host, arm, measure, modality): ``mean``, ``lo`` / ``hi`` (95 % t-interval over the cells;
    NaN for one cell) and ``n``. Measures: ``shapley``, ``probe``, ``uni``, ``paired``,
    ``beta``."""
    from scipy import stats

    rows = []
    keys = ["dataset", "protocol", "host", "arm"]
    for key, g in cells.groupby(keys, sort=True):
        values: dict[tuple[str, str], list[float]] = {}
        for c in g["contributions"]:
            if not c:
                continue
            for m, v in (c.get("shapley") or {}).items():
                values.setdefault(("shapley", m), []).append(float(v))
            for m, v in (c.get("probes") or {}).items():
                values.setdefault(("probe", m), []).append(float(v))
            for m, got in (c.get("parts") or {}).items():
                for part, v in got.items():
                    values.setdefault((part, m), []).append(float(v))
            for m, v in (c.get("betas") or {}).items():
                values.setdefault(("beta", m), []).append(float(v))
        for (measure, m), vs in values.items():
            arr = np.asarray(vs, dtype=float)
            arr = arr[np.isfinite(arr)]
            n = len(arr)
            mean = float(arr.mean()) if n else math.nan
            half = (
                float(stats.t.ppf(0.975, n - 1) * arr.std(ddof=1) / math.sqrt(n))
                if n > 1
                else math.nan
            )
            rows.append(
                dict(zip(keys, key, strict=True))
                | {"measure": measure, "modality": m, "mean": mean}
                | {"lo": mean - half, "hi": mean + half, "n": n}
            )
    columns = [*keys, "measure", "modality", "mean", "lo", "hi", "n"]
    return pd.DataFrame(rows, columns=columns)


def _contributions_md(data: pd.DataFrame) -> list[str]:
    """Per host and arm: each measure per modality, mean [95 % interval] over cells."""
    have = data[data["contributions"].map(bool)]
    if have.empty:
        if len(data):
            return [
                "### contributions",
                "",
                "- none measured: these records predate the contributions measure (each "
                "modality's Shapley value, its encoder's probe, the uni / paired parts); rerun "
                "the suite to measure them",
                "",
            ]
        return []
    primary = str(have["primary"].iloc[0])
    higher = bool(have["higher_is_better"].iloc[0])
    md = [
        f"### contributions (test {primary}; {'higher' if higher else 'lower'} is better)",
        "",
        f"Mean [95 % interval] over cells. **Shapley value**: the modality's share of the test "
        f"{primary} when an absent modality's site features are replaced by their training mean "
        "(the values sum to the full model's metric minus the metric with every modality at its "
        f"mean). **probe**: the test {primary} of a linear probe on that modality's site "
        "features (the encoder's own quality). **uni / paired part**: the change of the test "
        f"{primary} when that part of the PgM block is replaced by its training mean. "
        "**mix beta**: the learned scalar with which the block's rebuilt features enter the host "
        "(`h + beta (h_hat - h)`); near 0 they barely reach it.",
        "",
    ]
    table = contributions_table(have)
    for (host, arm), g in table.groupby(["host", "arm"], sort=True):
        n = int(g["n"].max())
        md.append(f"- `{host}` / `{arm}` ({n} cell{'s' if n != 1 else ''}):")
        for measure, word in CONTRIBUTION_MEASURES.items():
            rows = g[g["measure"] == measure]
            if rows.empty:
                continue
            sign = "" if measure == "probe" else "+"
            shown = ", ".join(
                f"{r.modality} {r.mean:{sign}.3f}"
                + (f" [{r.lo:{sign}.3f}, {r.hi:{sign}.3f}]" if math.isfinite(r.lo) else "")
                for r in rows.itertuples()
            )
            md.append(f"  - {word}: {shown}")
    missing = len(data) - len(have)
    if missing:
        md.append(
            f"- {missing} of {len(data)} cells have no contributions (records written before "
            "the measure existed, or retrieval cells)"
        )
    md.append("")
    return md


def _shares_md(data: pd.DataFrame) -> list[str]:
    md: list[str] = []
    with_shares = data[data["shares"].map(lambda s: bool(s))]
    if with_shares.empty:
        return md
    md += ["### learned uni share per modality (test data; mean +- std over cells)", ""]
    for (host, arm), g in with_shares.groupby(["host", "arm"], sort=True):
        frame = pd.DataFrame(list(g["shares"]))
        parts = [
            f"{m}={frame[m].mean():.3f}"
            + (f" +- {frame[m].std():.3f}" if frame[m].count() > 1 else " (one cell)")
            for m in frame.columns
        ]
        md.append(f"- `{host}` / `{arm}` ({len(g)} cells): " + ", ".join(parts))
        truths = [(s, t) for s, t in zip(g["shares"], g["truth"], strict=True) if t]
        kinds = set(g["partitioner"].dropna()) if "partitioner" in g else set()
        learned = "gate" in kinds if kinds else bool((frame.std() > 1e-9).any())
        if truths and not learned:
            md.append(
                f"  - fixed shares (partitioner {', '.join(sorted(kinds)) or 'fixed'}): not "
                "learned, so not compared with the ground truth"
            )
        elif truths:
            agree = [truth_agreement(s, t) for s, t in truths]
            judged = [a for a in agree if a["pairs"]]
            if not judged:
                md.append("  - ground truth: no modality pair with a known order")
                continue
            ok = sum(a["order_ok"] for a in judged)
            rho = [a["spearman"] for a in judged if not math.isnan(a["spearman"])]
            true = _true_order(truths[0][1])
            md.append(
                f"  - ground truth order ({true}): the learned uni shares order the modalities "
                f"as the truth does in {ok}/{len(judged)} cells ({ok / len(judged):.2f}); "
                f"pairs in the true order {sum(a['pairs_ok'] for a in judged)}/"
                f"{sum(a['pairs'] for a in judged)} (a tie is not an order)"
                + (
                    f"; Spearman (learned vs true share) mean {np.mean(rho):+.2f} over "
                    f"{len(rho)} cells"
                    if rho
                    else ""
                )
            )
    md.append("")
    return md


def _true_order(truth: Mapping[str, Any]) -> str:
    if isinstance(truth.get("true_uni_share"), Mapping):
        known = {m: v for m, v in truth["true_uni_share"].items() if v is not None}
    elif isinstance(truth.get("order_by_uni_share"), list):
        return " > ".join(truth["order_by_uni_share"])
    else:
        known = {m: v for m, v in truth.items() if _is_number(v)}
    return " > ".join(f"{m} {v:.2f}" for m, v in sorted(known.items(), key=lambda kv: -kv[1]))


def _microbench_md(step: Mapping[str, list[dict[str, Any]]], hosts: set[str]) -> list[str]:
    if not step:
        return ["## Step-time microbenchmark", "", f"({NO_STEP_TIMES})", ""]
    mine = {k: v for k, v in step.items() if k in hosts}
    if not mine:
        files = _step_files(step)
        return [
            "## Step-time microbenchmark",
            "",
            f"No microbenchmark entry for this suite's hosts ({', '.join(sorted(hosts))}); the "
            f"files {', '.join(f'`{f}`' for f in files)} cover {', '.join(sorted(step))}.",
            "",
        ]
    rows = []
    for kind, entries in sorted(mine.items()):
        for e in entries:
            rows.append(
                [
                    kind,
                    e["adapter"] or "-",
                    f"{e['host_ms']:.1f}",
                    f"x{e['ratio_pgm']:.3f}",
                    f"x{e['ratio_small']:.3f}",
                    f"x{e['ratio_identity']:.3f}",
                    f"{100 * e['block_params'] / e['host_params']:.1f}",
                    f"{e['threads']}",
                    e["load"],
                    f"`{e['file']}` ({e['date']})",
                ]
            )
    md = [
        "## Step-time microbenchmark (per host: arms interleaved in shuffled order each round, "
        "median over rounds; the load average before the run is shown)",
        "",
        *_table_md(
            [
                "host",
                "adapter",
                "host ms/step",
                "+PgM",
                "+small block",
                "identity hooks",
                "block params %",
                "threads",
                "load avg before",
                "file",
            ],
            rows,
        ),
        "",
    ]
    return md


# --------------------------------------------------------------------------------- verdict


def _judge(c: Mapping[str, Any], higher: bool, what: str) -> tuple[str, str]:
    """(the word, the numbers) of one comparison with ``what`` (``the host``, ``capacity``)."""
    n = int(c["n"])
    if n < 2:
        return "untested", f"{n} paired cell(s) with {what}; a comparison needs 2"
    wins = f"({int(c['wins'])}/{n} better)"
    if _constant(c):
        diff = float(c["diff"])
        if abs(diff) < 5e-5:  # shown as +0.0000
            word = f"the same as {what} in every cell"
        else:
            word = f"{'ahead of' if (diff > 0) == higher else 'behind'} {what} in every cell"
        return word, f"{diff:+.4f}, {NO_VARIATION}, so no test {wins}"
    numbers = f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] p_Holm{_p(c['p_holm'])} {wins}"
    if c["p_holm"] < CONFIDENCE:
        better = c["diff"] > 0 if higher else c["diff"] < 0
        return (f"beats {what}" if better else f"worse than {what}"), numbers
    return f"level with {what}", numbers


def verdict(report: Report) -> list[str]:
    """The report's short reading for a newcomer: per data set and host, one line per arm on the
    primary metric against ``baseline`` (the host without a block: beats it with confidence,
    level with it, or worse, with the difference, its 95 % interval and Holm's p) and, for the
    arms other than the single modalities, against ``capacity`` (the same-size control) and
    ``uni_heads`` (the simplest method users pick instead) where they ran; then the methods
    comparison's outcome per host (:func:`~pgm_plugins.bench.alternatives.aim_verdict`)."""
    lines: list[str] = []
    comps = report.comparisons
    for (ds, proto), data in report.cells.groupby(["dataset", "protocol"], sort=True):
        primary = str(data["primary"].mode().iloc[0])
        higher = bool(data["higher_is_better"].mode().iloc[0])
        mine = comps[
            (comps["dataset"] == ds) & (comps["protocol"] == proto) & (comps["metric"] == primary)
        ]
        for host in _hosts(data):
            rows = mine[mine["host"] == host]
            arms = [a for a in _arm_sort(rows["arm"]) if a != REFERENCES[0]]
            if not arms:
                continue
            seeds = data.loc[data["host"] == host, "seed"].nunique()
            lines.append(
                f"Verdict on {ds}/{proto}, host {host}: test {primary} "
                f"({'higher' if higher else 'lower'} is better), {seeds} seed(s); "
                f"confident = Holm's p < {CONFIDENCE} over the data set's hosts x arms:"
            )
            width = max(len(a) for a in arms)
            for arm in arms:
                parts = []
                for ref in REFERENCES:
                    what = _REFERENCE_TEXT[ref]
                    hit = rows[(rows["arm"] == arm) & (rows["reference"] == ref)]
                    if len(hit):
                        word, numbers = _judge(hit.iloc[0], higher, what)
                        parts.append(f"{word}: {numbers}")
                if parts:
                    lines.append(f"  {arm:<{width}}  " + "; ".join(parts))
    if lines:
        lines.append(
            "  (the host = arm baseline; capacity = the host grown to the block's size without "
            "PgM; uni_heads = the host with a head per modality; level = no difference shown at "
            "this many seeds, not proof of equality)"
        )
    return lines + aim_verdict(report.aim)


# ---------------------------------------------------------------------------------- entry


def build_report(
    results_dir: str | Path,
    suite: str | None = None,
    out_dir: str | Path | None = None,
    *,
    step_time_files: Iterable[Path] | None = None,
    plots: bool = True,
    split: str = "test",
) -> Report:
    """Read ``results_dir/<suite>/*.json``, write ``report.md``, ``report.csv`` and the plots
    into ``out_dir`` (default ``results_dir/<suite>/report/``) and return the :class:`Report`.

    ``suite=None`` takes the only suite under ``results_dir`` (several: an error listing them).
    ``step_time_files``: the step-time microbenchmark results to show beside the cells (the
    adapters' ``benchmarks/results/step_time*.json``); none: the report says none was given.
    ``split="valid"`` scores every cell on its validation split instead (into ``report-valid/``
    by default): what a selection among settings may read.
    Raises :class:`ReportError` when there is nothing to report.
    """
    if split not in SPLITS:
        raise ReportError(
            f"unknown split {split!r}; valid: {choices_text(SPLITS)}." + did_you_mean(split, SPLITS)
        )
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportError(
            f"no results folder {results_dir}: nothing to report. Run a suite first, e.g. "
            "`pgm bench run quick`, or pass the folder that holds the suites' results."
        )
    suites = find_suites(results_dir)
    if suite is None:
        if len(suites) != 1:
            raise ReportError(
                f"{results_dir} holds {len(suites)} suites with results ({choices_text(suites)}); "
                "name one, e.g. `pgm bench report "
                f"{suites[0] if suites else 'quick'}`."
                + ("" if suites else " Run `pgm bench run quick` first.")
            )
        suite = suites[0]
    source = results_dir / suite
    if not source.is_dir() or not any(source.glob("*.json")):
        # a near name is most likely a typo of a suite that ran: report that one, not run this
        close = nearest(suite, suites, n=1)
        then = (
            f" Report it: `pgm bench report {close[0]}`."
            if close
            else f" Run `pgm bench run {suite}` first."
        )
        raise ReportError(
            f"no result records for suite {suite!r} in {source}; suites with results there: "
            f"{choices_text(suites)}.{did_you_mean(suite, suites)}{then}"
        )
    step_paths = [Path(p) for p in step_time_files or ()]
    absent = [str(p) for p in step_paths if not p.is_file()]
    if absent:
        raise ReportError(
            f"no step-time file {', '.join(absent)}: --step-times takes the microbenchmark "
            "results, e.g. adapters/*/benchmarks/results/step_time*.json."
        )
    records, problems = read_records(source, suite)
    if not records:
        raise ReportError(
            f"suite {suite!r}: none of the {len(problems)} result file(s) in {source} is usable:\n"
            + "\n".join(f"  {p.text()}" for p in problems)
        )
    cells = _cells(records, split)
    if cells["n_test"].isna().any():
        raise ReportError(
            f"suite {suite!r}: {int(cells['n_test'].isna().sum())} record(s) do not say how many "
            f"{split} rows they scored (sizes.{split}), which the paired t-test needs; report "
            "them on --split test."
        )
    notes: list[str] = []
    for (ds, proto), g in cells.groupby(["dataset", "protocol"]):
        for col in ("primary", "higher_is_better", "task"):
            if g[col].nunique() > 1:
                notes.append(
                    f"{ds}/{proto}: the records disagree on {col} ({sorted(map(str, set(g[col])))}"
                    f"); the most common one is used"
                )
    markdown, table, comps, notes = _build(suite, source, cells, problems, notes, step_paths)
    out = (
        Path(out_dir)
        if out_dir is not None
        else source / ("report" if split == "test" else f"report-{split}")
    )
    if split != "test":
        markdown = markdown.replace(
            "\n\n", f"\n\n- scores: the **{split}** split of every cell (not test)\n", 1
        )
    report = Report(suite, source, out, markdown, table, cells, comps, problems, notes)
    if split == "test":
        report.aim = aim_rows(cells)
        if report.aim:
            report.markdown += "\n" + "\n".join(aim_markdown(report.aim))
    if plots:
        from pgm_plugins.bench.plots import (
            contribution_plots,
            parts_plots,
            share_plots,
            summary_plots,
        )

        report.plots = (
            summary_plots(cells, out, _arm_sort, split=split)
            + contribution_plots(contributions_table(cells), out, _arm_sort)
            + share_plots(cells, out, _arm_sort)
            + parts_plots(cells, out)
        )
        if report.plots:
            report.markdown += (
                "\n## Plots\n\n"
                + "\n".join(f"- ![{p.stem}]({p.name})" for p in report.plots)
                + "\n"
            )
    atomic_write_text(out / "report.md", report.markdown)
    atomic_write_text(out / "report.csv", table.to_csv(index=False))
    report.files = [out / "report.md", out / "report.csv", *report.plots]
    if report.aim:
        atomic_write_text(out / "aim.csv", aim_frame(report.aim).to_csv(index=False))
        report.files.append(out / "aim.csv")
    return report


def _where(report: Report, results_dir: Path) -> list[str]:
    """Where the report and plots are, and the commands that find them again."""
    from pgm_plugins.bench.results import default_results_dir

    same = Path(results_dir).resolve() == default_results_dir().resolve()
    root = "" if same else f" --results {shown_path(results_dir)}"
    lines = [f"Full report: {shown_path(report.out_dir / 'report.md')} (table: report.csv)"]
    if report.plots:
        lines.append(
            f"Plots in {shown_path(report.out_dir)}: " + ", ".join(p.name for p in report.plots)
        )
    lines.append(
        f"Again later: `pgm bench report {report.suite}{root}`; every suite and its cells: "
        f"`pgm bench list{root}`"
    )
    return lines


def main(
    suite: str | None,
    results_dir: Path,
    out_dir: Path | None = None,
    fmt: str = "markdown",
    step_times: Sequence[Path] = (),
    split: str = "test",
    *,
    conclude: bool = False,
) -> int:
    """``pgm bench report [SUITE]``: write the report(s) and print one as ``fmt`` (``markdown``,
    ``csv`` or ``none``) with the ``step_times`` microbenchmark files. ``suite=None`` reports
    every suite under ``results_dir``. ``conclude``: end with the :func:`verdict` and where
    the report and plots are (what ``pgm bench run`` prints last). Returns the
    exit code: 0 (skipped result files are listed in the report and on stderr), 2 when there
    was nothing to report (no folder, no suite, no usable record) or ``fmt`` is unknown."""
    if fmt not in FORMATS:
        print(
            f"pgm bench report: unknown format {fmt!r}; valid: {choices_text(FORMATS)}."
            + did_you_mean(fmt, FORMATS),
            file=sys.stderr,
        )
        return 2
    results_dir = Path(results_dir)
    names = [suite] if suite is not None else find_suites(results_dir)
    if not names:
        print(
            f"pgm bench report: no results under {results_dir} (no suite folder with *.json "
            "records). Run `pgm bench run quick` first.",
            file=sys.stderr,
        )
        return 2
    failed: list[str] = []
    for name in names:
        target = out_dir if out_dir is None or len(names) == 1 else Path(out_dir) / name
        try:
            report = build_report(
                results_dir, name, target, step_time_files=step_times, split=split
            )
        except ReportError as exc:
            print(f"pgm bench report: {exc}", file=sys.stderr)
            if suite is not None:
                return 2
            failed.append(name)  # a folder of other JSON: report the other suites
            continue
        if fmt == "markdown":
            print(report.markdown)
        elif fmt == "csv":
            print(report.table.to_csv(index=False), end="")
        for p in report.problems:
            print(f"warning: skipped {p.text()}", file=sys.stderr)
        print(
            f"report of suite {name!r}: {len(report.cells)} cells, {len(report.problems)} "
            f"skipped; wrote " + ", ".join(str(f) for f in report.files),
            file=sys.stderr,
            flush=True,
        )
        if conclude:
            print("\n".join(["", *verdict(report), *_where(report, results_dir)]), flush=True)
    if failed:
        print(
            f"pgm bench report: {len(failed)} of {len(names)} folder(s) under {results_dir} had "
            f"nothing to report ({', '.join(failed)}); the others were reported.",
            file=sys.stderr,
        )
    return 2 if len(failed) == len(names) else 0
