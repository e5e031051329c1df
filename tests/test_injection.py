"""One table of tiny hosts x site configurations, run through the same checks."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from tiny_models import CASES, Case, EarlyRead

import pgm_plugins as pp
from pgm_plugins.errors import (
    CheckpointError,
    ConfigError,
    InjectionError,
    SiteError,
    UnknownNameError,
)
from pgm_plugins.injection.site import (
    attach_hook,
    from_block,
    get_element,
    set_element,
    to_block,
)
from pgm_plugins.toy import LateFusion

PARAMS = [pytest.param(c, id=c.id) for c in CASES]


def inject(case: Case, model: torch.nn.Module, inputs=None, **config) -> pp.PgMHandle:
    cfg = {"dropout": 0.0, **case.config, **config}
    return pp.inject(
        model,
        sites=case.sites,
        junction=case.junction,
        config=cfg,
        example_inputs=case.inputs if inputs is None else inputs,
    )


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def hooks_of(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("case", PARAMS)
def test_identity_at_initialisation(case):
    model = case.factory()
    ref = model(*case.inputs)
    inject(case, model, mix="gate")
    torch.testing.assert_close(model(*case.inputs), ref, rtol=0, atol=0)


@pytest.mark.parametrize("case", PARAMS)
def test_block_output_reaches_host_output_and_gradients_flow(case):
    model = case.factory()
    ref = model(*case.inputs)
    handle = inject(case, model, mix="replace", task="none")
    out = model(*case.inputs)
    assert not torch.allclose(out, ref)
    (out.square().mean() + handle.aux_loss()).backward()
    block_ids = {id(p) for p in handle.block.parameters()}
    host = [p for p in model.parameters() if id(p) not in block_ids]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in handle.block.parameters())
    assert all(p.grad is not None for p in host)


@pytest.mark.parametrize("case", PARAMS)
def test_remove_restores_outputs_state_dict_and_hooks(case):
    model = case.factory()
    ref, state, n_hooks = model(*case.inputs), snapshot(model), hooks_of(model)
    handle = inject(case, model, mix="replace")
    assert "pgm_block" in dict(model.named_children())
    assert not torch.equal(model(*case.inputs), ref)
    handle.remove()
    assert torch.equal(model(*case.inputs), ref)
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert hooks_of(model) == n_hooks
    with pytest.raises(InjectionError, match="removed"):
        handle.aux_loss()


def test_handle_as_context_manager_removes_the_block():
    model = LateFusion()
    x = (torch.randn(2, 16), torch.randn(2, 8))
    ref = model(*x)
    with pp.inject(model, "toy.late_fusion", config={"mix": "replace"}) as handle:
        assert not torch.equal(model(*x), ref)
    assert handle.removed and torch.equal(model(*x), ref)


@pytest.mark.parametrize("case", PARAMS)
def test_disable_and_enable(case):
    model = case.factory()
    ref = model(*case.inputs)
    handle = inject(case, model, mix="replace")
    changed = model(*case.inputs)
    handle.disable()
    assert torch.equal(model(*case.inputs), ref)
    handle.enable()
    assert torch.equal(model(*case.inputs), changed)


@pytest.mark.parametrize("case", PARAMS)
def test_save_fresh_model_load_gives_identical_outputs(case, tmp_path):
    model = case.factory()
    handle = inject(case, model, mix="replace")
    with torch.no_grad():  # make the saved block differ from a freshly built one
        for p in handle.block.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = model(*case.inputs)
    pp.save(handle, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pgm_block.safetensors",
        "pgm_config.json",
    ]
    fresh = case.factory()
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(*case.inputs), expected, rtol=0, atol=0)


def on_each_site(plan, fn):
    """Hook ``fn(key, tensor in block layout) -> replacement | None`` at every site of ``plan``,
    on the call the site names; returns the hook handles."""
    hooks = []
    for key, rs in plan.sites.items():
        calls = {"n": 0}

        def hook(value, key=key, rs=rs, calls=calls):
            calls["n"] += 1
            if rs.site.call is not None and calls["n"] - 1 != rs.site.call:
                return None
            layout = rs.layout or "BD"
            new = fn(key, to_block(get_element(value, rs.site.element), layout))
            return (
                None
                if new is None
                else set_element(value, rs.site.element, from_block(new, layout))
            )

        hooks.append(attach_hook(rs.module, rs.site, hook))
    return hooks


@pytest.mark.parametrize("case", PARAMS)
def test_joint_mode_equals_running_the_block_by_hand(case):
    model = case.factory()
    handle = inject(case, model, mix="replace")
    patched = model(*case.inputs)
    plan = handle.plan
    handle.remove()
    # capture the host's tensors at the sites, run the block by hand, put its results back
    captured: dict[str, torch.Tensor] = {}
    hooks = on_each_site(plan, lambda key, x: captured.__setitem__(key, x))
    model(*case.inputs)
    for h in hooks:
        h.remove()
    if case.junction is not None:
        (x,) = captured.values()
        widths = case.junction.widths
        parts = dict(zip(widths, x.split(list(widths.values()), -1), strict=True))
        results = {next(iter(plan.sites)): torch.cat(list(plan.block(parts).outputs.values()), -1)}
    else:
        results = plan.block(captured).outputs
    on_each_site(plan, lambda key, x: results[key])
    torch.testing.assert_close(model(*case.inputs), patched)


@pytest.mark.parametrize("case", PARAMS)
def test_gradcheck_float64_through_the_hooks(case):
    model = case.factory().double()
    inputs = tuple(x.double()[:2].requires_grad_(True) for x in case.inputs)
    if case.id == "tuple-seq-first":  # sequence-first: batch is dim 1
        inputs = tuple(x.double()[:, :2].requires_grad_(True) for x in case.inputs)
    inject(
        case,
        model,
        inputs,
        mix="replace",
        uni_width=4,
        paired_width=4,
        heads=2,
        decoder_width=4,
        task="none",
        check_finite=False,
    )
    assert torch.autograd.gradcheck(lambda *xs: model(*xs), inputs, eps=1e-6, atol=1e-5)


def test_joint_mode_refuses_a_host_that_reads_an_early_modality():
    torch.manual_seed(0)
    model = EarlyRead()
    state, inputs = snapshot(model), (torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(InjectionError, match=r"reads an earlier modality.*mul read 'a'"):
        pp.inject(model, sites={"a": "enc_a", "b": "enc_b"}, example_inputs=inputs)
    assert "pgm_block" not in dict(model.named_children()) and hooks_of(model) == 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # without example inputs the check runs on the first forward, which removes the block
    handle = pp.inject(model, sites={"a": "enc_a", "b": "enc_b"})
    assert handle.plan.read_check == "on the first forward"
    with pytest.raises(InjectionError, match="the PgM block was removed"):
        model(*inputs)
    assert handle.removed and hooks_of(model) == 0


def test_joint_mode_refuses_a_host_that_changes_an_early_modality_in_place():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_a, self.enc_b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)

        def forward(self, a, b):
            ha = self.enc_a(a)
            ha.relu_()
            return torch.cat([ha, self.enc_b(b)], -1).sum(-1)

    inputs = (torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(InjectionError, match=r"relu_ changed 'a' .* in place"):
        pp.inject(InPlace(), sites={"a": "enc_a", "b": "enc_b"}, example_inputs=inputs)


def test_missing_modality_in_joint_mode_leaves_host_output_and_reports():
    torch.manual_seed(0)

    class Maybe(LateFusion):
        def forward(self, text, audio=None):  # audio may be absent
            h = self.encoders["text"](text)
            ha = self.encoders["audio"](audio) if audio is not None else torch.zeros_like(h)
            return self.fusion(torch.cat([h, ha], -1)).squeeze(-1)

    model = Maybe()
    x = torch.randn(3, 16)
    ref = model(x)
    handle = pp.inject(model, "toy.late_fusion", config={"mix": "replace"})
    with pytest.warns(RuntimeWarning, match=r"did not run in this forward"):
        assert torch.equal(model(x), ref)
    assert handle.stats()["complete"] is False
    assert set(handle.stats()["shares"]) == {"text"}
    handle.aux_loss(torch.zeros(3)).backward()


def test_independent_mode_runs_each_modality_at_once_and_aligns_across_calls():
    torch.manual_seed(0)
    model = LateFusion()
    handle = pp.inject(
        model,
        "toy.late_fusion",
        mode="independent",
        config={"paired": "shared", "mix": "replace", "task": "none"},
    )
    model.encoders["text"](torch.randn(4, 16))  # separate calls, like CLIP's get_*_features
    model.encoders["audio"](torch.randn(4, 8))
    assert "align" in handle.loss_terms()
    handle.aux_loss().backward()
    with pytest.raises(InjectionError, match="needs paired='shared'"):
        pp.plan(LateFusion(), "toy.late_fusion", mode="independent")


def test_plan_is_printable_and_changes_nothing():
    model = LateFusion()
    state, n_hooks = snapshot(model), hooks_of(model)
    inputs = (torch.randn(2, 16), torch.randn(2, 8))
    p = pp.plan(model, "toy.late_fusion", example_inputs=inputs)
    text = str(p)
    assert "encoders.text" in text and "32" in text and "dry run" in text
    assert f"{p.block_parameters:,} parameters" in text
    assert hooks_of(model) == n_hooks and "pgm_block" not in dict(model.named_children())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    handle = p.apply()  # what inject executes
    assert handle.block is p.block


def test_param_groups_cover_host_and_block_once():
    model = LateFusion()
    handle = pp.inject(model, "toy.late_fusion", config={"lr_mult": {"*.paired": 2}})
    groups = handle.param_groups(1e-3, host_lr=1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name["host"] == 1e-4 and by_name["text.paired"] == 2e-3
    torch.optim.Adam(groups)


def test_list_layers_with_dry_run():
    model = LateFusion()
    layers = pp.list_layers(
        model, "encoders.*", example_inputs=(torch.randn(2, 16), torch.randn(2, 8))
    )
    info = {i.name: i for i in layers}
    assert info["encoders.text"].output_shapes == [(2, 32)]
    assert info["encoders.text"].calls == 1
    assert "fusion" not in info


# ---------------------------------------------------------------------- bad input
@contextlib.contextmanager
def refused(model, error, match):
    """The call raises ``error`` matching ``match`` and leaves ``model`` exactly as it was:
    same state_dict (keys and values), same hooks, same children, same outputs."""
    state, n_hooks = snapshot(model), hooks_of(model)
    children = list(dict(model.named_children()))
    inputs = (torch.randn(2, 16), torch.randn(2, 8)) if isinstance(model, LateFusion) else None
    before = model(*inputs) if inputs is not None else None
    with pytest.raises(error, match=match) as info:
        yield info
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert hooks_of(model) == n_hooks
    assert list(dict(model.named_children())) == children
    if inputs is not None:
        assert torch.equal(model(*inputs), before)


def test_unknown_adapter_names_nearest_and_list():
    model = LateFusion()
    match = r"unknown adapter 'toy.late_fusoin'.*Did you mean 'toy.late_fusion'.*Registered:"
    with refused(model, UnknownNameError, match):
        pp.inject(model, "toy.late_fusoin")


def test_every_mismatched_site_is_named_with_near_misses():
    model = LateFusion()
    with refused(model, SiteError, "2 of 3 sites") as err:
        pp.inject(
            model,
            sites={"text": "encoder.text", "audio": "encoders.audoi", "video": "encoders.audio"},
        )
    msg = str(err.value)
    assert "'encoder.text' not found (near: 'encoders.text'" in msg
    assert "'encoders.audoi' not found (near: 'encoders.audio'" in msg


INPUTS = (torch.randn(2, 16), torch.randn(2, 8))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {
                "sites": {
                    "text": pp.Site("encoders.text", layout="BTD"),
                    "audio": "encoders.audio",
                },
                "example_inputs": INPUTS,
            },
            SiteError,
            r"layout 'BTD' expects a 3-D tensor.*shape \(2, 32\)",
        ),
        (
            {
                "sites": {"text": pp.Site("encoders.text", dim=30), "audio": "encoders.audio"},
                "example_inputs": INPUTS,
            },
            SiteError,
            r"dim=30 but the dry run says 32",
        ),
        (
            {
                "sites": {"text": pp.Site("encoders.text", index=1), "audio": "encoders.audio"},
                "example_inputs": INPUTS,
            },
            SiteError,
            r"encoders.text\[1\]: no element 1 .*not a container; leave index=None",
        ),
        (
            {
                "adapter": "toy.late_fusion",
                "config": pp.PgMConfig(modalities={"text": 16, "audio": 32}),
            },
            InjectionError,
            "do not match the sites' widths",
        ),
        (
            {"adapter": "toy.late_fusion", "config": {"partitioner": "gatee"}},
            ConfigError,
            "Did you mean 'gate'",
        ),
        (
            {"adapter": "toy.late_fusion", "config": {"rho_target": 0.3}},
            ConfigError,
            r"unknown PgMConfig field.*valid fields: modalities",
        ),
        (
            {"sites": {"text": "encoders.text.1", "audio": "encoders.audio"}},
            SiteError,
            r"width .* is unknown; pass example_inputs=",
        ),
        (
            {"adapter": "toy.late_fusion", "mode": "paired"},
            InjectionError,
            r"mode='paired' is not valid",
        ),
    ],
    ids=[
        "layout",
        "dim",
        "element",
        "config-widths",
        "config-kind",
        "config-field",
        "no-width",
        "mode",
    ],
)
def test_bad_injections_are_clear_errors_and_change_nothing(kwargs, error, match):
    model = LateFusion()
    with refused(model, error, match):
        pp.inject(model, **kwargs)


def test_a_second_block_is_refused():
    model = LateFusion()
    pp.inject(model, "toy.late_fusion")
    with refused(model, InjectionError, "already has an attribute 'pgm_block'"):
        pp.inject(model, "toy.late_fusion")


def test_checkpoint_for_another_host_or_corrupted_is_refused(tmp_path):
    model = LateFusion()
    handle = pp.inject(model, "toy.late_fusion")
    pp.save(handle, tmp_path)
    other = LateFusion(hidden=16)
    with refused(other, CheckpointError, "architecture fingerprint"):
        pp.load(other, tmp_path)
    data = bytearray((tmp_path / "pgm_block.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "pgm_block.safetensors").write_bytes(bytes(data))
    fresh = LateFusion()
    with refused(fresh, CheckpointError, "differ from what was saved"):
        pp.load(fresh, tmp_path)
    (tmp_path / "pgm_config.json").write_text("{not json")
    with refused(fresh, CheckpointError, "not valid JSON"):
        pp.load(fresh, tmp_path)
    (tmp_path / "pgm_config.json").unlink()
    with refused(fresh, CheckpointError, r"pgm_config.json is missing"):
        pp.load(fresh, tmp_path)


def test_checkpoint_has_no_pickle_and_records_provenance(tmp_path):
    handle = pp.inject(LateFusion(), sites={"text": "encoders.text", "audio": "encoders.audio"})
    pp.save(handle, tmp_path)
    meta = json.loads((tmp_path / "pgm_config.json").read_text())
    assert meta["sites"] == {"text": "encoders.text", "audio": "encoders.audio"}
    assert meta["pgm_plugins_version"] == pp.__version__
    assert len(meta["host"]["fingerprint"]) == 16
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "pgm_block.safetensors")
    assert set(keys) == set(handle.block.state_dict())


def test_inject_without_sites_recognises_the_model_through_the_registry():
    model = LateFusion()
    handle = pp.inject(model)
    assert handle.plan.adapter == "toy.late_fusion"
    with pytest.raises(InjectionError, match=r"no adapter recognises Linear.*list_layers"):
        pp.inject(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: pp.Site("enc", layout="BTX"), r"layout='BTX' is not valid; choose one of 'BD'"),
        (lambda: pp.Site("enc", at="outptu"), r"at='outptu' is not valid"),
        (lambda: pp.Site(""), r"non-empty dotted module path"),
        (lambda: pp.Site("enc", call=-1), r"call=-1 must be an int >= 0"),
        (lambda: pp.Junction("mix", widths={"a": 3}), r"two or more modalities"),
    ],
)
def test_bad_sites_are_clear_errors(make, match):
    with pytest.raises(InjectionError, match=match):
        make()


def test_junction_widths_must_sum_to_the_tensor():
    from tiny_models import Concat

    model = Concat()
    with pytest.raises(SiteError, match=r"the tensor is 11 wide but the widths .* sum to 12"):
        pp.inject(
            model,
            junction=pp.Junction("mix", widths={"a": 5, "b": 7}),
            example_inputs=(torch.randn(2, 3), torch.randn(2, 4)),
        )
