"""Behaviour of the PgM block: shapes, identity at init, shares, gradients, groups, ablations."""

from __future__ import annotations

import pytest
import torch

from pgm_plugins import PgMBlock, PgMConfig
from pgm_plugins.block.optim import GradientScale, scale_grad
from pgm_plugins.errors import InputError, UnknownNameError

WIDTHS = {"text": 12, "audio": 7, "video": 5}


def make_inputs(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "text": torch.randn(batch, 6, 12, generator=g),  # sequence
        "audio": torch.randn(batch, 7, generator=g),  # vector
        "video": torch.randn(batch, 3, 5, generator=g),  # sequence, other length
    }


def build(**overrides) -> PgMBlock:
    torch.manual_seed(0)
    kwargs = {"modalities": WIDTHS, "task": "classification", "num_classes": 3} | overrides
    return PgMBlock(PgMConfig(**kwargs))


TARGETS = torch.tensor([0, 1, 2, 1])
VARIANTS = [
    pytest.param({"partitioner": p, "paired": q, "mix": x}, id=f"{p}-{q}-{x}")
    for p in ("gate", "split", "project")
    for q in ("attention", "shared")
    for x in ("gate", "replace")
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_for_vectors_and_sequences_of_mixed_widths(variant):
    block = build(**variant)
    x = make_inputs()
    out = block(x)
    for m, h in x.items():
        assert out.outputs[m].shape == h.shape
        assert out.parts[m].uni_learned.shape == (4, h.shape[1] if h.dim() == 3 else 1, 64)
        assert out.shares[m].dim() == 0
    assert set(out.logits) == {"uni.text", "uni.audio", "uni.video", "paired"}
    assert out.logits["paired"].shape == (4, 3)
    assert torch.isfinite(out.aux_loss(TARGETS))


@pytest.mark.parametrize("partitioner", ["gate", "split", "project"])
def test_gate_mix_is_identity_at_initialisation(partitioner):
    block = build(partitioner=partitioner, mix="gate")
    x = make_inputs()
    out = block(x)
    for m in x:
        torch.testing.assert_close(out.outputs[m], x[m], rtol=0, atol=0)


def test_replace_mix_changes_the_representation():
    block = build(mix="replace")
    x = make_inputs()
    out = block(x)
    assert not torch.allclose(out.outputs["text"], x["text"])
    torch.testing.assert_close(out.outputs["text"], out.parts["text"].rebuilt)


def test_split_realises_rho_exactly_per_modality():
    block = build(partitioner="split", rho={"text": 0.25, "audio": 3 / 7, "video": 0.6})
    out = block(make_inputs())
    assert out.parts["text"].uni.shape[-1] == 3 and out.parts["text"].paired.shape[-1] == 9
    assert out.parts["audio"].uni.shape[-1] == 3
    assert out.share_values()["text"] == pytest.approx(0.25)
    assert out.share_values()["video"] == pytest.approx(0.6)
    # the uni part is exactly the first dims of h (no learned transform before the learner)
    x = make_inputs()
    torch.testing.assert_close(block(x).parts["text"].uni, x["text"][..., :3])


def test_project_partitioner_widths_follow_rho():
    block = build(partitioner="project", rho=0.25)
    out = block(make_inputs())
    assert out.parts["text"].uni.shape[-1] == 3
    assert out.parts["text"].paired.shape[-1] == 9
    assert "orth.text" in out.losses


def test_gate_share_loss_moves_mean_gate_toward_rho():
    block = build(rho=0.8, task="none", num_classes=None, lambda_rec=0.0)
    for part in block.partitioners.values():  # start away from the target
        torch.nn.init.zeros_(part.gate.bias)
    x = make_inputs(batch=16)
    before = block(x).share_values()
    opt = torch.optim.Adam(block.partitioners.parameters(), lr=0.05)
    for _ in range(100):
        loss = sum(v for k, v in block(x).losses.items() if k.startswith("rho."))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = block(x).share_values()
    for m in WIDTHS:
        assert abs(after[m] - 0.8) < 0.1 * abs(before[m] - 0.8), (m, before[m], after[m])


def test_gradients_reach_every_learning_parameter():
    block = build(mix="replace")
    out = block(make_inputs())
    out.aux_loss(TARGETS).backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_task_none_has_no_heads_and_every_parameter_learns_without_labels():
    block = build(task="none", num_classes=None, mix="replace", paired="shared")
    assert len(block.uni_heads) == 0 and block.paired_head is None
    out = block(make_inputs())
    assert out.logits == {}
    out.aux_loss().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None]
    assert missing == []
    with pytest.raises(InputError, match="task is 'none'"):
        out.aux_loss(TARGETS)


def test_no_gradient_reaches_heads_through_label_free_terms():
    block = build()
    block(make_inputs()).aux_loss().backward()  # no targets: heads must not learn
    heads = [p for p in block.uni_heads.parameters()] + list(block.paired_head.parameters())
    assert all(p.grad is None for p in heads)


def test_param_groups_cover_each_trainable_parameter_exactly_once():
    block = build(lr_mult={"*.paired": 2.0, "text.uni": 0.5, "decoder": 3.0})
    groups = block.param_groups(base_lr=1e-3, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in block.parameters()}
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["text.paired"] == pytest.approx(2e-3) and lrs["audio.paired"] == pytest.approx(2e-3)
    assert lrs["text.uni"] == pytest.approx(5e-4) and lrs["audio.uni"] == pytest.approx(1e-3)
    assert lrs["decoder"] == pytest.approx(3e-3)
    assert all(g["weight_decay"] == 0.01 for g in groups)
    torch.optim.AdamW(groups)  # a real optimizer accepts them


def test_param_groups_skip_frozen_parameters():
    block = build()
    for p in block.decoders.parameters():
        p.requires_grad_(False)
    names = {g["name"] for g in block.param_groups(1e-3)}
    assert "decoder" not in names


@pytest.mark.parametrize("factor", [0.25, 3.0, 0.0])
def test_scale_grad_multiplies_the_gradient(factor):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    (x * w).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    y = scale_grad(x, factor)
    torch.testing.assert_close(y, x)  # identity forward
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, plain * factor)
    assert GradientScale(factor)(x).shape == x.shape


@pytest.mark.parametrize("partitioner", ["split", "project", "gate"])
def test_block_grad_scale_reaches_the_host_per_branch(partitioner):
    x = make_inputs()

    def host_grads(kappas: dict[str, float], signal: str) -> torch.Tensor:
        block = build(partitioner=partitioner, mix="replace", lambda_rec=0.0, grad_scale=kappas)
        h = x["audio"].clone().requires_grad_(True)
        out = block({**x, "audio": h})
        if signal == "uni":
            out.logits["uni.audio"].sum().backward()  # reaches h only through the uni branch
        else:
            out.parts["audio"].paired.sum().backward()  # only through the paired branch
        return h.grad

    for part, other in (("uni", "paired"), ("paired", "uni")):
        plain = host_grads({}, part)
        assert plain.abs().sum() > 0
        if partitioner == "gate":  # the gate itself reads h unscaled: compare differences
            torch.testing.assert_close(host_grads({f"audio.{other}": 7.0}, part), plain)
            continue
        torch.testing.assert_close(host_grads({f"audio.{part}": 0.5}, part), 0.5 * plain)
        torch.testing.assert_close(host_grads({f"audio.{part}": 0.0}, part), 0.0 * plain)
        torch.testing.assert_close(host_grads({f"audio.{other}": 7.0}, part), plain)


def test_same_seed_same_outputs():
    x = make_inputs()
    a, b = build(mix="replace")(x), build(mix="replace")(x)
    for m in x:
        torch.testing.assert_close(a.outputs[m], b.outputs[m], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("switch", "removed"),
    [
        ("uni_learner", "uni_learners"),
        ("paired_learner", "paired_learner"),
        ("decoder", "decoders"),
    ],
)
def test_ablation_switches_remove_what_they_name(switch, removed):
    full, ablated = build(mix="replace"), build(mix="replace", **{switch: False})
    assert len(list(getattr(full, removed).parameters())) > 0
    module = getattr(ablated, removed)
    assert module is None or len(module) == 0
    out = ablated(make_inputs())
    out.aux_loss(TARGETS).backward()
    if switch == "decoder":
        x = make_inputs()
        assert all(torch.equal(ablated(x).outputs[m], x[m]) for m in x)
        assert not any(k.startswith("rec.") for k in out.losses)


def test_one_learning_rate_ablation():
    block = build(separate_lrs=False, lr_mult={"*.paired": 5.0}, grad_scale={"*": 0.0})
    assert {g["lr"] for g in block.param_groups(1e-3)} == {1e-3}
    assert block.config.kappa("text", "uni") == 1.0


def test_attention_with_one_modality_skips_the_paired_path():
    block = build(paired="attention")
    out = block({"text": make_inputs()["text"]})
    assert out.paired_skipped
    assert out.parts["text"].paired_learned is None
    assert "paired" not in out.logits
    out.aux_loss(TARGETS).backward()


def test_missing_modality_subset_works_and_keeps_config_order():
    block = build(paired="shared")
    x = make_inputs()
    out = block({"video": x["video"], "text": x["text"]})
    assert list(out.outputs) == ["text", "video"]
    assert "align" in out.losses and "paired" in out.logits


def test_bad_inputs_are_clear_errors():
    block = build()
    x = make_inputs()
    with pytest.raises(UnknownNameError, match=r"'txt' is not in the block's config.*'text'"):
        block({"txt": x["text"]})
    with pytest.raises(InputError, match=r"'audio' has width 9.*config says 7"):
        block({**x, "audio": torch.randn(4, 9)})
    bad = x["video"].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="'video' holds NaN"):
        block({**x, "video": bad})
    with pytest.raises(InputError, match=r"expected \[B, d\] or \[B, T, d\]"):
        block({"audio": torch.randn(7)})
    with pytest.raises(InputError, match="batch size"):
        block({**x, "audio": torch.randn(5, 7)})
    out = block(x)
    with pytest.raises(InputError, match=r"integer class ids of shape \(4,\)"):
        out.aux_loss(torch.zeros(4, 3))
    with pytest.raises(InputError, match=r"valid class ids are 0..2"):
        out.aux_loss(torch.tensor([0, 1, 5, 1]))
    reg = build(task="regression", num_classes=None)(x)
    with pytest.raises(InputError, match=r"expected \(4,\) or \(4, 1\)"):
        reg.aux_loss(torch.zeros(4, 2))
