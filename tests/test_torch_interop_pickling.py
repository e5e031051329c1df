"""``torch.save(model)`` of a whole injected model loads back as a working injected model."""

from __future__ import annotations

import io
import pickle

import torch
from torch_interop import injected, inputs, step_loss, targets

import pgm_plugins as pp


def _roundtrip(model):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_torch_save_of_the_whole_model_after_training_forward():
    model, handle = injected()
    x, y = inputs(), targets()
    step_loss(model, handle, x, y).backward()  # state of a forward exists, and grads
    model(*x)  # and an unread forward
    loaded = _roundtrip(model)
    torch.testing.assert_close(loaded(*x), model(*x), rtol=0, atol=0)
    h2 = pp.handle_of(loaded)
    assert h2.stats()["pending"] == 1  # its own forward just now, nothing carried over
    opt = torch.optim.SGD(h2.block.param_groups(0.1), lr=0.1)
    before = [p.detach().clone() for p in h2.block.parameters()]
    step_loss(loaded, h2, x, y).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, h2.block.parameters(), strict=True))
    # and the loaded model can still give the host back
    h2.remove()
    handle.remove()
    torch.testing.assert_close(loaded(*x), model(*x), rtol=0, atol=0)


def test_plain_pickle_and_the_adapter_checkpoint_still_agree(tmp_path):
    model, handle = injected()
    x = inputs()
    clone = pickle.loads(pickle.dumps(model))
    pp.save(handle, tmp_path / "ckpt")
    fresh, _ = injected(seed=0)
    pp.handle_of(fresh).remove()
    pp.load(fresh, tmp_path / "ckpt")
    torch.testing.assert_close(clone(*x), fresh(*x), rtol=0, atol=0)
