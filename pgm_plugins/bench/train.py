"""Train one cell (arm x seed x fold) of the method study and return its result record.

The host and the arm's block are built from the same seed (host first, so every arm starts from
the same host weights), trained with AdamW over the handle's optimizer groups, gradient clipping,
early stopping on the validation loss with a hard epoch cap; the weights of the best validation
epoch are restored before the test metrics are taken.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgm_plugins.bench.arms import Arm, count_parameters
from pgm_plugins.bench.hosts import LateFusionHost, host_sites
from pgm_plugins.bench.metrics import binary_metrics

__all__ = ["Split", "TrainSpec", "run_cell"]

Split = tuple[dict[str, Tensor], Tensor]


@dataclass
class TrainSpec:
    """The recipe shared by every arm (the same optimizer and schedule for all)."""

    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch: int = 100
    max_epochs: int = 60
    patience: int = 10
    clip: float = 1.0
    hidden: int = 32
    dropout: float = 0.0


def _evaluate(model: torch.nn.Module, split: Split) -> tuple[float, dict[str, float], Tensor]:
    x, y = split
    model.eval()
    with torch.no_grad():
        logits = model(**x)
    loss = float(F.cross_entropy(logits, y))
    prob = torch.softmax(logits, -1)[:, 1].numpy()
    return loss, binary_metrics(y.numpy(), prob), logits


def run_cell(
    arm: Arm,
    data: Mapping[str, Split],
    seed: int,
    spec: TrainSpec,
    block_config: Mapping[str, Any],
    probe: Any = None,
) -> dict[str, Any]:
    """Train ``arm`` on ``data['train']``, select on ``data['valid']``, score ``data['test']``.

    ``probe(handle, model) -> dict`` (optional) runs after training with the best weights, for
    what the cell should also record (probes of the parts, shares on held-out data).
    """
    import pgm_plugins as pp

    start = time.perf_counter()
    widths = {m: t.shape[-1] for m, t in data["train"][0].items()}
    torch.manual_seed(seed)
    model = LateFusionHost(widths, spec.hidden, 2, spec.dropout)
    host_params = count_parameters(model)
    handle = None
    factory = arm.factory()
    config = {"task": "classification", "num_classes": 2, **block_config}
    if factory is not None:
        handle = pp.inject(model, sites=host_sites(model), config=config, block_factory=factory)
        groups = handle.param_groups(base_lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        groups = [
            {"params": list(model.parameters()), "lr": spec.lr, "weight_decay": spec.weight_decay}
        ]
    block_params = count_parameters(model) - host_params
    opt = torch.optim.AdamW(groups)
    x_tr, y_tr = data["train"]
    n = len(y_tr)
    gen = torch.Generator().manual_seed(seed)
    best = (float("inf"), -1, copy.deepcopy(model.state_dict()))
    curves: dict[str, list[float]] = {"train_loss": [], "valid_loss": [], "valid_acc": []}
    for epoch in range(spec.max_epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, spec.batch):
            idx = perm[i : i + spec.batch]
            xb = {m: t[idx] for m, t in x_tr.items()}
            loss = F.cross_entropy(model(**xb), y_tr[idx])
            total += float(loss.detach()) * len(idx)
            if handle is not None:
                loss = loss + handle.aux_loss(y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            opt.step()
        v_loss, v_metrics, _ = _evaluate(model, data["valid"])
        curves["train_loss"].append(total / n)
        curves["valid_loss"].append(v_loss)
        curves["valid_acc"].append(v_metrics["acc"])
        if v_loss < best[0]:
            best = (v_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= spec.patience:
            break
    model.load_state_dict(best[2])
    v_loss, valid, _ = _evaluate(model, data["valid"])
    t_loss, test, _ = _evaluate(model, data["test"])
    record: dict[str, Any] = {
        "arm": arm.name,
        "arm_description": arm.description,
        "arm_changes": arm.changes,
        "seed": seed,
        "train_spec": asdict(spec),
        "block_config": None,
        "metrics": {
            "valid": {"loss": v_loss, **valid},
            "test": {"loss": t_loss, **test},
        },
        "best_epoch": best[1],
        "epochs_run": len(curves["valid_loss"]),
        "curves": curves,
        "parameters": {"host": host_params, "block": block_params},
    }
    if handle is not None:
        cfg = handle.block.config
        record["block_config"] = cfg.to_dict()
        x_te, _ = data["test"]
        model.eval()
        with torch.no_grad():
            model(**x_te)
        stats = handle.stats()
        record["shares"] = stats["shares"]
        record["betas"] = stats["betas"]
        if probe is not None:
            record["probe"] = probe(handle, model)
        handle.remove()
    record["wall_s"] = time.perf_counter() - start
    return record


def ridge_r2(
    fit_x: np.ndarray, fit_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, alpha: float = 1.0
) -> float:
    """Held-out R^2 of a ridge regression (features standardised on the fit set)."""
    mu, sd = fit_x.mean(0), fit_x.std(0) + 1e-8
    a = np.c_[(fit_x - mu) / sd, np.ones(len(fit_x))]
    b = np.c_[(eval_x - mu) / sd, np.ones(len(eval_x))]
    reg = alpha * np.eye(a.shape[1])
    reg[-1, -1] = 0
    w = np.linalg.solve(a.T @ a + reg, a.T @ fit_y)
    resid = eval_y - b @ w
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
