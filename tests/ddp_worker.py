"""DDP scenarios run by ``test_torch_interop_ddp.py`` in two gloo processes (and once in-process
as the single-process reference). Importable by spawned children: keep it free of pytest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

WIDTHS = {"text": 6, "audio": 4, "video": 5}
GLOBAL_BATCH = 8
STEPS = 3


class MaybeMissing(nn.Module):
    """A late-fusion host that runs without a modality (``None``): zeros take its place."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Linear(d, 8) for m, d in WIDTHS.items()})
        self.fusion = nn.Linear(8 * len(WIDTHS), 1)

    def forward(self, *xs: Tensor | None) -> Tensor:
        batch = next(x for x in xs if x is not None).shape[0]
        hs = [
            enc(x) if x is not None else torch.zeros(batch, 8)
            for enc, x in zip(self.encoders.values(), xs, strict=True)
        ]
        return self.fusion(torch.tanh(torch.cat(hs, -1))).squeeze(-1)


def data() -> list[tuple[tuple[Tensor, ...], Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        (
            tuple(torch.randn(GLOBAL_BATCH, d, generator=g) for d in WIDTHS.values()),
            torch.randn(GLOBAL_BATCH, generator=g),
        )
        for _ in range(STEPS)
    ]


def build(config: dict[str, Any]):
    import pgm_plugins as pp

    torch.manual_seed(0)
    model = MaybeMissing()
    example = tuple(torch.randn(2, d) for d in WIDTHS.values())
    handle = pp.inject(
        model,
        sites={m: f"encoders.{m}" for m in WIDTHS},
        config={"task": "regression", "dropout": 0.0, **config},
        example_inputs=example,
    )
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
    return model, handle


def train(scenario: str, config: dict[str, Any], rank: int = 0, world: int = 1, **ddp: Any):
    model, handle = build(config)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, **ddp)
    if scenario == "disabled":
        handle.disable()
    opt = torch.optim.SGD(handle.param_groups(0.1), lr=0.1)
    share = GLOBAL_BATCH // world
    for step, (xs, y) in enumerate(data()):
        lo, hi = rank * share, (rank + 1) * share
        x = [t[lo:hi] for t in xs]
        if scenario == "missing" and rank == world - 1 and step == 1:
            x[2] = None  # this rank's batch lacks video
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(*x), y[lo:hi])
        if scenario != "disabled":
            loss = loss + (
                handle.aux_loss() if scenario == "no_targets" else handle.aux_loss(y[lo:hi])
            )
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def worker(rank: int, world: int, store: str, out: str, jobs: list[dict[str, Any]]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results = {}
        for job in jobs:
            results[job["name"]] = train(job["scenario"], job["config"], rank, world, **job["ddp"])
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover - manual runs
    print(os.getpid())
