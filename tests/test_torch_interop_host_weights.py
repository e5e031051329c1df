"""Loading the host's own state_dict into an injected model: documented, and still strict."""

from __future__ import annotations

import pytest
import torch
from torch_interop import host, injected, inputs

from pgm_plugins.errors import InjectionError


def test_host_state_dict_loads_and_block_keys_may_be_absent():
    model, handle = injected(seed=0)
    other = host(seed=5)
    result = handle.load_host_state_dict(other.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    handle.remove()
    torch.testing.assert_close(model(*inputs()), other(*inputs()), rtol=0, atol=0)


def test_a_missing_or_misspelt_host_key_is_still_caught():
    _model, handle = injected()
    state = host().state_dict()
    missing = dict(state)
    missing.pop("fusion.0.weight")
    with pytest.raises(InjectionError, match=r"missing host key 'fusion\.0\.weight'"):
        handle.load_host_state_dict(missing)
    misspelt = dict(state)
    misspelt["fusion.0.wieght"] = misspelt.pop("fusion.0.weight")
    with pytest.raises(InjectionError, match=r"unexpected key 'fusion\.0\.wieght'.*near"):
        handle.load_host_state_dict(misspelt)
