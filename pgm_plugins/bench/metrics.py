"""The benchmark's metrics and which way each one is better, written once.

The runner scores every cell with :func:`metrics_of` (the names of ``metrics`` in a record,
``docs/results.md``), the method benchmark with :func:`binary_metrics`, and the report reads
:data:`HIGHER_IS_BETTER` to decide what counts as a win. Regression on MMSA's sentiment scale
follows MMSA 2.2.1's ``MMSA/utils/metricsTop.py`` (:func:`mmsa_regression_metrics`, unrounded,
without sklearn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pgm_plugins.errors import UnknownNameError, choices_text, did_you_mean

if TYPE_CHECKING:
    from pgm_plugins.bench.data.bench_data import BenchData

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "MMSA_SCALES",
    "PERFECT",
    "auroc",
    "binary_metrics",
    "classification_metrics",
    "f1_scores",
    "metrics_of",
    "mmsa_regression_metrics",
    "plain_regression_metrics",
    "regression_metrics",
    "retrieval_scores",
    "weighted_f1",
]

#: whether a larger value is better, per metric name a record or a report can hold
HIGHER_IS_BETTER: dict[str, bool] = {
    "acc": True,  # share of rows whose predicted class is the label
    "acc2": True,  # MOSI's binary accuracy (a classification task scored on two classes)
    "wf1": True,  # F1 per class weighted by the class's support in the labels
    "macro_f1": True,  # unweighted mean of the per-class F1
    "auroc": True,  # area under the ROC curve (two classes)
    "f1_weighted": True,  # binary_metrics' name of wf1
    "f1_macro": True,  # binary_metrics' name of macro_f1
    "corr": True,  # Pearson correlation of predictions and targets
    "acc7": True,  # MMSA: rounded scores clipped to [-3, 3] equal the rounded truth
    "acc5": True,  # MMSA: the same on [-2, 2] (SIMS: its five bins)
    "acc3": True,  # SIMS: its three bins
    "acc2_has0": True,  # MMSA: score >= 0 is positive, every sample
    "acc2_non0": True,  # MMSA: score > 0 is positive, samples with a non-zero truth
    "f1_has0": True,  # weighted F1 of the acc2_has0 classes
    "f1_non0": True,  # weighted F1 of the acc2_non0 classes
    "f1": True,  # SIMS: weighted F1 of its two bins
    "mae": False,  # mean absolute error
    "mse": False,  # mean squared error
    "rmse": False,  # root mean squared error
    "loss": False,  # the training loss on the split (cross-entropy, L1 or MSE)
    "map": True,  # retrieval: mean of map_a2i and map_i2a
    "map_a2i": True,  # retrieval: mean average precision, audio queries over the images
    "map_i2a": True,  # retrieval: the same, image queries over the audio clips
    "p@1_a2i": True,  # retrieval: precision of the first hit, audio queries
    "p@10_a2i": True,  # retrieval: precision of the first ten hits, audio queries
    "p@1_i2a": True,  # retrieval: precision of the first hit, image queries
    "p@10_i2a": True,  # retrieval: precision of the first ten hits, image queries
}
#: retrieval directions as the retrieval benchmark names them -> their metric suffix
RETRIEVAL_DIRECTIONS = {"audio2image": "a2i", "image2audio": "i2a"}
#: metrics where smaller is better; any name not in :data:`HIGHER_IS_BETTER` counts as higher
LOWER_IS_BETTER = frozenset(m for m, higher in HIGHER_IS_BETTER.items() if not higher)
#: the best value each metric of :data:`HIGHER_IS_BETTER` can take (every one lies in [0, 1] or
#: is an error or loss >= 0): the room the report's methods comparison leaves above the best of
#: a host and its alternatives is their distance to this
PERFECT: dict[str, float] = {m: 1.0 if higher else 0.0 for m, higher in HIGHER_IS_BETTER.items()}
#: data sets whose sentiment scale :func:`mmsa_regression_metrics` knows
MMSA_SCALES = ("mosi", "mosei", "sims", "mosei_senti")


# ------------------------------------------------------------------------- classification
def _per_class_f1(
    y: np.ndarray, pred: np.ndarray, labels: Sequence[object] | np.ndarray
) -> tuple[list[float], list[float]]:
    """F1 (0 for a class nobody predicted and nobody is) and support in ``y`` per label."""
    f1, support = [], []
    for c in labels:
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        support.append(float((y == c).sum()))
    return f1, support


def f1_scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(weighted F1 over the classes of ``y``, macro F1 over the classes of ``y`` and ``pred``);
    (0, 0) for no rows."""
    y, pred = np.asarray(y), np.asarray(pred)
    f1, support = _per_class_f1(y, pred, np.union1d(y, pred))
    total = sum(support)
    weighted = sum(f * s for f, s in zip(f1, support, strict=True)) / total if total else 0.0
    return float(weighted), float(np.mean(f1)) if f1 else 0.0


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class weighted by the class's support in ``truth`` (sklearn's ``average=
    'weighted'``; a class with no predicted and no true sample scores 0); NaN for no rows."""
    return f1_scores(truth, pred)[0] if len(truth) else float("nan")


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for labels ``{0, 1}`` (mid-ranks for ties); NaN
    when one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification_metrics(
    y: np.ndarray, out: np.ndarray, primary: str = "acc"
) -> dict[str, float]:
    """acc, wf1, macro_f1 (+ auroc for 2 classes, + acc2 = acc when the primary is ``acc2``)
    and ``loss`` from class logits ``[N, C]`` (cross-entropy) or, for binary tasks, scores
    ``[N]`` read by their sign as MMSA does (loss: L1 to the +-1 labels, the hosts' own)."""
    y = np.asarray(y).astype(np.int64)
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 2:
        pred = out.argmax(1)
        z = out - out.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        loss = float(-logp[np.arange(len(y)), y].mean())
        score = np.exp(logp[:, 1]) if out.shape[1] == 2 else None
    else:
        pred = (out > 0).astype(np.int64)
        loss = float(np.abs(out - (2 * y - 1)).mean())
        score = out
    wf1, macro = f1_scores(y, pred)
    metrics = {"acc": float((pred == y).mean()), "wf1": wf1, "macro_f1": macro}
    if score is not None and set(np.unique(y)) <= {0, 1}:
        metrics["auroc"] = auroc(y, score)
    if primary == "acc2":
        metrics["acc2"] = metrics["acc"]
    metrics["loss"] = loss
    return metrics


def binary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, weighted and macro F1 (both over the classes 0 and 1, whether present or not)
    and AUROC from labels ``{0, 1}`` and P(y = 1)."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(prob) >= 0.5).astype(int)
    f1, support = _per_class_f1(y, pred, (0, 1))
    total = sum(support) or 1.0
    return {
        "acc": float((pred == y).mean()),
        "f1_weighted": float(sum(f * w for f, w in zip(f1, support, strict=True)) / total),
        "f1_macro": float(np.mean(f1)),
        "auroc": auroc(y, prob),
    }


# ----------------------------------------------------------------------------- regression
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mmsa_regression_metrics(
    pred: np.ndarray, truth: np.ndarray, dataset: str = "mosi"
) -> dict[str, float]:
    """MMSA's regression metrics (``MMSA/utils/metricsTop.py``), unrounded.

    MOSI / MOSEI: ``mae``, ``corr``, ``acc7`` / ``acc5`` (rounded scores clipped to [-3, 3] /
    [-2, 2]), ``acc2_has0`` / ``f1_has0`` (``>= 0`` is positive, every sample) and
    ``acc2_non0`` / ``f1_non0`` (``> 0``, samples with a non-zero truth). SIMS (scores in
    [-1, 1], clipped): ``mae``, ``corr``, ``acc2`` / ``acc3`` / ``acc5`` on MMSA's bins and
    ``f1`` (weighted, 2 classes).
    """
    if dataset not in MMSA_SCALES:
        raise UnknownNameError(
            f"unknown data set for metrics {dataset!r}; valid: {choices_text(MMSA_SCALES)}."
            + did_you_mean(dataset, MMSA_SCALES)
        )
    p_in, t_in = np.asarray(pred).reshape(-1), np.asarray(truth).reshape(-1)
    if p_in.shape != t_in.shape or not len(t_in):
        raise ValueError(
            f"predictions {p_in.shape} and truths {t_in.shape} must be equal, non-empty."
        )
    if dataset == "sims":
        return _sims_metrics(p_in, t_in)
    p, t = p_in.astype(np.float64), t_in.astype(np.float64)
    nz = t != 0
    return {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _corr(p, t),
        "acc7": float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2)))),
        "acc2_has0": float(np.mean((p >= 0) == (t >= 0))),
        "f1_has0": weighted_f1(t >= 0, p >= 0),
        "acc2_non0": float(np.mean((p[nz] > 0) == (t[nz] > 0))) if nz.any() else float("nan"),
        "f1_non0": weighted_f1(t[nz] > 0, p[nz] > 0) if nz.any() else float("nan"),
    }


def _sims_metrics(p_in: np.ndarray, t_in: np.ndarray) -> dict[str, float]:
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


def regression_metrics(y: np.ndarray, out: np.ndarray, dataset: str = "mosi") -> dict[str, float]:
    """:func:`mmsa_regression_metrics` on ``dataset``'s scale (MOSI / MOSEI mae, corr, acc7,
    both acc2 conventions and F1; SIMS its own bins) and ``loss`` (MSE)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    metrics = mmsa_regression_metrics(out, y, dataset)
    metrics["loss"] = float(((out - y) ** 2).mean())
    return metrics


def plain_regression_metrics(y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """mae, corr (Pearson; NaN for constant predictions) and ``loss`` (MSE) for a regression
    data set of no known scale (a generic ``.npz``): no sentiment bins, no clipping."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    sd = out.std() * y.std()
    corr = float(((out - out.mean()) * (y - y.mean())).mean() / sd) if sd > 0 else float("nan")
    return {
        "mae": float(np.abs(out - y).mean()),
        "corr": corr,
        "loss": float(((out - y) ** 2).mean()),
    }


def metrics_of(data: BenchData, rows: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """The test (or validation) metrics of ``data``'s ``rows`` given the model's ``out``:
    classification, MMSA's scale when ``data.extras`` names one (``metric_dataset``), else
    plain regression."""
    if data.task == "classification":
        return classification_metrics(data.y[rows], out, data.primary)
    if "metric_dataset" in data.extras:  # MMSA's scale: its bins, Acc-7, both Acc-2
        return regression_metrics(data.y[rows], out, data.extras["metric_dataset"])
    return plain_regression_metrics(data.y[rows], out)


# ------------------------------------------------------------------------------ retrieval
def retrieval_scores(both: dict[str, dict[str, float]]) -> dict[str, float]:
    """One flat ``{metric: value}`` from the retrieval metrics of both directions
    (``{"audio2image": {"map": ..., "p@1": ...}, "image2audio": {...}}``): ``map_a2i``,
    ``p@1_i2a``, ... and ``map``, the mean of the two directions' mAP (the primary metric)."""
    out: dict[str, float] = {}
    for direction, suffix in RETRIEVAL_DIRECTIONS.items():
        for name, value in both[direction].items():
            out[f"{name}_{suffix}"] = float(value)
    out["map"] = 0.5 * (out["map_a2i"] + out["map_i2a"])
    return out
