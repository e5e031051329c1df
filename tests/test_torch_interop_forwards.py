"""Which forwards an auxiliary loss covers, and when a forward's state is dropped."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch_interop import injected, inputs, targets

from pgm_plugins.errors import InjectionError, InputError


def test_two_training_forwards_then_one_read_cover_both():
    model, handle = injected()
    x1, x2, y = inputs(seed=3), inputs(seed=4), targets()
    model(*x1)
    first = handle.aux_loss(y)
    model(*x2)  # a forward after a read starts a new window
    second = handle.aux_loss(y)
    model(*x1)
    model(*x2)
    both = handle.aux_loss(y)
    torch.testing.assert_close(both, first + second)
    # reading twice before the next forward gives the same loss
    torch.testing.assert_close(handle.aux_loss(y), both)
    assert handle.stats()["pending"] == 2


def test_targets_per_forward_when_batches_differ():
    model, handle = injected()
    model(*inputs(batch=4))
    model(*inputs(batch=2))
    with pytest.raises(InputError, match="one per forward"):
        handle.aux_loss(targets(4))
    loss = handle.aux_loss([targets(4), targets(2)])
    assert loss.requires_grad


def test_no_grad_forwards_are_not_covered_but_give_a_loss_to_log():
    model, handle = injected()
    with pytest.raises(InjectionError, match="needs a forward"):
        handle.aux_loss(targets())
    out = model(*inputs(seed=3))  # a training forward, then an evaluation pass
    with torch.no_grad():
        model(*inputs(seed=4))
    assert handle.stats()["pending"] == 1  # the evaluation pass is not trained on
    train = handle.aux_loss(targets())
    assert train.requires_grad
    (torch.nn.functional.mse_loss(out, targets()) + train).backward()
    with torch.no_grad():
        model(*inputs(seed=4))
    logged = handle.aux_loss(targets())  # nothing left to train on: the last forward, to log
    assert not logged.requires_grad and torch.isfinite(logged)
    assert handle.stats()["forwards"] == 3
    assert set(handle.parts) == {"text", "audio", "video"}


def test_unread_grad_forwards_do_not_grow_memory_and_the_read_warns():
    model, handle = injected()
    handle.max_pending = 3
    refs = []
    for s in range(10):
        model(*inputs(seed=s))
        refs.append(weakref.ref(handle.outputs[-1].outputs["text"]))
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(alive) == 3 and handle.stats()["pending"] == 3
    with pytest.warns(RuntimeWarning, match="7 training forwards .* dropped"):
        handle.aux_loss(targets())


def test_a_forward_before_an_optimizer_step_is_skipped_by_the_read():
    model, handle = injected()
    opt = torch.optim.SGD(handle.param_groups(0.1), lr=0.1)
    x, y = inputs(), targets()
    model(*x)  # never read
    opt.zero_grad()
    (model(*x).sum() * 0 + handle.aux_loss(y)).backward()
    opt.step()
    model(*x)
    handle.aux_loss(y).backward()  # does not reach the stale graph of the first forwards
    assert handle.stats()["pending"] == 1


def test_a_removed_handle_holds_no_tensors():
    model, handle = injected()
    model(*inputs())
    ref = weakref.ref(handle.outputs[0].outputs["text"])
    handle.remove()
    gc.collect()
    assert ref() is None
