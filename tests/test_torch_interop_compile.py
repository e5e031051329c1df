"""``torch.compile`` (also ``fullgraph=True``) and ``torch.export`` of an injected model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import CASES
from torch_interop import host, injected, inputs, targets

import pgm_plugins as pp

# dynamo compiles a root module's hooks as frames of their own and wraps the tensors they read;
# torch hides this warning itself unless warnings are errors, as in this suite
pytestmark = pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")


def _train(model, handle, steps=3):
    opt = torch.optim.SGD(handle.param_groups(0.05), lr=0.05)
    x, y = inputs(), targets()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(*x), y) + handle.aux_loss(y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph", "fullgraph"])
def test_training_under_compile_matches_eager(fullgraph):
    model, handle = injected()  # the default config (finite check included)
    eager = _train(model, handle)
    model, handle = injected()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=fullgraph)
    got = _train(compiled, handle)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
# inductor's own lowering of the block's QR still calls a deprecated torch helper
@pytest.mark.filterwarnings("ignore:`torch._prims_common.check` is deprecated:FutureWarning")
def test_training_under_inductor_on_one_tiny_host():
    model, handle = injected()
    eager = _train(model, handle, steps=2)
    model, handle = injected()
    got = _train(torch.compile(model), handle, steps=2)
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_engine_adds_no_graph_breaks(case):
    model = case.factory()
    plain = torch._dynamo.explain(model)(*case.inputs)
    torch._dynamo.reset()
    pp.inject(
        model,
        sites=case.sites,
        junction=case.junction,
        config={"task": "none", **case.config},
        example_inputs=case.inputs,
    )
    injected_ = torch._dynamo.explain(model)(*case.inputs)
    in_engine = [
        r.reason
        for r in injected_.break_reasons
        if any("pgm_plugins" in frame.filename for frame in r.user_stack)
    ]
    assert in_engine == []
    rnn = any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    if plain.graph_count == 1 and not rnn:  # dynamo does not trace RNNs: the host breaks
        assert (injected_.graph_count, injected_.graph_break_count) == (1, 0)


def test_export_in_eval_mode_gives_the_same_outputs():
    model, _handle = injected()
    model.eval()
    x = inputs()
    expected = model(*x)
    exported = torch.export.export(model, x)
    torch.testing.assert_close(exported.module()(*x), expected)
    # a block that changes outputs: the exported program carries it
    assert not torch.allclose(expected, host()(*x))
