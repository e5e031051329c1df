"""Every registered example model (hook ``pgm_register_models``) with an adapter and example
inputs goes through the shared checks, so an adapter plugin that registers its models is tested
here without a line of its own."""

from __future__ import annotations

import pytest
import torch
from torch.utils._pytree import tree_leaves

import pgm_plugins as pp
from pgm_plugins.registry import PluginRegistry, use_registry

#: read at collection, to parametrise over: a registry of its own with every installed plugin,
#: made the process-wide one only while this module's tests run (``installed`` below)
INSTALLED = PluginRegistry()
MODELS = [
    entry.name
    for entry in INSTALLED.models.entries()
    if entry.value.adapter and entry.value.example
]


@pytest.fixture(autouse=True)
def installed():
    """``pp.inject``/``pp.load`` look adapters up in the registry the models came from."""
    with use_registry(INSTALLED):
        yield


def build(name: str):
    spec = INSTALLED.models.entry(name).value
    torch.manual_seed(0)
    model = spec.factory()
    return model, spec.example(), spec.adapter


def call(model, inputs):
    """The model's output tensors, whatever container it returns (MMSA returns a dict)."""
    out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


def test_the_example_plugin_model_is_collected():
    assert {"toy.late_fusion", "example.two_tower"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_registered_model_identity_removal_and_checkpoint(name, tmp_path):
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
    assert any(not torch.equal(c, r) for c, r in zip(changed, ref, strict=True))
    pp.save(handle, tmp_path)
    handle.remove()
    torch.testing.assert_close(call(model, inputs), ref, rtol=0, atol=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    fresh, _, _ = build(name)
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(call(fresh, inputs), changed, rtol=0, atol=0)
