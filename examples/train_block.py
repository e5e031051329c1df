"""Train a PgM block inside a small two-modality model and watch it learn.

The task is synthetic with known structure (``pgm_plugins.toy.make_uni_paired``): the target is
the sum of one factor readable from "text" alone, one readable from "audio" alone, and the product
of two factors, one from each modality (learnable only from their interaction). A late-fusion host
is trained twice from the same seed, without and with a PgM block injected at its encoders'
outputs; the script prints the losses going down and the uni-modal shares the block learned.

    python examples/train_block.py [--epochs 30] [--seed 0]

One seed is a demo, not evidence: ``python benchmarks/method.py --quick`` compares the host, PgM
and its same-size controls over seeds (mean +- std, paired tests); ``docs/method.md`` has the
study.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import pgm_plugins as pp
from pgm_plugins.toy import LateFusion, make_uni_paired


def train(use_pgm: bool, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    x_tr, y_tr = make_uni_paired(2048, seed)
    x_te, y_te = make_uni_paired(1024, seed + 1)
    model = LateFusion({"text": 16, "audio": 8}, hidden=32)
    handle = None
    if use_pgm:
        handle = pp.inject(
            model,
            "toy.late_fusion",
            config={
                "task": "regression",
                "regression_loss": "mse",
                "rho": 0.5,
                "mix": "gate",
                "lr_mult": {"*.paired": 2.0},
            },
        )
        groups = handle.param_groups(base_lr=3e-3)
    else:
        groups = [{"params": list(model.parameters()), "lr": 3e-3}]
    opt = torch.optim.Adam(groups)
    mse = nn.MSELoss()
    label = "+PgM " if use_pgm else "host "
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            loss = mse(model(x_tr["text"][idx], x_tr["audio"][idx]), y_tr[idx])
            total = loss if handle is None else loss + handle.aux_loss(y_tr[idx])
            opt.zero_grad()
            total.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            test = mse(model(x_te["text"], x_te["audio"]), y_te).item()
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            extra = ""
            if handle is not None:
                stats = handle.stats()
                extra = "  uni shares " + ", ".join(
                    f"{m}={s:.3f}" for m, s in stats["shares"].items()
                )
                extra += "  beta " + ", ".join(f"{m}={b:+.3f}" for m, b in stats["betas"].items())
            print(
                f"{label} epoch {epoch:3d}  train task loss {loss.item():.4f}  "
                f"test MSE {test:.4f}{extra}",
                flush=True,
            )
    return test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    base = train(False, args.epochs, args.seed)
    pgm = train(True, args.epochs, args.seed)
    print(
        f"\ntest MSE, seed {args.seed}: host {base:.4f}, host+PgM {pgm:.4f} "
        f"({time.perf_counter() - start:.1f} s; one seed: a demo, not a benchmark)"
    )


if __name__ == "__main__":
    main()
