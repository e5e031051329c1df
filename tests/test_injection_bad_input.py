"""Bad input to the engine: a clear error naming what was given, and the model untouched."""

from __future__ import annotations

import json

import pytest
import torch
from torch_interop import SITES, host, injected, inputs

import pgm_plugins as pp
from pgm_plugins import Site
from pgm_plugins.errors import CheckpointError, InjectionError, InputError, SiteError


def untouched(model, before_state, before_out):
    assert not hasattr(model, "pgm_block")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before_state.items())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    torch.testing.assert_close(model(*inputs()), before_out, rtol=0, atol=0)


@pytest.fixture
def model():
    m = host()
    m.before = ({k: v.clone() for k, v in m.state_dict().items()}, m(*inputs()))
    return m


def test_two_modalities_at_one_tensor_are_refused(model):
    with pytest.raises(SiteError, match="also the site of 'text'"):
        pp.inject(model, sites={"text": "encoders.text", "audio": "encoders.text"})
    untouched(model, *model.before)


@pytest.mark.parametrize(
    ("sites", "match"),
    [
        ({"text": {"layer": "encoders.text", "layot": "BD"}}, "unknown Site field 'layot'"),
        ({"text": {"at": "output"}}, "needs 'layer'"),
        ({"text": 3}, "must be a Site, a layer path or a mapping"),
    ],
)
def test_malformed_sites_raise_site_errors(model, sites, match):
    with pytest.raises(InjectionError, match=match):
        pp.inject(model, sites=sites)
    untouched(model, *model.before)


def test_a_dotted_prefix_is_refused(model):
    with pytest.raises(InjectionError, match=r"prefix='pgm\.block' must be a Python identifier"):
        pp.inject(model, sites=SITES, prefix="pgm.block")
    untouched(model, *model.before)


def test_layouts_that_contradict_the_tensor_are_refused_at_plan_time(model):
    sites = {"text": Site("encoders.text", layout="BTD"), "audio": "encoders.audio"}
    with pytest.raises(SiteError, match="layout 'BTD' expects a 3-D tensor"):
        pp.inject(model, sites=sites, example_inputs=inputs())
    untouched(model, *model.before)


def test_a_batch_first_sequence_declared_tbd_is_refused_at_plan_time():
    from tiny_models import ObjectOutputs

    torch.manual_seed(0)
    model = ObjectOutputs()
    x = (torch.randn(3, 4, 3), torch.randn(3, 6, 4))
    sites = {
        "text": Site("text", index="last_hidden_state", layout="TBD"),
        "image": Site("image", index="last_hidden_state"),
    }
    with pytest.raises(SiteError, match="puts the batch on axis 1"):
        pp.inject(model, sites=sites, example_inputs=x)


def test_a_layout_contradiction_without_a_dry_run_fails_at_the_first_forward(model):
    sites = {"text": Site("encoders.text", layout="BTD", dim=8), "audio": "encoders.audio"}
    handle = pp.inject(model, sites=sites)
    with pytest.raises(InputError, match="layout 'BTD'"):
        model(*inputs())
    handle.remove()
    untouched(model, *model.before)


def test_a_time_first_tensor_is_recognised_and_an_ambiguous_one_asks():
    from torch import nn

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)
            self.out = nn.Linear(8, 1)

        def forward(self, x, y):  # batch-first inputs, time-first encoder outputs
            ha, hb = self.a(x).transpose(0, 1), self.b(y).transpose(0, 1)
            return self.out(torch.cat([ha[-1], hb[-1]], -1))

    torch.manual_seed(0)
    model = SeqFirst()
    plan = pp.plan(
        model,
        sites={"a": "a", "b": "b"},
        example_inputs=(torch.randn(2, 5, 3),) * 1 + (torch.randn(2, 5, 2),),
    )
    assert {rs.layout for rs in plan.sites.values()} == {"BTD"}  # hooks see batch-first output
    square = (torch.randn(4, 4, 3), torch.randn(4, 4, 2))
    with pytest.raises(SiteError, match="could be axis 0 or 1"):
        pp.plan(model, sites={"a": "a", "b": "b"}, example_inputs=square)


def test_a_zero_length_sequence_is_an_error_before_anything_runs():
    from tiny_models import ObjectOutputs

    torch.manual_seed(0)
    model = ObjectOutputs()
    x = (torch.randn(3, 4, 3), torch.randn(3, 6, 4))
    sites = {
        "text": Site("text", index="last_hidden_state"),
        "image": Site("image", index="last_hidden_state"),
    }
    handle = pp.inject(model, sites=sites, example_inputs=x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="zero-length sequence"):
        model(torch.randn(3, 0, 3), torch.randn(3, 6, 4))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    handle.remove()


# ---------------------------------------------------------------------- checkpoints
# dynamo wraps the tensors a root hook's separate frame reads; torch hides this warning itself
# unless warnings are errors, as in this suite
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_checkpoints_load_into_a_bf16_or_compiled_host(tmp_path):
    model, handle = injected()
    pp.save(handle, tmp_path / "c")
    x = inputs()
    expected = model(*x)
    bf16 = host().to(torch.bfloat16)
    h = pp.load(bf16, tmp_path / "c")
    assert next(h.block.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(
        bf16(*[t.bfloat16() for t in x]).float(), expected, rtol=0.05, atol=0.05
    )
    compiled = torch.compile(host(), backend="eager")
    h = pp.load(compiled, tmp_path / "c")
    torch.testing.assert_close(compiled(*x), expected)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda m: m["config"].update(rho=0.9), CheckpointError, "differ from what was saved"),
        (
            lambda m: m.update(
                sites=dict(zip(m["sites"], reversed(m["sites"].values()), strict=True))
            ),
            CheckpointError,
            "differ from what was saved",
        ),
        (lambda m: m.pop("resolved"), CheckpointError, "no field 'resolved'"),
        (lambda m: m.update(sites=["text"]), CheckpointError, "field 'sites' is a list"),
    ],
)
def test_an_edited_or_malformed_config_is_refused(tmp_path, edit, error, match):
    _model, handle = injected()
    pp.save(handle, tmp_path)
    path = tmp_path / "pgm_config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    fresh = host()
    with pytest.raises(error, match=match):
        pp.load(fresh, tmp_path)
    assert not hasattr(fresh, "pgm_block")


def test_a_file_as_the_checkpoint_path_is_a_checkpoint_error(tmp_path):
    _model, handle = injected()
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        pp.save(handle, target)
    with pytest.raises(CheckpointError, match="is a file"):
        pp.load(host(), target)


def test_a_stacked_junction_is_refused_plainly():
    from torch import nn

    from pgm_plugins import Junction

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)
            self.mix = nn.Identity()
            self.out = nn.Linear(4, 1)

        def forward(self, x, y):  # MISA's transformer input: [n_modalities, B, d]
            return self.out(self.mix(torch.stack([self.a(x), self.b(y)])).mean(0))

    model = Stack()
    x = (torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(SiteError, match="stacks are not supported"):
        pp.inject(model, junction=Junction("mix", widths={"a": 4, "b": 4}), example_inputs=x)
    assert not hasattr(model, "pgm_block")
