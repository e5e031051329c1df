"""Activation checkpointing over a tower that holds a site: right gradients or a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch_interop import WIDTHS, grads, inputs, targets

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError


class Towers(nn.Module):
    """Three towers after a stem (so a checkpointed tower's input requires grad)."""

    def __init__(self, ckpt: str | None = None, reentrant: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stems = nn.ModuleDict({m: nn.Linear(d, d) for m, d in WIDTHS.items()})
        self.towers = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 8))
                for m, d in WIDTHS.items()
            }
        )
        self.head = nn.Linear(24, 1)
        self.ckpt, self.reentrant = ckpt, reentrant

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        hs = []
        for (m, tower), x in zip(self.towers.items(), xs, strict=True):
            s = self.stems[m](x)
            hs.append(
                checkpoint(tower, s, use_reentrant=self.reentrant) if m == self.ckpt else tower(s)
            )
        return self.head(torch.cat(hs, -1)).squeeze(-1)


def run(ckpt: str | None, reentrant: bool = False, mode: str = "joint"):
    model = Towers(ckpt, reentrant)
    x, y = inputs(), targets()
    config = {"dropout": 0.0, "task": "regression"}
    if mode == "independent":
        config["paired"] = "shared"
    handle = pp.inject(
        model,
        sites={m: f"towers.{m}" for m in WIDTHS},
        mode=mode,
        config=config,
        example_inputs=x,
    )
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
    loss = nn.functional.mse_loss(model(*x), y) + handle.aux_loss(y)
    loss.backward()
    return grads(model), handle


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_non_reentrant_on_an_early_tower_gives_the_same_gradients(mode):
    expected, _ = run(None, mode=mode)
    got, handle = run("text", reentrant=False, mode=mode)
    torch.testing.assert_close(got, expected)
    assert handle.stats()["forwards"] == 1  # the recomputation is not another forward


def test_independent_mode_supports_checkpointing_any_tower():
    expected, _ = run(None, mode="independent")
    got, _ = run("video", reentrant=False, mode="independent")
    torch.testing.assert_close(got, expected)


def test_non_reentrant_on_the_tower_where_the_joint_block_runs_is_refused():
    with pytest.raises(InjectionError, match="recomputed by activation checkpointing"):
        run("video", reentrant=False)


@pytest.mark.parametrize("tower", ["text", "video"])
def test_reentrant_checkpointing_is_refused_before_any_wrong_gradient(tower):
    with pytest.raises(InjectionError, match="use_reentrant=False"):
        run(tower, reentrant=True)
