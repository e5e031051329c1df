"""Every registered host with an adapter and example inputs goes through the shared checks,
so an adapter plugin that registers its hosts is tested here without a line of its own."""

from __future__ import annotations

import pytest
import torch

import pgm_plugins as pp
from pgm_plugins.registry import get_registry

HOSTS = [
    name
    for name in get_registry().hosts.names()
    if get_registry().hosts.entry(name).value.adapter
    and get_registry().hosts.entry(name).value.example
]


def build(name: str):
    spec = get_registry().hosts.entry(name).value
    torch.manual_seed(0)
    model = spec.factory()
    return model, spec.example(), spec.adapter


def call(model, inputs):
    return model(**inputs) if isinstance(inputs, dict) else model(*inputs)


def test_the_example_plugin_host_is_collected():
    assert {"toy.late_fusion", "example.two_tower"} <= set(HOSTS)


@pytest.mark.parametrize("name", HOSTS)
def test_registered_host_identity_removal_and_checkpoint(name, tmp_path):
    model, inputs, adapter = build(name)
    ref = call(model, inputs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = pp.inject(model, adapter, example_inputs=inputs)
    torch.testing.assert_close(call(model, inputs), ref, rtol=0, atol=0)
    with torch.no_grad():
        for decoder in handle.block.decoders.values():
            if decoder.beta is not None:
                decoder.beta.fill_(0.5)
    changed = call(model, inputs)
    assert not torch.equal(changed, ref)
    pp.save(handle, tmp_path)
    handle.remove()
    assert torch.equal(call(model, inputs), ref)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    fresh, _, _ = build(name)
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(call(fresh, inputs), changed, rtol=0, atol=0)
