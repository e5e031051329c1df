"""Forwards users run in unusual places: eval mode with gradients, inside an ``except`` clause,
a model calling itself, DataParallel replicas, an interrupted forward before ``remove()``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_interop import WIDTHS, host, injected, inputs, targets

import pgm_plugins as pp
from pgm_plugins.errors import CheckpointError, InjectionError
from pgm_plugins.injection import engine
from pgm_plugins.toy import LateFusion


def test_eval_mode_forwards_with_gradients_are_not_trained_on():
    model, handle = injected()
    x, y = inputs(), targets()
    model(*x)
    model.eval()  # a validation loop that forgot torch.no_grad()
    for seed in range(3):
        model(*inputs(seed=10 + seed))
    model.train()
    assert len(handle.injection.pending()) == 1
    fresh, fresh_handle = injected()
    fresh(*x)
    got = handle.loss_terms(y)
    want = fresh_handle.loss_terms(y)
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name])


def test_an_eval_forward_still_gives_a_loss_to_log():
    model, handle = injected()
    model.eval()
    model(*inputs())
    assert handle.injection.pending() == []
    assert torch.isfinite(handle.aux_loss(targets()))


def test_a_forward_inside_an_except_clause_is_recorded():
    model, handle = injected()
    x, y = inputs(), targets()
    try:
        raise ValueError("a failed first attempt")
    except ValueError:
        out = model(*x)  # the fallback
    assert len(handle.injection.pending()) == 1
    (nn.functional.mse_loss(out, y) + handle.aux_loss(y)).backward()
    assert all(p.grad is not None for p in handle.block.parameters() if p.requires_grad)


def test_a_forward_that_raises_inside_an_except_clause_is_dropped():
    model, handle = injected()

    def boom(module, args, output):
        raise RuntimeError("host failure")

    hook = model.fusion.register_forward_hook(boom)
    try:
        raise ValueError("outer")
    except ValueError:
        with pytest.raises(RuntimeError, match="host failure"):
            model(*inputs())
    hook.remove()
    assert handle.injection.pending() == []
    assert engine._stack() == []


class _SelfCalling(LateFusion):
    """A host that runs itself on a second view inside its forward."""

    twice = False

    def forward(self, *xs, depth: int = 0):  # type: ignore[override]
        out = super().forward(*xs)
        if depth == 0 and self.twice:
            out = out + 0.5 * self(*(x.flip(0) for x in xs), depth=1)
        return out


def test_a_model_calling_itself_keeps_both_forwards():
    torch.manual_seed(0)
    model = _SelfCalling(WIDTHS, hidden=8)
    sites = {m: f"encoders.{m}" for m in WIDTHS}
    handle = pp.inject(model, sites=sites, config={"task": "regression"}, example_inputs=inputs())
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
    model.twice = True  # planned on a plain forward; from now on it calls itself
    x = inputs()
    out = model(*x)
    assert len(handle.injection.pending()) == 2  # the outer and the inner forward
    handle.disable()
    plain = model(*x)
    handle.enable()
    assert not torch.allclose(out, plain)  # the block ran in both
    # what the block computes in the outer call equals a plain joint call on the same inputs
    ref = _SelfCalling(WIDTHS, hidden=8)
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "pgm_block" not in k})
    h2 = pp.inject(ref, sites=sites, config={"task": "regression"}, example_inputs=inputs())
    h2.block.load_state_dict(handle.block.state_dict())
    ref.twice = True
    torch.testing.assert_close(ref(*x), out)
    assert engine._stack() == []


def _replicate(root: nn.Module) -> nn.Module:
    """What ``torch.nn.parallel.replicate`` does per device, on CPU: shallow module replicas
    (hook dicts shared), children relinked, parameters as non-leaf copies."""
    memo = {m: m._replicate_for_data_parallel() for m in root.modules()}
    for module, rep in memo.items():
        for k, child in module._modules.items():
            rep._modules[k] = memo[child] if child is not None else None
        for k, p in module._parameters.items():
            rep._parameters[k] = p * 1 if p is not None else None
    return memo[root]


def test_dataparallel_replicas_run_their_own_block():
    model, _handle = injected()
    x = inputs()
    with torch.no_grad():
        want = model(*x)
        replica = _replicate(model)
        assert replica.pgm_block is not model.pgm_block
        torch.testing.assert_close(replica(*x), want)


def test_dataparallel_training_reads_say_what_to_use_instead():
    model, handle = injected()
    replica = _replicate(model)
    replica(*inputs())
    with pytest.raises(InjectionError, match="DistributedDataParallel"):
        handle.aux_loss(targets())


def _interrupt_a_forward(model: nn.Module) -> None:
    def interrupt(module, args, output):
        raise KeyboardInterrupt

    hook = model.encoders.audio.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        model(*inputs())
    hook.remove()


def test_remove_after_an_interrupted_forward_leaves_nothing_on_the_thread():
    model, handle = injected()

    _interrupt_a_forward(model)
    assert len(engine._stack()) == 1  # the interrupted forward never ran its end hook
    handle.remove()
    assert engine._stack() == []


def test_a_stale_record_is_dropped_by_the_next_forward():
    model, handle = injected()

    _interrupt_a_forward(model)
    x = inputs()
    out = model(*x)
    assert engine._stack() == []
    clean = copy.deepcopy(model)
    torch.testing.assert_close(out, clean(*x))
    assert len(handle.injection.pending()) == 1


def test_a_host_state_dict_that_does_not_fit_changes_nothing():
    model, handle = injected()
    before = copy.deepcopy(model.state_dict())
    sd = host(seed=5).state_dict()
    sd["fusion.0.weightt"] = sd.pop("fusion.0.weight")
    with pytest.raises(InjectionError, match="nothing was loaded"):
        handle.load_host_state_dict(sd)
    sd = host(seed=5).state_dict()
    sd["encoders.text.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(InjectionError, match=r"shape \(3, 3\)"):
        handle.load_host_state_dict(sd, strict=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sites_as_a_list_and_a_none_checkpoint_path_get_clear_errors(tmp_path):
    with pytest.raises(InjectionError, match="sites must map each modality"):
        pp.inject(host(), sites=["encoders.text", "encoders.audio"])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="needs a checkpoint directory"):
        pp.load(host(), None)  # type: ignore[arg-type]
    _, handle = injected()
    with pytest.raises(CheckpointError, match="needs a checkpoint directory"):
        pp.save(handle, None)  # type: ignore[arg-type]
