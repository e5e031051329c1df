"""Every MMSA host at MOSI's widths and at the real data's: recognised, identity at
initialisation, a training step with the host's own losses, removal, checkpoints, joint check."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from pgm_mmsa.hosts import (
    DATA_WIDTHS,
    MOSI_WIDTHS,
    build_host,
    example_inputs,
    host_info,
    host_parts,
    labels_like,
)
from pgm_mmsa.recipes import HostTrainer, host_param_groups
from torch import Tensor, nn

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError

KINDS = ["mult", "misa", "self_mm", "tfn", "lmf", "mmim"]
WIDTHS = {"mosi": MOSI_WIDTHS, "data": DATA_WIDTHS}
#: the order in which each host produces its modalities (HOSTS.md), as default-site layers
ARRIVAL = {
    "mult": ("Model.proj_l", "Model.proj_a"),
    "misa": ("Model.project_t", "Model.project_v"),
    "self_mm": ("Model.text_model", "Model.audio_model"),
    "tfn": ("Model.audio_subnet", "Model.video_subnet"),
    "lmf": ("Model.audio_subnet", "Model.video_subnet"),
    "mmim": ("Model.bertmodel", "Model.acoustic_enc"),
}
SEQ = 4
BATCH = 6


def build(kind: str, widths: str, **kw: Any) -> nn.Module:
    torch.manual_seed(0)
    return build_host(kind, widths=WIDTHS[widths], seq_len=SEQ, **kw)


def inputs(kind: str, widths: str) -> tuple[Any, ...]:
    return example_inputs(kind, WIDTHS[widths], seq_len=SEQ, batch=BATCH)


def prediction(model: nn.Module, x: Any) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(*x)["M"].clone()


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def perturb(block: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def early_reader(model: nn.Module, first: str, second: str) -> None:
    """Make ``model`` a host variant that reads its first modality early: the layer producing
    the second modality first reads the tensor the host received from the first one.

    The stash hook is re-registered at every forward so that it runs after any hook put on
    ``first`` since (an injected block's), and so sees what the host sees."""
    mods = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    state: dict[str, Any] = {"hook": None}

    def stash(mod: nn.Module, args: Any, out: Any) -> None:
        seen["t"] = out if isinstance(out, Tensor) else out[0]

    def read(mod: nn.Module, args: Any) -> None:
        if "t" in seen:
            seen["t"].sum()

    def begin(mod: nn.Module, args: Any) -> None:
        seen.clear()
        if state["hook"] is not None:
            state["hook"].remove()
        state["hook"] = mods[first].register_forward_hook(stash)

    model.register_forward_pre_hook(begin)
    mods[second].register_forward_pre_hook(read)


CASES = [(k, w) for k in KINDS for w in WIDTHS]


@pytest.mark.parametrize(("kind", "widths"), CASES)
def test_inject_identity_step_remove(kind, widths):
    model = build(kind, widths)
    x = inputs(kind, widths)
    ref = prediction(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = pp.inject(model, example_inputs=x)  # no adapter, no sites: recognised
    assert handle.plan.adapter == f"mmsa.{kind}"
    assert set(handle.block.config.modalities) == {"text", "audio", "vision"}
    torch.testing.assert_close(prediction(model, x), ref, rtol=0, atol=0)

    block_before = {k: v.clone() for k, v in handle.block.state_dict().items()}
    trainer = HostTrainer(model, handle)
    terms = trainer.step(x, labels_like(BATCH), torch.arange(BATCH))
    assert "pgm" in terms and "task" in terms
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    expected_aux = {"misa": {"diff", "sim", "recon"}, "mmim": {"nce", "lld"}}.get(kind, set())
    expected_aux |= {"uni_text", "uni_audio", "uni_vision"} if kind == "self_mm" else set()
    assert expected_aux <= set(terms)
    changed = [
        k for k, v in handle.block.state_dict().items() if not torch.equal(v, block_before[k])
    ]
    assert changed, "one step changed no block tensor"
    assert any("decoder" in k or "beta" in k for k in changed)

    handle.remove()
    assert not hasattr(model, "pgm_block")
    assert hooks_left(model) == 0
    assert set(model.state_dict()) == set(state)


@pytest.mark.parametrize(("kind", "widths"), CASES)
def test_remove_restores_and_checkpoint_round_trip(kind, widths, tmp_path):
    model = build(kind, widths)
    x = inputs(kind, widths)
    ref = prediction(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = pp.inject(model, example_inputs=x)
    perturb(handle.block)
    changed = prediction(model, x)
    assert not torch.equal(changed, ref), "a perturbed block left the host's output unchanged"
    pp.save(handle, tmp_path)
    handle.remove()
    torch.testing.assert_close(prediction(model, x), ref, rtol=0, atol=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    fresh = build(kind, widths)
    loaded = pp.load(fresh, tmp_path)
    torch.testing.assert_close(prediction(fresh, x), changed, rtol=0, atol=0)
    assert loaded.plan.adapter == f"mmsa.{kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_joint_check_accepts_the_host_and_refuses_an_early_reader(kind):
    model = build(kind, "data")
    x = inputs(kind, "data")
    plan = pp.plan(model, example_inputs=x)
    assert plan.read_check == "passed in the dry run"
    early_reader(model, *ARRIVAL[kind])
    with pytest.raises(InjectionError) as err:
        pp.plan(model, example_inputs=x)
    assert "joint mode" in str(err.value)
    assert not hasattr(model, "pgm_block")


@pytest.mark.parametrize("kind", KINDS)
def test_bare_network_uses_the_same_adapter(kind):
    model = build(kind, "data", wrap=False)
    x = inputs(kind, "data")
    ref = prediction(model, x)
    handle = pp.inject(model, example_inputs=x)
    assert handle.plan.adapter == f"mmsa.{kind}"
    assert not any(s.site.layer.startswith("Model.") for s in handle.plan.sites.values())
    torch.testing.assert_close(prediction(model, x), ref, rtol=0, atol=0)
    handle.remove()


@pytest.mark.parametrize("kind", KINDS)
def test_parts_cover_every_host_parameter_once_and_groups_match(kind):
    model = build(kind, "data")
    handle = pp.inject(model, example_inputs=inputs(kind, "data"))
    parts = host_parts(model)
    names = [n for part in parts.values() for n, _ in part]
    host_names = [n for n, _ in model.named_parameters() if not n.startswith("pgm_block")]
    assert sorted(names) == sorted(host_names)
    assert all(parts[m] for m in ("text", "audio", "vision"))
    grouped = [id(p) for g in host_param_groups(model) for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert not {id(p) for p in handle.block.parameters()} & set(grouped)
    info = host_info(model)
    assert info.changes and "regression" in info.description
    handle.remove()


def test_mult_mem_variant_reads_sequence_first_memories():
    model = build("mult", "data")
    x = inputs("mult", "data")
    ref = prediction(model, x)
    handle = pp.inject(model, "mmsa.mult.mem", example_inputs=x)
    assert {s.layout for s in handle.plan.sites.values()} == {"TBD"}
    torch.testing.assert_close(prediction(model, x), ref, rtol=0, atol=0)
    model.train()
    out = model(*x)
    loss = out["M"].sum() + handle.aux_loss(labels_like(BATCH))
    loss.backward()
    assert all(p.grad is not None for p in handle.block.parameters() if p.requires_grad)
    handle.remove()


def test_misa_private_variant():
    model = build("misa", "data")
    x = inputs("misa", "data")
    ref = prediction(model, x)
    with pp.inject(model, "mmsa.misa.private", example_inputs=x):
        torch.testing.assert_close(prediction(model, x), ref, rtol=0, atol=0)
    assert hooks_left(model) == 0


def test_misa_refuses_a_one_sample_training_batch_and_changes_nothing():
    model = build("misa", "data")
    trainer = HostTrainer(model, train_samples=BATCH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = tuple(t[:1] if isinstance(t, torch.Tensor) else t for t in inputs("misa", "data"))
    with pytest.raises(ValueError, match=r"at least 2 samples per batch; got 1.*drop_last"):
        trainer.step(one, labels_like(1))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.batches == 0


def test_self_mm_generates_unimodal_labels_from_binary_ones():
    model = build("self_mm", "data")
    trainer = HostTrainer(model, train_samples=BATCH)
    x, y = inputs("self_mm", "data"), labels_like(BATCH)
    first = trainer.step(x, y, torch.arange(BATCH))
    assert first["uni_text"] == 0.0  # epoch 1: uni-modal labels equal the fusion labels
    trainer.next_epoch()
    trainer.step(x, y, torch.arange(BATCH))
    labels = trainer._selfmm
    assert torch.equal(labels["label_fusion"], y)
    moved = [m for m in ("text", "audio", "vision") if not torch.equal(labels[f"label_{m}"], y)]
    assert moved, "epoch 2 generated no uni-modal label"


def _padded(kind: str, extra: int = 0, garbage: bool = False) -> tuple[Any, ...]:
    """Windows with 1..SEQ real steps; padding zero (or garbage), ``extra`` more of it."""
    from pgm_mmsa.hosts import host_inputs

    g = torch.Generator().manual_seed(3)
    x = {m: torch.randn(BATCH, SEQ, DATA_WIDTHS[m], generator=g) for m in DATA_WIDTHS}
    lengths = torch.tensor([SEQ, SEQ - 1, 2, 1, SEQ, 3])[:BATCH]
    real = torch.arange(SEQ + extra)[None, :] < lengths[:, None]
    noise = torch.Generator().manual_seed(4)
    for m in x:
        x[m] = torch.cat([x[m], torch.zeros(BATCH, extra, x[m].shape[2])], dim=1)
        fill = torch.randn(x[m].shape, generator=noise) * 5 if garbage else torch.zeros(())
        x[m] = torch.where(real[:, :, None], x[m], fill)
    return host_inputs(kind, x["text"], x["audio"], x["vision"], lengths)


@pytest.mark.parametrize(
    "adapter", ["mmsa.self_mm", "mmsa.self_mm.cls", "mmsa.mmim", "mmsa.mmim.cls"]
)
def test_padding_does_not_change_the_prediction(adapter):
    kind = adapter.split(".")[1]
    model = build(kind, "data")
    x = _padded(kind)
    handle = pp.inject(model, adapter, example_inputs=x)
    perturb(handle.block)  # an active block, not the identity
    ref = prediction(model, x)
    torch.testing.assert_close(prediction(model, _padded(kind, garbage=True)), ref)
    torch.testing.assert_close(prediction(model, _padded(kind, extra=3)), ref)
    handle.remove()
    # the same block without the mask sees the padding: the check above is not vacuous
    if not adapter.endswith(".cls"):
        sites = pp.get_adapter(adapter).sites_for(model)
        sites["text"] = dataclasses.replace(sites["text"], mask=None)
        handle = pp.inject(model, adapter, sites=sites, example_inputs=x)
        perturb(handle.block)
        assert not torch.allclose(
            prediction(model, _padded(kind, garbage=True)), prediction(model, x)
        )
        handle.remove()
