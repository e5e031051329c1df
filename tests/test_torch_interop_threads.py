"""One injected model serving several threads at once gives each call its single-thread output."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch_interop import injected, inputs


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_threaded_inference_matches_single_thread(grad):
    model, _handle = injected()
    model.eval()
    batches = [inputs(batch=3, seed=s) for s in range(40)]
    with torch.no_grad():
        expected = [model(*x) for x in batches]

    def call(i: int) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return model(*batches[i]).detach()

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, list(range(40)) * 3))
    wrong = [i for i, r in enumerate(results) if not torch.equal(r, expected[i % 40])]
    assert wrong == []


def test_each_thread_reads_its_own_aux_loss():
    model, handle = injected()
    x1, x2 = inputs(seed=3), inputs(seed=4)
    y = torch.zeros(4)
    model(*x1)
    alone = handle.aux_loss(y).detach()

    model2, h2 = injected()

    def work(x):
        model2(*x)
        return h2.aux_loss(y).detach()

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(work, [x1, x2])
    torch.testing.assert_close(a, alone, rtol=0, atol=0)
    assert not torch.equal(a, b)
