"""Statistics for arm comparisons: paired t over seeds, the corrected resampled t-test
(Nadeau & Bengio, 2003) for repeated cross-validation, the smallest detectable difference,
Holm's correction and a rank correlation. The t distribution comes from scipy (the metrics
themselves: :mod:`pgm_plugins.bench.metrics`).

Paired differences that do not vary across cells (every cell moved by the same amount, up to
floating-point rounding: :data:`NEGLIGIBLE_SPREAD`) have no sampling distribution to test: the
comparison then carries the mean difference with ``varies=False`` and NaN for the interval and
p, and Holm's correction leaves it out of its family."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NEGLIGIBLE_SPREAD",
    "NO_VARIATION",
    "Comparison",
    "cells_to_detect",
    "compare",
    "detectable_at",
    "holm",
    "rank_correlation",
]

#: The spread (sample standard deviation) of the paired differences at or below which they count
#: as not varying, relative to the largest magnitude among the compared values: 8 float32 ulps
#: (8 * 2**-23, about 1e-6). The values reach the report through float32 model outputs and float64
#: arithmetic (means over test rows, a JSON round trip, the subtraction), so the same difference
#: written twice can disagree in its last float32 digits: ``[.81, .73] - [.815, .735]`` has a
#: spread of 1e-18 and a t-test p of 7e-15. A real metric moves in steps far coarser than this
#: (an accuracy on n test rows in steps of 1/n, 1e-5 for 100,000 rows), so nothing that varies
#: for real is called constant.
NEGLIGIBLE_SPREAD = 8 * 2.0**-23
#: what a report prints instead of an interval and p for differences that do not vary
NO_VARIATION = "no variation across cells"


@dataclass
class Comparison:
    mean: float  #: mean difference (arm - reference)
    low: float  #: 95 % interval (NaN when the differences do not vary)
    high: float
    p: float  #: two-sided p value (NaN when the differences do not vary)
    n: int  #: number of paired cells
    wins: int  #: cells where the arm is better (higher, or lower for a lower-is-better metric)
    detectable: float  #: smallest difference detectable with 80 % power at alpha 0.05 (or NaN)
    varies: bool = True  #: False: the differences are equal up to rounding (no test possible)

    def text(self, digits: int = 3) -> str:
        if not self.varies:
            return f"{self.mean:+.{digits}f} {NO_VARIATION} ({self.wins}/{self.n})"
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

    Differences whose spread is at most :data:`NEGLIGIBLE_SPREAD` times the largest magnitude
    among ``a`` and ``b`` do not vary: the result has ``varies=False`` and NaN interval, p and
    detectable difference. Raises ``ValueError`` for fewer than two cells, inputs of different
    lengths or a value that is not finite (drop those cells before pairing).
    """
    if test_train_ratio < 0:
        raise ValueError(
            f"test_train_ratio must be >= 0 (n_test / n_train), got {test_train_ratio}."
        )
    from scipy import stats

    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"a paired comparison needs two flat sequences of one length, got {len(x)} and "
            f"{len(y)} values."
        )
    n = len(x)
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 cells, got {n}.")
    bad = int((~np.isfinite(x)).sum() + (~np.isfinite(y)).sum())
    if bad:
        raise ValueError(
            f"a paired comparison needs finite values; {bad} of the {2 * n} given are NaN or "
            "infinite (leave those cells out before pairing)."
        )
    d = x - y
    mean = float(d.mean())
    wins = int((d > 0).sum() if higher_is_better else (d < 0).sum())
    var = float(d.var(ddof=1))
    scale = float(max(np.abs(x).max(), np.abs(y).max()))
    if math.sqrt(var) <= NEGLIGIBLE_SPREAD * scale:
        nan = float("nan")
        return Comparison(mean, nan, nan, nan, n, wins, nan, varies=False)
    se = math.sqrt((1.0 / n + test_train_ratio) * var)
    df = n - 1
    crit = float(stats.t.ppf(0.975, df))
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    detect = _power_multiplier(df) * se
    return Comparison(mean, mean - crit * se, mean + crit * se, p, n, wins, detect)


def detectable_at(
    detectable: float,
    n: int,
    alpha: float,
    power: float = 0.8,
    *,
    cells: float | None = None,
    ratio: float = 0.0,
) -> float:
    """:func:`compare`'s ``detectable`` difference (alpha 0.05 two-sided, 80 % power, ``n``
    paired cells) at another two-sided ``alpha`` and ``power``: e.g. Holm's strictest step,
    ``0.05 / k`` for ``k`` comparisons. With ``cells``, the same for that many cells of the same
    spread and ``ratio`` (``n_test / n_train`` of the corrected test, 0 for the plain paired t;
    ``math.inf``: unlimited cells, where the corrected test keeps ``sqrt(ratio)`` of the spread:
    more seeds of the same folds cannot go below it). NaN stays NaN, as does ``n`` or ``cells``
    under 2."""
    if math.isnan(detectable) or n < 2 or (cells is not None and cells < 2):
        return math.nan
    if cells is None:
        return detectable * _power_multiplier(n - 1, alpha, power) / _power_multiplier(n - 1)
    spread = detectable / (_power_multiplier(n - 1) * math.sqrt(1.0 / n + ratio))
    if math.isinf(cells):
        from scipy import stats

        z = float(stats.norm.ppf(1.0 - alpha / 2.0)) + float(stats.norm.ppf(power))
        return spread * math.sqrt(ratio) * z
    df = int(cells) - 1
    return spread * math.sqrt(1.0 / cells + ratio) * _power_multiplier(df, alpha, power)


def cells_to_detect(
    detectable: float, n: int, target: float, alpha: float, ratio: float = 0.0, most: int = 10**6
) -> int | None:
    """The fewest paired cells (of the spread and ``ratio`` that ``n`` cells gave
    ``detectable``, see :func:`detectable_at`) whose detectable difference at ``alpha`` is at
    most ``target``; ``None`` where no number up to ``most`` reaches it (under the corrected
    test, the floor ``sqrt(ratio)`` of the spread may lie above it), or the inputs are NaN."""
    if math.isnan(detectable) or math.isnan(target) or n < 2:
        return None
    if detectable_at(detectable, n, alpha, cells=most, ratio=ratio) > target:
        return None
    low, high = 2, most  # the detectable difference falls as cells grow
    while low < high:
        mid = (low + high) // 2
        if detectable_at(detectable, n, alpha, cells=mid, ratio=ratio) <= target:
            high = mid
        else:
            low = mid + 1
    return low


def _power_multiplier(df: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """How many standard errors a difference must span to be detected with ``power`` by a
    two-sided t-test at ``alpha`` on ``df`` degrees of freedom: ``t_(1-alpha/2) + t_power``."""
    from scipy import stats

    return float(stats.t.ppf(1.0 - alpha / 2.0, df)) + float(stats.t.ppf(power, df))


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
    """Spearman correlation (NaN for fewer than two points, or where either side is constant
    or not finite: no ranking to correlate)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)
