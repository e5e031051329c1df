"""Copies of an injected model carry their own working block (deepcopy, EMA, AveragedModel)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.swa_utils import AveragedModel
from torch_interop import grads, injected, inputs, step_loss, targets

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError


@pytest.mark.parametrize("when", ["after inject", "after a training forward", "after no_grad"])
def test_deepcopy_runs_its_own_block(when):
    model, handle = injected()
    x, y = inputs(), targets()
    if when == "after a training forward":
        model(*x)
    elif when == "after no_grad":
        with torch.no_grad():
            model(*x)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(*x), model(*x), rtol=0, atol=0)
    # the copy's hooks feed the copy's block: changing it changes the copy only
    copy_handle = pp.handle_of(clone)
    assert copy_handle.block is not handle.block
    with torch.no_grad():
        for p in copy_handle.block.parameters():
            p.add_(0.1)
    assert not torch.equal(clone(*x), model(*x))
    # two forwards of the copy in a row are fine, and its aux loss is its own
    clone(*x)
    loss = step_loss(clone, copy_handle, x, y)
    loss.backward()
    assert all(p.grad is None for p in handle.block.parameters())
    assert any(p.grad is not None for p in copy_handle.block.parameters())


def test_copies_keep_the_enabled_setting():
    model, handle = injected()
    x = inputs()
    handle.disable()
    clone = copy.deepcopy(model)
    assert not pp.handle_of(clone).enabled
    handle.remove()
    torch.testing.assert_close(clone(*x), model(*x), rtol=0, atol=0)


def _ema_update(ema, model, decay):
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def test_timm_style_ema_averages_the_block_and_leaves_the_live_aux_loss_alone():
    model, handle = injected()
    ema = copy.deepcopy(model)
    opt = torch.optim.SGD(handle.param_groups(0.05), lr=0.05)
    x, y = inputs(), targets()
    for _ in range(3):
        opt.zero_grad()
        out = model(*x)
        # the EMA copy runs between the live forward and its backward (an eval in the loop)
        with torch.no_grad():
            ema(*x)
        live = torch.nn.functional.mse_loss(out, y) + handle.aux_loss(y)
        live.backward()
        opt.step()
        _ema_update(ema, model, 0.5)
    # the EMA's block moved with the live block's
    ema_block = pp.handle_of(ema).block
    assert any(
        not torch.equal(e, p)
        for e, p in zip(ema_block.parameters(), handle.block.parameters(), strict=True)
    )
    # its output is that of a model loaded with the averaged weights
    reference, _ = injected()
    reference.load_state_dict(ema.state_dict())
    torch.testing.assert_close(ema(*x), reference(*x), rtol=0, atol=0)


def test_ema_forward_between_live_forward_and_backward_does_not_change_gradients():
    x, y = inputs(), targets()
    model, handle = injected()
    step_loss(model, handle, x, y).backward()
    expected = grads(model)

    model, handle = injected()
    ema = copy.deepcopy(model)
    out = model(*x)
    ema(*x)  # with gradients, so the EMA copy records a forward of its own
    loss = torch.nn.functional.mse_loss(out, y) + handle.aux_loss(y)
    loss.backward()
    torch.testing.assert_close(grads(model), expected, rtol=0, atol=0)


def test_swa_averaged_model_averages_the_block():
    model, handle = injected()
    swa = AveragedModel(model)
    with torch.no_grad():
        for p in handle.block.parameters():
            p.add_(0.2)
    swa.update_parameters(model)
    x = inputs()
    reference, _ = injected()
    reference.load_state_dict(swa.module.state_dict())
    torch.testing.assert_close(swa(*x), reference(*x), rtol=0, atol=0)
    assert pp.handle_of(swa.module).block is not handle.block


def test_handle_of_explains_a_model_without_a_block():
    model, handle = injected()
    handle.remove()
    with pytest.raises(InjectionError) as info:
        pp.handle_of(model)
    assert "holds no PgM block" in str(info.value)
