"""Held-out probes: how much of a target a set of features carries (R^2 on held-out rows), and
the closed-form ridge fit the bench's encoder probes use (``contributions.py``).

A linear (ridge) probe and a small MLP probe, fitted on one part of the rows and scored on another;
the synthetic data's tests use them to show which factors predict only jointly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mlp_r2", "ridge_fit", "ridge_r2"]


def ridge_fit(
    fit_x: np.ndarray, fit_y: np.ndarray, alpha: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """A ridge regression fitted in closed form (features standardised on the fit rows, the
    intercept not penalised): the function that predicts ``y`` for new rows."""
    mu, sd = fit_x.mean(0), fit_x.std(0) + 1e-8
    a = np.c_[(fit_x - mu) / sd, np.ones(len(fit_x))]
    reg = alpha * np.eye(a.shape[1])
    reg[-1, -1] = 0
    w = np.linalg.solve(a.T @ a + reg, a.T @ fit_y)

    def predict(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.c_[(x - mu) / sd, np.ones(len(x))] @ w
        return out

    return predict


def ridge_r2(
    fit_x: np.ndarray, fit_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, alpha: float = 1.0
) -> float:
    """Held-out R^2 of a ridge regression (features standardised on the fit set)."""
    resid = eval_y - ridge_fit(fit_x, fit_y, alpha)(eval_x)
    return float(1 - (resid**2).sum() / ((eval_y - eval_y.mean(0)) ** 2).sum())


def mlp_r2(
    fit_x: np.ndarray, fit_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, seed: int = 0
) -> float:
    """Held-out R^2 of a small MLP probe (one hidden layer of 32, 300 full-batch Adam steps)."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = fit_x.mean(0), fit_x.std(0) + 1e-8
    xf = torch.tensor((fit_x - mu) / sd, dtype=torch.float32)
    xe = torch.tensor((eval_x - mu) / sd, dtype=torch.float32)
    yf = torch.tensor(fit_y, dtype=torch.float32).reshape(len(fit_y), -1)
    ye = torch.tensor(eval_y, dtype=torch.float32).reshape(len(eval_y), -1)
    net = torch.nn.Sequential(
        torch.nn.Linear(xf.shape[1], 32), torch.nn.GELU(), torch.nn.Linear(32, yf.shape[1])
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        loss = F.mse_loss(net(xf), yf)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        resid = ye - net(xe)
    return float(1 - (resid**2).sum() / ((ye - ye.mean(0)) ** 2).sum())
