"""Statistics for arm comparisons: paired t over seeds, the corrected resampled t-test
(Nadeau & Bengio, 2003) for repeated cross-validation, the smallest detectable difference,
Holm's correction and a rank correlation. The t distribution comes from scipy (the metrics
themselves: :mod:`pgm_plugins.bench.metrics`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare", "holm", "rank_correlation"]


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


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman correlation (NaN for fewer than two points)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)
