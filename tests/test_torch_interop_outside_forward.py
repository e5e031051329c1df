"""Calling a tower (an ``encode_*`` method) outside the model's forward has a defined result."""

from __future__ import annotations

import pytest
import torch
from torch_interop import SITES, WIDTHS, host, inputs, targets

import pgm_plugins as pp


def _independent(**config):
    """The test host with a block in independent mode (``shared`` learner), its inputs."""
    model = host()
    x, y = inputs(), targets()
    handle = pp.inject(
        model,
        sites=SITES,
        mode="independent",
        config={"paired": "shared", "task": "regression", **config},
        example_inputs=x,
    )
    return model, handle, x, y


def test_joint_mode_outside_the_forward_gives_the_host_output():
    model = host()
    x = inputs()
    plain = [model.encoders[m](xi) for m, xi in zip(WIDTHS, x, strict=True)]
    pp.inject(model, sites=SITES, config={"mix": "replace"}, example_inputs=x)
    for _ in range(3):  # never "ran again", whatever the number of calls
        again = [model.encoders[m](xi) for m, xi in zip(WIDTHS, x, strict=True)]
        torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_independent_mode_embeds_one_modality_per_call_many_times():
    model, handle, x, y = _independent(mix="replace")
    text = model.encoders["text"]
    first = text(x[0])
    for _ in range(5):
        torch.testing.assert_close(text(x[0]), first, rtol=0, atol=0)
    # each call is a forward of its own: another modality's call in between changes nothing
    model.encoders["audio"](x[1])
    torch.testing.assert_close(text(x[0]), first, rtol=0, atol=0)
    # a read covers the calls since the previous read, and pairs the k-th call of each modality
    with pytest.warns(RuntimeWarning, match="unevenly"):
        handle.aux_loss(y)
    model.encoders["text"](x[0])
    model.encoders["audio"](x[1])
    terms = handle.loss_terms(y)
    assert "align" in terms and terms["align"].requires_grad


def test_calls_inside_one_host_forward_are_paired_among_themselves():
    model, handle, x, y = _independent()
    model(*x)
    alone = handle.loss_terms(y)["align"].detach()
    # a logging call of one tower before the training forward does not shift the pairing
    model.encoders["text"](x[0])
    model(*x)
    both = handle.loss_terms(y)["align"].detach()  # the lone text call has no partner
    torch.testing.assert_close(both, alone)


def test_the_paired_head_trains_across_the_calls_of_a_step():
    model, handle, x, y = _independent()
    for m, xi in zip(WIDTHS, x, strict=True):
        model.encoders[m](xi)
    terms = handle.loss_terms(y)
    assert "task.paired" in terms
    terms["task.paired"].backward()
    heads = handle.block.paired_heads
    assert all(p.grad is not None for p in heads.parameters())
