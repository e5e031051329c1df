"""Statistics for arm comparisons: paired t over seeds, the corrected resampled t-test
(Nadeau & Bengio, 2003) for repeated cross-validation, the smallest detectable difference, and
classification metrics. The t distribution comes from scipy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "binary_metrics", "compare", "holm", "rank_correlation"]


@dataclass
class Comparison:
    mean: float  #: mean difference (arm - reference)
    low: float  #: 95 % interval
    high: float
    p: float  #: two-sided p value
    n: int  #: number of paired cells
    wins: int  #: cells where the arm is better (higher, or lower for a lower-is-better metric)
    detectable: float  #: smallest difference detectable with 80 % power at alpha 0.05

    def text(self, digits: int = 3) -> str:
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
            f"p={self.p:.3f} ({self.wins}/{self.n})"
        )


def compare(
    a: Sequence[float],
    b: Sequence[float],
    test_train_ratio: float = 0.0,
    higher_is_better: bool = True,
) -> Comparison:
    """Paired comparison of ``a - b`` over matched cells.

    ``test_train_ratio = n_test / n_train`` > 0 applies the corrected resampled t-test for
    cells that share training data (repeated k-fold): the variance of the mean is
    ``(1 / J + n_test / n_train) * s^2`` instead of ``s^2 / J``. 0 gives the plain paired t-test
    (independent seeds). ``higher_is_better`` only decides what counts as a win.
    """
    if test_train_ratio < 0:
        raise ValueError(
            f"test_train_ratio must be >= 0 (n_test / n_train), got {test_train_ratio}."
        )
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 cells, got {n}.")
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    se = math.sqrt((1.0 / n + test_train_ratio) * var)
    df = n - 1
    crit = float(stats.t.ppf(0.975, df))
    p = (1.0 if mean == 0 else 0.0) if se == 0 else float(2 * stats.t.sf(abs(mean) / se, df))
    detect = (crit + float(stats.t.ppf(0.8, df))) * se
    wins = int((d > 0).sum() if higher_is_better else (d < 0).sum())
    return Comparison(mean, mean - crit * se, mean + crit * se, p, n, wins, detect)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (family-wise error), in the order given.

    The i-th smallest of m p values is multiplied by ``m - i`` (i from 0), made monotone by a
    running maximum and capped at 1. NaN entries are left NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def binary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, weighted and macro F1, AUROC from labels ``{0, 1}`` and P(y = 1)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(int)
    pred = (np.asarray(prob) >= 0.5).astype(int)
    acc = float((pred == y).mean())
    f1s, weights = [], []
    for c in (0, 1):
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        weights.append(float((y == c).sum()))
    total = sum(weights) or 1.0
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos and neg:
        ranks = rankdata(prob)
        auroc = float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))
    else:
        auroc = float("nan")
    return {
        "acc": acc,
        "f1_weighted": float(sum(f * w for f, w in zip(f1s, weights, strict=True)) / total),
        "f1_macro": float(np.mean(f1s)),
        "auroc": auroc,
    }


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman correlation (NaN for fewer than two points)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)
