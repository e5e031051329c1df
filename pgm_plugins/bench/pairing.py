"""Pair two arms' cells on (fold, seed) and compare them: the one comparison every table of the
report (:mod:`pgm_plugins.bench.report`) and its methods comparison
(:mod:`pgm_plugins.bench.alternatives`) make.

The test follows the rows the paired cells trained on (:func:`test_kind`): the plain paired t
over seeds for one fixed split, the corrected resampled t (Nadeau & Bengio, 2003) where the
cells trained on different but overlapping rows (several folds), and the plain paired t again
for data drawn fresh and independent per seed (synthetic). The statistics: :func:`compare`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pgm_plugins.bench.record import provenance_flags
from pgm_plugins.bench.stats import compare

__all__ = [
    "cell_provenance",
    "fold_means_p",
    "pair",
    "paired_cells",
    "paired_comparison",
    "test_kind",
]


def pair(a: pd.DataFrame, b: pd.DataFrame, col: str) -> tuple[pd.DataFrame, int, int]:
    """Cells of ``a`` and ``b`` matched on (fold, seed); counts of unmatched cells of each.
    A cell whose ``col`` is NaN or infinite has no value to pair and is left out."""
    cols = ["fold", "seed", col, "n_train", "n_test", "train_digest", "independent_seeds"]
    left = a[[c for c in cols if c in a]]
    left = left[np.isfinite(left[col].astype(float))]
    right = b[["fold", "seed", col]]
    right = right[np.isfinite(right[col].astype(float))]
    merged = left.merge(right, on=["fold", "seed"], suffixes=("_arm", "_ref"))
    return merged, len(left) - len(merged), len(right) - len(merged)


def paired_cells(a: pd.DataFrame, b: pd.DataFrame, merged: pd.DataFrame) -> pd.DataFrame:
    """The cells of both arms that a comparison pairs (``merged``: :func:`pair`'s)."""
    keys = merged[["fold", "seed"]]
    return pd.concat([x.merge(keys, on=["fold", "seed"]) for x in (a, b)], ignore_index=True)


def cell_provenance(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """:func:`~pgm_plugins.bench.record.provenance` of each cell, from the cell table."""
    return [
        {
            "commit": c if isinstance(c, str) else None,
            "dirty": bool(d) if isinstance(d, bool) else None,
            "scheme": int(s),
            "device": dev if isinstance(dev, str) else "cpu",
            "precision": prec if isinstance(prec, str) else "fp32",
            "cpu": cpu if isinstance(cpu, str) else None,
        }
        for c, d, s, dev, prec, cpu in zip(
            cells["commit"],
            cells["dirty"],
            cells["digest_scheme"],
            cells["device"],
            cells["precision"],
            cells["cpu"],
            strict=True,
        )
    ]


def test_kind(merged: pd.DataFrame) -> str:
    """``"paired"`` (plain paired t) when the paired cells share one training set (a fixed
    split over seeds: one ``train_digest``) or the data set draws fresh, independent rows per
    seed (``independent_seeds``); ``"corrected"`` (Nadeau & Bengio) otherwise: their training
    sets overlap. Records without a ``train_digest`` (older) fall back to counting folds."""
    if "train_digest" not in merged or merged["train_digest"].isna().any():
        return "corrected" if merged["fold"].nunique() > 1 else "paired-by-folds"
    if merged["train_digest"].nunique() == 1:
        return "paired"
    if "independent_seeds" in merged and bool(merged["independent_seeds"].all()):
        return "independent"
    return "corrected"


test_kind.__test__ = False  # type: ignore[attr-defined]  # a function named test_*, not a test


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, col: str, higher: bool) -> dict[str, Any]:
    """``a - b`` on the cell column ``col``, paired over (fold, seed): ``n`` paired cells,
    ``unpaired_arm`` / ``unpaired_ref`` (cells without a partner), the ``test`` used (:func:`
    test_kind`; "" under two cells), ``ratio`` (n_test / n_train under the corrected test, else
    0), ``diff``, ``low`` / ``high`` (95 %), ``p``, ``wins`` (cells where ``a`` is better: higher
    when ``higher``), ``varies`` (False: the differences do not vary, no test), ``detectable``
    (the smallest difference this many cells detect with 80 % power at alpha 0.05, two-sided,
    before any correction for multiple comparisons) and ``provenance`` (the flags of the paired
    cells' code). NaN where fewer than two cells pair."""
    merged, only_a, only_b = pair(a, b, col)
    nan = math.nan
    out: dict[str, Any] = {
        "n": len(merged),
        "unpaired_arm": only_a,
        "unpaired_ref": only_b,
        "test": "",
        "ratio": nan,
        "diff": nan,
        "low": nan,
        "high": nan,
        "p": nan,
        "wins": nan,
        "varies": nan,
        "detectable": nan,
        "provenance": "; ".join(provenance_flags(cell_provenance(paired_cells(a, b, merged)))),
    }
    if len(merged) < 2:
        return out
    kind = test_kind(merged)
    ratio = float((merged["n_test"] / merged["n_train"]).mean()) if kind == "corrected" else 0.0
    c = compare(merged[f"{col}_arm"].to_numpy(), merged[f"{col}_ref"].to_numpy(), ratio, higher)
    out.update(
        test=kind,
        ratio=ratio,
        diff=c.mean,
        low=c.low,
        high=c.high,
        p=c.p,
        wins=c.wins,
        varies=c.varies,
        detectable=c.detectable,
    )
    return out


def fold_means_p(a: pd.DataFrame, b: pd.DataFrame, col: str, higher: bool) -> float:
    """A sensitivity check of :func:`paired_comparison` where seeds repeat on the same folds:
    the seeds' scores averaged per fold first, then the same corrected test over the folds
    (J = folds). Seeds retrained on one split share its training and test rows, so they are
    not the independent resamples the correction assumes; the fold means are. NaN unless the
    comparison is the corrected one over at least two folds with a fold holding several seeds.
    """
    merged, _, _ = pair(a, b, col)
    if len(merged) < 2 or test_kind(merged) != "corrected":
        return math.nan
    by_fold = merged.groupby("fold")
    if merged["fold"].nunique() < 2 or int(by_fold.size().max()) < 2:
        return math.nan
    means = by_fold[[f"{col}_arm", f"{col}_ref", "n_test", "n_train"]].mean()
    ratio = float((means["n_test"] / means["n_train"]).mean())
    c = compare(means[f"{col}_arm"].to_numpy(), means[f"{col}_ref"].to_numpy(), ratio, higher)
    return c.p
