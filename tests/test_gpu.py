"""The block and the engine on a CUDA device (skipped where there is none)."""

from __future__ import annotations

import pytest
import torch

import pgm_plugins as pp
from pgm_plugins.toy import LateFusion

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_injected_block_follows_the_host_to_the_gpu_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = LateFusion().cuda()
    x = (torch.randn(4, 16, device="cuda"), torch.randn(4, 8, device="cuda"))
    ref = model(*x)
    handle = pp.inject(model, "toy.late_fusion", config={"mix": "replace"}, example_inputs=x)
    assert all(p.device.type == "cuda" for p in handle.block.parameters())
    out = model(*x)
    assert not torch.equal(out, ref)
    (out.square().mean() + handle.aux_loss(torch.randn(4, device="cuda"))).backward()
    pp.save(handle, tmp_path)
    torch.manual_seed(0)
    fresh = LateFusion().cuda()
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(*x), out.detach(), rtol=0, atol=0)
    handle.remove()
    assert torch.equal(model(*x), ref)


def test_block_in_bfloat16_on_gpu():
    cfg = pp.PgMConfig(modalities={"a": 32, "b": 16}, task="none")
    block = pp.PgMBlock(cfg).cuda().to(torch.bfloat16)
    out = block(
        {
            "a": torch.randn(4, 7, 32, device="cuda", dtype=torch.bfloat16),
            "b": torch.randn(4, 16, device="cuda", dtype=torch.bfloat16),
        }
    )
    assert out.outputs["a"].dtype == torch.bfloat16
    out.aux_loss().backward()
