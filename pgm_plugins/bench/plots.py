"""PNG plots of a benchmark report (matplotlib's Agg canvas; pyplot and its global state are not
touched): per data set the primary metric of every arm with its 95 % interval (the summary plot),
per host the measured contributions (each modality's Shapley value, its encoder's probe, the
block's uni / paired parts), the learned uni share per modality (arms whose shares are learned,
not set), and a 2-D projection (PCA) of the uni and paired parts per
modality, coloured by part with one marker per label (the paper's figure).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgm_plugins._io import atomic_write_bytes

__all__ = [
    "contribution_plots",
    "contributions_figure",
    "mean_interval",
    "parts_figure",
    "parts_plots",
    "pca_2d",
    "share_plots",
    "shares_figure",
    "summary_figure",
    "summary_plots",
]

_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")
_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">")
_PART_COLOURS = {"uni": "tab:blue", "paired": "tab:orange"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` projected on their first two principal axes (centred SVD), and the share
    of variance each axis explains. Fewer than two axes: zero columns fill the rest."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    proj = np.zeros((len(x), 2))
    proj[:, :k] = centred @ vt[:k].T
    var = s**2
    explained = np.zeros(2)
    if var.sum() > 0:
        explained[:k] = var[:k] / var.sum()
    return proj, explained


def _labels(y: Sequence[Any]) -> tuple[np.ndarray, str]:
    arr = np.asarray(y)
    if arr.dtype.kind == "f" and not np.all(np.equal(np.mod(arr, 1), 0)):
        return (arr >= 0).astype(int), "label sign (<0 / >=0)"
    return arr.astype(int), "label"


def shares_figure(
    panels: Mapping[str, pd.DataFrame], title: str, truth: Mapping[str, float] | None = None
) -> Any:
    """Box + strip plots, one panel per arm: each frame has columns ``host``, ``modality``,
    ``share`` (one row per cell and modality); ``truth`` adds the true uni share as a red bar
    per modality."""
    fig = _figure(4.2 * max(1, len(panels)), 3.6)
    for k, (arm, shares) in enumerate(panels.items()):
        ax = fig.add_subplot(1, max(1, len(panels)), k + 1)
        _share_axes(ax, shares, arm, truth)
    fig.suptitle(title, fontsize=9, y=1.03)
    return fig


def _share_axes(
    ax: Any, shares: pd.DataFrame, title: str, truth: Mapping[str, float] | None
) -> None:
    hosts = sorted(shares["host"].unique())
    mods = list(dict.fromkeys(shares["modality"]))
    width = 0.8 / max(1, len(hosts))
    rng = np.random.default_rng(0)
    for h, host in enumerate(hosts):
        pos, data = [], []
        for i, m in enumerate(mods):
            v = shares.loc[(shares["host"] == host) & (shares["modality"] == m), "share"]
            if len(v):
                pos.append(i - 0.4 + width * (h + 0.5))
                data.append(v.to_numpy())
        if not data:
            continue
        colour = f"C{h % 10}"
        ax.boxplot(
            data,
            positions=pos,
            widths=width * 0.8,
            patch_artist=True,
            boxprops={"facecolor": colour, "alpha": 0.3},
            medianprops={"color": colour},
            showfliers=False,
        )
        for p, d in zip(pos, data, strict=True):
            jitter = rng.uniform(-width * 0.25, width * 0.25, len(d))
            ax.scatter(p + jitter, d, s=12, color=colour, zorder=3)
        ax.plot([], [], color=colour, marker="o", linestyle="", label=host)
    if truth:
        for i, m in enumerate(mods):
            if truth.get(m) is not None:
                ax.hlines(truth[m], i - 0.45, i + 0.45, colors="red", linestyles="--")
        ax.plot([], [], color="red", linestyle="--", label="true share")
    ax.set_xticks(range(len(mods)), mods)
    ax.set_xlim(-0.6, len(mods) - 0.4)
    ax.set_ylabel("learned uni share")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")


def parts_figure(parts: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    """One panel per modality: the uni and paired parts of the same test rows projected
    together on two principal axes, coloured by part, one marker per label. Where the two
    parts differ in width they cannot share axes: one panel per part."""
    panels: list[tuple[str, dict[str, np.ndarray], np.ndarray, str]] = []
    for m, p in parts.items():
        if not p or not len(p.get("uni") or []) or not len(p.get("y") or []):
            continue
        rows = len(p["uni"])
        uni = np.asarray(p["uni"], dtype=np.float64).reshape(rows, -1)
        paired = np.asarray(p.get("paired") or [], dtype=np.float64).reshape(rows, -1)
        y, what = _labels(p["y"])
        if paired.shape[1] == uni.shape[1]:
            proj, ev = pca_2d(np.concatenate([uni, paired]))
            pieces = {"uni": proj[:rows], "paired": proj[rows:]}
            panels.append((f"{m}: joint PCA ({ev[0]:.0%}, {ev[1]:.0%})", pieces, y, what))
        else:
            for part, x in (("uni", uni), ("paired", paired)):
                if x.shape[1]:
                    proj, ev = pca_2d(x)
                    panels.append(
                        (
                            f"{m}: {part} alone, width {x.shape[1]} ({ev[0]:.0%}, {ev[1]:.0%})",
                            {part: proj},
                            y,
                            what,
                        )
                    )
    fig = _figure(3.4 * max(1, len(panels)), 3.4)
    for i, (name, pieces, y, what) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        classes = sorted(set(y.tolist()))
        for part, xy in pieces.items():
            for c, label in enumerate(classes):
                rows_c = y == label
                ax.scatter(
                    xy[rows_c, 0],
                    xy[rows_c, 1],
                    s=10,
                    alpha=0.6,
                    color=_PART_COLOURS[part],
                    marker=_MARKERS[c % len(_MARKERS)],
                    label=f"{part}, {what} {label}",
                )
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9, y=1.03)
    return fig


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean of the finite ``values`` and its 95 % t interval (the interval is the mean
    itself for one value, NaN throughout for none)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    if len(v) == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return mean, mean - half, mean + half


def summary_figure(
    rows: Mapping[str, Sequence[tuple[str, Sequence[float]]]],
    metric: str,
    title: str,
    split: str = "test",
) -> Any:
    """One row per arm, one marker per host: the mean ``metric`` over the arm's cells with its
    95 % interval; ``rows`` maps a host to its ``(arm, values)`` in display order (top first).
    A dashed line marks each host's ``baseline`` mean."""
    arms = list(dict.fromkeys(a for entries in rows.values() for a, _ in entries))
    fig = _figure(6.4, 0.9 + 0.32 * max(1, len(arms)))
    ax = fig.add_subplot(1, 1, 1)
    hosts = list(rows)
    step = 0.6 / max(1, len(hosts))
    for h, host in enumerate(hosts):
        colour = f"C{h % 10}"
        offset = (h - (len(hosts) - 1) / 2) * step
        for arm, values in rows[host]:
            mean, low, high = mean_interval(values)
            if np.isnan(mean):
                continue
            y = arms.index(arm) + offset
            ax.errorbar(
                mean,
                y,
                xerr=[[mean - low], [high - mean]],
                fmt="o",
                color=colour,
                markersize=4,
                capsize=3,
            )
            if arm == "baseline":
                ax.axvline(mean, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
        ax.plot([], [], color=colour, marker="o", linestyle="", label=host)
    ax.set_yticks(range(len(arms)), arms)
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_xlabel(f"{split} {metric} (mean over cells, 95 % interval; dashed: baseline)")
    ax.grid(axis="x", alpha=0.3)
    if len(hosts) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="host")
    ax.set_title(title, fontsize=9)
    return fig


def summary_plots(
    cells: pd.DataFrame,
    out_dir: Path,
    order: Callable[[Iterable[str]], list[str]] = sorted,
    split: str = "test",
) -> list[Path]:
    """One PNG per (data set, protocol): the primary metric per arm and host with its 95 %
    interval over the cells that did not diverge (the ``only.<m>`` arms under their own host)."""
    written = []
    for (ds, proto), data in cells.groupby(["dataset", "protocol"], sort=True):
        primary = str(data["primary"].mode().iloc[0])
        col = f"test.{primary}"
        ok = data[~data["failed"]] if "failed" in data else data
        if col not in ok or ok.empty:
            continue
        rows = {
            str(host): [(arm, g.loc[g["arm"] == arm, col].tolist()) for arm in order(set(g["arm"]))]
            for host, g in ok.groupby("host", sort=True)
        }
        higher = bool(data["higher_is_better"].mode().iloc[0])
        fig = summary_figure(
            rows,
            primary,
            f"{ds} / {proto}: {split} {primary} per arm "
            f"({'higher' if higher else 'lower'} is better)",
            split,
        )
        written.append(_save(fig, out_dir / _name("summary", ds, proto)))
    return written


def _name(*parts: str) -> str:
    return "__".join(_SAFE.sub("-", p) for p in parts) + ".png"


#: the panels of a contributions figure: measure(s) -> the panel's axis label
_CONTRIBUTION_PANELS = {
    ("shapley",): "Shapley value of the modality",
    ("probe",): "linear probe on the site features",
    ("uni", "paired"): "part replaced by its mean: change",
    ("beta",): "mix beta: h + beta (h_hat - h)",
}


def contributions_figure(table: pd.DataFrame, arms: Sequence[str], title: str) -> Any:
    """One host's contributions (rows of ``report.contributions_table``): a panel per measure
    (Shapley values, probes, and the uni / paired parts where an arm has them), one group of
    bars per modality, one bar per arm (and part), the 95 % interval as an error bar."""
    panels = {k: v for k, v in _CONTRIBUTION_PANELS.items() if table["measure"].isin(k).any()}
    fig = _figure(4.4 * max(1, len(panels)), 3.6)
    mods = list(dict.fromkeys(table["modality"]))
    for k, (measures, label) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1)
        series = [
            (arm, measure)
            for arm in arms
            for measure in measures
            if ((table["arm"] == arm) & (table["measure"] == measure)).any()
        ]
        width = 0.8 / max(1, len(series))
        for j, (arm, measure) in enumerate(series):
            rows = table[(table["arm"] == arm) & (table["measure"] == measure)]
            got = {r.modality: r for r in rows.itertuples()}
            xs = [i - 0.4 + width * (j + 0.5) for i, m in enumerate(mods) if m in got]
            means = np.array([got[m].mean for m in mods if m in got])
            lo = np.array([got[m].lo for m in mods if m in got])
            hi = np.array([got[m].hi for m in mods if m in got])
            err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0)
            hatch = "//" if measure == "paired" else None
            name = arm if len(measures) == 1 else f"{arm} {measure}"
            ax.bar(xs, means, width * 0.9, yerr=err, capsize=2, label=name, hatch=hatch,
                   color=f"C{arms.index(arm) % 10}", alpha=0.8)  # fmt: skip
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xticks(range(len(mods)), mods)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9, y=1.03)
    return fig


def contribution_plots(
    table: pd.DataFrame, out_dir: Path, order: Callable[[Iterable[str]], list[str]] = sorted
) -> list[Path]:
    """One PNG per (data set, protocol, host) with contributions measured (``table``: the
    report's ``contributions_table``): Shapley values, probes and parts per modality and arm."""
    written = []
    for (ds, proto, host), g in table.groupby(["dataset", "protocol", "host"], sort=True):
        fig = contributions_figure(
            g,
            order(set(g["arm"])),
            f"{ds} / {proto} / {host}: contributions on test (mean, 95 % interval over cells)",
        )
        written.append(_save(fig, out_dir / _name("contributions", ds, proto, host)))
    return written


def _fixed(shares: Sequence[Mapping[str, float]]) -> bool:
    """Do ``shares`` (one mapping per cell) hold one value per modality: a set value (the
    fixed partitioners' ``rho``), not something learned?"""
    frame = pd.DataFrame(list(shares))
    return bool(len(frame) > 1 and (frame.std().fillna(0.0) < 1e-12).all())


def share_plots(
    cells: pd.DataFrame, out_dir: Path, order: Callable[[Iterable[str]], list[str]] = sorted
) -> list[Path]:
    """One PNG per (data set, protocol): the learned uni share per modality over cells, one
    panel per arm that has shares (in ``order``), one box per host. Arms whose shares are the
    same in every cell (a set ``rho``, not learned) are left out: the contributions plots
    measure what the parts do."""
    written = []
    for (ds, proto), data in cells.groupby(["dataset", "protocol"], sort=True):
        have = data[data["shares"].map(bool)]
        fixed = {a for a, g in have.groupby("arm") if _fixed(list(g["shares"]))}
        have = have[~have["arm"].isin(fixed)]
        if have.empty:
            continue
        panels = {}
        for arm in order(set(have["arm"])):
            rows = have[have["arm"] == arm]
            panels[f"{arm} ({len(rows)} cells)"] = pd.DataFrame(
                [
                    {"host": h, "modality": m, "share": float(v)}
                    for h, s in zip(rows["host"], rows["shares"], strict=True)
                    for m, v in s.items()
                ]
            )
        truth = next((t for t in have["truth"] if t), None)
        true_share = None
        if truth is not None:
            raw = truth.get("true_uni_share", truth)
            if isinstance(raw, Mapping):
                true_share = {m: float(v) for m, v in raw.items() if isinstance(v, int | float)}
        fig = shares_figure(panels, f"{ds} / {proto}: learned uni share (test data)", true_share)
        written.append(_save(fig, out_dir / _name("shares", ds, proto)))
    return written


def parts_plots(cells: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (data set, protocol, host): the parts of one cell (arm ``pgm`` where present,
    the first by seed and fold); parts of different cells live in different learned spaces, so
    they are not pooled."""
    written = []
    have = cells[cells["parts"].map(bool)]
    for (ds, proto, host), data in have.groupby(["dataset", "protocol", "host"], sort=True):
        arm = "pgm" if "pgm" in set(data["arm"]) else sorted(data["arm"])[0]
        cell = data[data["arm"] == arm].sort_values(["seed", "fold"]).iloc[0]
        fig = parts_figure(
            cell["parts"],
            f"{ds} / {proto} / {host} / {arm}: uni and paired parts, test rows "
            f"(seed {cell['seed']}, fold {cell['fold']})",
        )
        written.append(_save(fig, out_dir / _name("parts", ds, proto, host)))
    return written
