"""The metrics MMSA reports (``MMSA/utils/metricsTop.py``), without sklearn.

- :func:`weighted_f1`: sklearn's ``average='weighted'`` F1.
- :func:`regression_metrics`: MAE, Corr, Acc-7, Acc-5, Acc-2 (has-0 and non-0) and their
  weighted F1 as MMSA's ``MetricsTop`` computes them (SIMS: its own bins).

The readers of the feature files these metrics go with live in
:mod:`pgm_plugins.bench.data.pickles` (MMSA / MulT pickles) and
:mod:`pgm_plugins.bench.data.npz`.
"""

from __future__ import annotations

import numpy as np

from pgm_plugins.bench.data.pickles import MMSA_DATASETS, MULT_DATASETS, check_name

__all__ = ["regression_metrics", "weighted_f1"]


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class weighted by the class's support in ``truth`` (sklearn's ``average=
    'weighted'``; a class with no predicted and no true sample scores 0)."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    total = 0.0
    for c in np.unique(truth):
        tp = float(np.sum((pred == c) & (truth == c)))
        fp = float(np.sum((pred == c) & (truth != c)))
        fn = float(np.sum((pred != c) & (truth == c)))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        total += f1 * float(np.sum(truth == c))
    return total / len(truth) if len(truth) else float("nan")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(
    pred: np.ndarray, truth: np.ndarray, dataset: str = "mosi"
) -> dict[str, float]:
    """MMSA's regression metrics (``MMSA/utils/metricsTop.py``), unrounded.

    MOSI / MOSEI: ``mae``, ``corr``, ``acc7`` / ``acc5`` (rounded scores clipped to [-3, 3] /
    [-2, 2]), ``acc2_has0`` / ``f1_has0`` (``>= 0`` is positive, every sample) and
    ``acc2_non0`` / ``f1_non0`` (``> 0``, samples with a non-zero truth). SIMS (scores in
    [-1, 1], clipped): ``mae``, ``corr``, ``acc2`` / ``acc3`` / ``acc5`` on MMSA's bins and
    ``f1`` (weighted, 2 classes).
    """
    check_name("data set for metrics", dataset, (*MMSA_DATASETS, *MULT_DATASETS[:2]))
    p_in, t_in = np.asarray(pred).reshape(-1), np.asarray(truth).reshape(-1)
    if p_in.shape != t_in.shape or not len(t_in):
        raise ValueError(
            f"predictions {p_in.shape} and truths {t_in.shape} must be equal, non-empty."
        )
    p, t = p_in.astype(np.float64), t_in.astype(np.float64)
    if dataset == "sims":
        # binned in the inputs' own precision, as MMSA compares its float32 arrays with the
        # edges (0.1 in float32 is the edge 0.1, in float64 it would fall above it)
        dtype = np.result_type(p_in.dtype, t_in.dtype, np.float32)
        pc, tc = np.clip(p_in.astype(dtype), -1.0, 1.0), np.clip(t_in.astype(dtype), -1.0, 1.0)

        def bins(x: np.ndarray, edges: list[float]) -> np.ndarray:
            return np.searchsorted(np.asarray(edges[1:-1], dtype=x.dtype), x, side="left")

        b2, b3 = [-1.01, 0.0, 1.01], [-1.01, -0.1, 0.1, 1.01]
        b5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
        p, t = pc.astype(np.float64), tc.astype(np.float64)
        return {
            "mae": float(np.mean(np.abs(p - t))),
            "corr": _corr(p, t),
            "acc2": float(np.mean(bins(pc, b2) == bins(tc, b2))),
            "acc3": float(np.mean(bins(pc, b3) == bins(tc, b3))),
            "acc5": float(np.mean(bins(pc, b5) == bins(tc, b5))),
            "f1": weighted_f1(bins(tc, b2), bins(pc, b2)),
        }
    nz = t != 0
    out = {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _corr(p, t),
        "acc7": float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2)))),
        "acc2_has0": float(np.mean((p >= 0) == (t >= 0))),
        "f1_has0": weighted_f1(t >= 0, p >= 0),
        "acc2_non0": float(np.mean((p[nz] > 0) == (t[nz] > 0))) if nz.any() else float("nan"),
        "f1_non0": weighted_f1(t[nz] > 0, p[nz] > 0) if nz.any() else float("nan"),
    }
    return out
