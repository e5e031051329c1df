"""A KeyboardInterrupt in the first forward (the joint-mode read check) leaves no mode pushed."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch_interop import SITES, host, inputs, targets

import pgm_plugins as pp


class Interrupting(nn.Module):
    """Raises KeyboardInterrupt from inside the host's forward, once."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return x


def test_interrupt_during_the_first_forward_leaves_no_torch_function_mode():
    model = host()
    model.fusion = nn.Sequential(Interrupting(), model.fusion)
    handle = pp.inject(model, sites=SITES)  # no example inputs: checked at the first forward
    assert handle.stats()["read_check"].startswith("pending")
    with contextlib.suppress(KeyboardInterrupt):
        model(*inputs())
    assert torch._C._len_torch_function_stack() == 0
    # the next forward works, runs the check and trains
    model(*inputs())
    assert handle.stats()["read_check"] == "done"
    assert torch._C._len_torch_function_stack() == 0
    handle.aux_loss(targets()).backward()


def test_interrupt_in_a_later_forward_drops_that_forward():
    model = host()
    handle = pp.inject(model, sites=SITES, example_inputs=inputs())
    model.fusion = nn.Sequential(Interrupting(), model.fusion)
    with contextlib.suppress(KeyboardInterrupt):
        model(*inputs())
    model(*inputs())
    assert handle.stats()["pending"] == 1
