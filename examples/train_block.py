"""Train a PgM block inside a small two-modality model and watch it learn.

The task is synthetic with known structure: the target is the sum of one feature readable from
"text" alone, one readable from "audio" alone, and the product of two features, one from each
modality (learnable only from their interaction). A host (one encoder per modality, a fusion head)
is trained twice from the same seed, with and without a PgM block between encoders and fusion;
the script prints the losses going down and the uni-modal shares the block learned.

    python examples/train_block.py [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from pgm_plugins import PgMBlock, PgMConfig

WIDTHS = {"text": 16, "audio": 8}


def make_data(n: int, seed: int) -> tuple[dict[str, Tensor], Tensor]:
    """Observed modalities are random mixtures of latent factors plus noise."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.Generator().manual_seed(1234)  # the mixing is the same for every split
    z_text, z_audio, p_text, p_audio = torch.randn(4, n, generator=g)
    y = z_text + z_audio + 1.5 * p_text * p_audio
    x = {}
    for m, (uni, pair) in {"text": (z_text, p_text), "audio": (z_audio, p_audio)}.items():
        d = WIDTHS[m]
        latent = torch.stack([uni, pair], dim=1)
        x[m] = latent @ torch.randn(2, d, generator=mix) + 0.3 * torch.randn(n, d, generator=g)
    return x, y


class Host(nn.Module):
    """A late-fusion model; ``block`` (optional) sits between the encoders and the fusion head."""

    def __init__(self, block: PgMBlock | None = None) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, 32), nn.GELU()) for m, d in WIDTHS.items()}
        )
        self.block = block
        self.fusion = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
        self.aux: Tensor | None = None

    def forward(self, x: dict[str, Tensor], y: Tensor | None = None) -> Tensor:
        h = {m: enc(x[m]) for m, enc in self.encoders.items()}
        if self.block is not None:
            out = self.block(h)
            h, self.aux = out.outputs, out.aux_loss(y)
        return self.fusion(torch.cat([h["text"], h["audio"]], dim=-1)).squeeze(-1)


def train(use_pgm: bool, epochs: int, seed: int, verbose: bool = True) -> dict[str, float]:
    torch.manual_seed(seed)
    x_tr, y_tr = make_data(2048, seed)
    x_te, y_te = make_data(1024, seed + 1)
    block = None
    if use_pgm:
        cfg = PgMConfig(
            modalities={"text": 32, "audio": 32},
            task="regression",
            regression_loss="mse",
            rho=0.5,
            mix="gate",
            lr_mult={"*.paired": 2.0},
        )
        block = PgMBlock(cfg)
    model = Host(block)
    host_params = [p for n, p in model.named_parameters() if not n.startswith("block.")]
    groups = [{"name": "host", "params": host_params, "lr": 3e-3}]
    if block is not None:
        groups += block.param_groups(base_lr=3e-3)
    opt = torch.optim.Adam(groups)
    loss_fn = nn.MSELoss()
    label = "+PgM " if use_pgm else "host "
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            pred = model({m: v[idx] for m, v in x_tr.items()}, y_tr[idx])
            loss = loss_fn(pred, y_tr[idx])
            total = loss if model.aux is None else loss + model.aux
            opt.zero_grad()
            total.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            test = loss_fn(model(x_te), y_te).item()
        if verbose and (epoch == 1 or epoch % 5 == 0 or epoch == epochs):
            extra = ""
            if block is not None:
                with torch.no_grad():
                    h = {m: enc(x_te[m]) for m, enc in model.encoders.items()}
                    shares = block(h).share_values()
                extra = "  uni shares " + ", ".join(f"{m}={s:.3f}" for m, s in shares.items())
                extra += "  beta " + ", ".join(f"{m}={b:+.3f}" for m, b in block.betas().items())
            print(
                f"{label} epoch {epoch:3d}  train task loss {loss.item():.4f}  "
                f"test MSE {test:.4f}{extra}",
                flush=True,
            )
    return {"test_mse": test}


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
        f"\ntest MSE, seed {args.seed}: host {base['test_mse']:.4f}, "
        f"host+PgM {pgm['test_mse']:.4f} ({time.perf_counter() - start:.1f} s; one seed, "
        "a demo, not a benchmark)"
    )


if __name__ == "__main__":
    main()
