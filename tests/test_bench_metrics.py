"""The benchmark's metrics (``pgm_plugins.bench.metrics``): MMSA's regression metrics against
MMSA 2.2.1's own ``MetricsTop``, weighted F1 against sklearn, and one direction per metric."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pgm_plugins.bench import metrics
from pgm_plugins.bench.metrics import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    binary_metrics,
    classification_metrics,
    f1_scores,
    mmsa_regression_metrics,
    plain_regression_metrics,
    regression_metrics,
    weighted_f1,
)
from pgm_plugins.errors import UnknownNameError

torch.set_num_threads(1)


def test_regression_metrics_match_mmsas_metricstop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from MMSA.utils.metricsTop import MetricsTop

    rng = np.random.default_rng(3)
    names = {
        "Has0_acc_2": "acc2_has0",
        "Has0_F1_score": "f1_has0",
        "Non0_acc_2": "acc2_non0",
        "Non0_F1_score": "f1_non0",
        "Mult_acc_5": "acc5",
        "Mult_acc_7": "acc7",
        "MAE": "mae",
        "Corr": "corr",
    }
    for trial in range(5):
        truth = np.round(rng.uniform(-3, 3, 200) * 2) / 2  # includes exact zeros
        pred = truth + rng.normal(0, 1 + trial, 200)
        ref = MetricsTop("regression").getMetics("MOSI")(
            torch.tensor(pred, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32)
        )
        ours = mmsa_regression_metrics(pred.astype(np.float32), truth.astype(np.float32), "mosi")
        assert (truth == 0).any()
        for theirs, mine in names.items():
            assert ours[mine] == pytest.approx(ref[theirs], abs=6e-5), (theirs, trial)
    sims_names = {"Mult_acc_2": "acc2", "Mult_acc_3": "acc3", "Mult_acc_5": "acc5"}
    sims_names |= {"F1_score": "f1", "MAE": "mae", "Corr": "corr"}
    truth = np.round(rng.uniform(-1, 1, 150), 1)
    pred = truth + rng.normal(0, 0.4, 150)
    ref = MetricsTop("regression").getMetics("SIMS")(
        torch.tensor(pred, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32)
    )
    ours = mmsa_regression_metrics(pred.astype(np.float32), truth.astype(np.float32), "sims")
    for theirs, mine in sims_names.items():
        assert ours[mine] == pytest.approx(ref[theirs], abs=6e-5), theirs


def test_weighted_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(4)
    for k in (2, 3, 5):
        t, p = rng.integers(0, k, 100), rng.integers(0, k, 100)
        p[p == k - 1] = 0  # a class that is never predicted
        assert weighted_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted"), abs=1e-12)


def test_every_metric_a_cell_reports_has_a_direction():
    rng = np.random.default_rng(5)
    y, logits = rng.integers(0, 2, 30), rng.normal(size=(30, 2))
    t, p = rng.normal(size=30), rng.normal(size=30)
    names = {
        *classification_metrics(y, logits, "acc2"),
        *binary_metrics(y, rng.random(30)),
        *regression_metrics(t, p, "mosi"),
        *regression_metrics(np.clip(t, -1, 1), np.clip(p, -1, 1), "sims"),
        *plain_regression_metrics(t, p),
    }
    assert names <= set(HIGHER_IS_BETTER), names - set(HIGHER_IS_BETTER)
    assert {"mae", "mse", "rmse", "loss"} == LOWER_IS_BETTER
    assert HIGHER_IS_BETTER["acc2"] and HIGHER_IS_BETTER["corr"] and not HIGHER_IS_BETTER["mae"]


def test_the_runner_and_the_report_read_the_one_direction_table():
    from pgm_plugins.bench import report, runner

    assert runner.LOWER_IS_BETTER is metrics.LOWER_IS_BETTER
    assert report.LOWER_IS_BETTER is metrics.LOWER_IS_BETTER
    assert runner.classification_metrics is metrics.classification_metrics
    assert runner.metrics_of is metrics.metrics_of


def test_f1_edge_cases_keep_their_conventions():
    # weighted F1 of no rows is NaN (MMSA's scale), the runner's pair is (0, 0)
    assert math.isnan(weighted_f1(np.array([]), np.array([])))
    assert f1_scores(np.array([], int), np.array([], int)) == (0.0, 0.0)
    # one class everywhere: macro over the classes present (runner) vs over 0 and 1 (binary)
    y = np.ones(4, int)
    assert f1_scores(y, y) == (1.0, 1.0)
    assert binary_metrics(y, np.full(4, 0.9))["f1_macro"] == 0.5
    assert math.isnan(binary_metrics(y, np.full(4, 0.9))["auroc"])
    # a class predicted but absent from the truth counts in macro F1, not in weighted F1
    assert f1_scores(np.array([0, 0, 1]), np.array([0, 2, 1])) == pytest.approx((7 / 9, 5 / 9))


def test_an_unknown_sentiment_scale_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"'mosii'; valid: .*'sims'.*Did you mean 'mosi'"):
        mmsa_regression_metrics(np.zeros(3), np.zeros(3), "mosii")
    with pytest.raises(ValueError, match=r"must be equal, non-empty"):
        mmsa_regression_metrics(np.zeros(3), np.zeros(2))
