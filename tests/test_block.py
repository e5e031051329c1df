"""Behaviour of the PgM block: shapes, identity at init, shares, gradients, groups, ablations."""

from __future__ import annotations

import pytest
import torch

from pgm_plugins import PgMBlock, PgMConfig
from pgm_plugins.block.optim import GradientScale, scale_grad
from pgm_plugins.errors import InputError, UnknownNameError

WIDTHS = {"text": 12, "audio": 7, "video": 5}


pytestmark = pytest.mark.usefixtures("one_thread")


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
    for p in ("gate", "split", "project", "none")
    for q in ("bilinear", "attention", "shared")
    for x in ("gate", "replace")
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_for_vectors_and_sequences_of_mixed_widths(variant):
    block = build(**variant)
    x = make_inputs()
    out = block(x)
    for m, h in x.items():
        assert out.outputs[m].shape == h.shape
        tokens = h.shape[1] if h.dim() == 3 else 1
        k_uni = block.config.part_widths(m)[0]
        assert out.parts[m].uni_learned.shape == (4, tokens, k_uni)
        assert out.shares[m].dim() == 0
    assert set(out.logits) == {"uni.text", "uni.audio", "uni.video", "paired"}
    assert out.logits["paired"].shape == (4, 3)
    assert torch.isfinite(out.aux_loss(TARGETS))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.values[0]["mix"] == "gate"])
def test_every_gate_mix_variant_is_identity_at_initialisation(variant):
    block = build(**variant)
    x = make_inputs()
    out = block(x)
    for m in x:
        assert torch.equal(out.outputs[m], x[m])


def test_replace_mix_hands_the_host_the_rebuilt_representation():
    block = build(mix="replace")
    x = make_inputs()
    out = block(x)
    assert not torch.allclose(out.outputs["text"], x["text"])
    torch.testing.assert_close(out.outputs["text"], out.parts["text"].rebuilt)
    vec = out.parts["audio"].rebuilt.squeeze(1)
    torch.testing.assert_close(out.outputs["audio"], vec)


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


def test_project_partitioner_widths_follow_rho_on_the_code():
    block = build(partitioner="project", rho=0.25, bottleneck=8)
    out = block(make_inputs())
    assert block.config.code_width("text") == 8
    assert out.parts["text"].uni.shape[-1] == 2
    assert out.parts["text"].paired.shape[-1] == 6
    assert out.share_values()["text"] == pytest.approx(0.25)
    assert "rec.text" in out.losses


def test_gate_share_is_learned_and_stays_inside_its_bounds():
    block = build(
        partitioner="gate",
        rho=0.5,
        rho_bounds=(0.25, 0.75),
        bottleneck=8,
        task="none",
        num_classes=None,
    )
    x = {"text": make_inputs(batch=16)["text"]}
    assert block(x).share_values()["text"] == 0.5  # 4 of 8 channels start uni
    part = block.partitioners["text"]
    # a loss that wants the first three code channels paired and the others uni
    want = torch.tensor([0.0, 0, 0, 1, 1, 1, 1, 1])
    for _ in range(30):  # sign-SGD by hand (an optimizer's first step imports torch._dynamo)
        p = block(x).parts["text"]
        loss = ((p.uni.pow(2).mean((0, 1)) - p.paired.pow(2).mean((0, 1))) * (0.5 - want)).sum()
        part.logits.grad = None
        loss.backward()
        with torch.no_grad():
            part.logits -= 0.1 * part.logits.grad.sign()
    gate = part.hard_gate().float()
    assert gate[:3].sum() == 0 and gate[3:].sum() == 5
    assert block(x).share_values()["text"] == 5 / 8
    with torch.no_grad():
        part.logits.fill_(5.0)
    assert block(x).share_values()["text"] == 0.75  # the upper bound: 6 of 8 channels
    with torch.no_grad():
        part.logits.fill_(-5.0)
    assert block(x).share_values()["text"] == 0.25  # the lower bound holds too


def test_gradients_reach_every_learning_parameter():
    block = build()
    with torch.no_grad():
        for dec in block.decoders.values():
            dec.beta.fill_(0.5)  # past initialisation, the mix passes gradient to the learners
    out = block(make_inputs())
    (out.aux_loss(TARGETS) + sum(o.sum() for o in out.outputs.values())).backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_task_none_has_no_heads_and_learns_without_labels():
    block = build(task="none", num_classes=None, paired="shared")
    assert len(block.uni_heads) == 0 and len(block.paired_heads) == 0
    out = block(make_inputs())
    assert out.logits == {}
    (out.aux_loss() + sum(o.sum() for o in out.outputs.values())).backward()
    assert all(p.grad is not None for p in block.partitioners.parameters())
    assert all(d.beta.grad is not None for d in block.decoders.values())
    with pytest.raises(InputError, match="task is 'none'"):
        out.aux_loss(TARGETS)


def test_no_gradient_reaches_heads_through_label_free_terms():
    block = build()
    block(make_inputs()).aux_loss().backward()  # no targets: heads must not learn
    heads = [*block.uni_heads.parameters(), *block.paired_heads.parameters(), block.paired_bias]
    assert all(p.grad is None for p in heads)


def test_param_groups_cover_each_trainable_parameter_exactly_once():
    block = build(lr_mult={"*.paired": 2.0, "text.uni": 0.5, "*.decoder": 3.0})
    groups = block.param_groups(base_lr=1e-3, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in block.parameters()}
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["text.paired"] == pytest.approx(2e-3) and lrs["audio.paired"] == pytest.approx(2e-3)
    assert lrs["text.uni"] == pytest.approx(5e-4) and lrs["audio.uni"] == pytest.approx(1e-3)
    assert lrs["audio.decoder"] == pytest.approx(3e-3) and lrs["text.partitioner"] == 1e-3
    # one group per (modality, part) for every block parameter
    assert {f"{m}.{p}" for m in WIDTHS for p in ("uni", "paired", "partitioner", "decoder")} <= set(
        lrs
    )
    assert all(g["weight_decay"] == 0.01 for g in groups)
    torch.optim.AdamW(groups)  # a real optimizer accepts them


def test_param_groups_skip_frozen_parameters():
    block = build()
    for p in block.decoders.parameters():
        p.requires_grad_(False)
    names = {g["name"] for g in block.param_groups(1e-3)}
    assert not any(n.endswith(".decoder") for n in names)


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


@pytest.mark.parametrize("partitioner", ["split", "project", "gate", "none"])
def test_block_grad_scale_scales_every_path_into_the_host(partitioner):
    x = make_inputs()

    def host_grads(kappas: dict[str, float], signal: str) -> torch.Tensor:
        block = build(partitioner=partitioner, grad_scale=kappas)
        with torch.no_grad():
            for dec in block.decoders.values():
                dec.beta.fill_(0.7)
        h = x["audio"].clone().requires_grad_(True)
        out = block({**x, "audio": h})
        if signal == "uni":  # reaches h only through the uni branch
            out.logits["uni.audio"].sum().backward()
        elif signal == "paired":  # only through the paired branch
            out.parts["audio"].paired.sum().backward()
        else:  # everything the block produces: outputs (minus the host's skip), every loss
            change = out.outputs["audio"] - h  # the host's own skip path cancels exactly
            (change.pow(2).sum() + out.aux_loss(TARGETS)).backward()
        return h.grad

    for part, other in (("uni", "paired"), ("paired", "uni")):
        plain = host_grads({}, part)
        assert plain.abs().sum() > 0
        torch.testing.assert_close(host_grads({f"audio.{part}": 0.5}, part), 0.5 * plain)
        assert torch.equal(host_grads({f"audio.{part}": 0.0}, part), torch.zeros_like(plain))
        torch.testing.assert_close(host_grads({f"audio.{other}": 7.0}, part), plain)
    # kappa = 0 on both branches: not one path from the block reaches the host
    assert torch.equal(host_grads({"audio.*": 0.0}, "all"), torch.zeros_like(x["audio"]))
    assert host_grads({}, "all").abs().sum() > 0


def test_same_seed_same_outputs():
    x = make_inputs()
    a, b = build(mix="replace")(x), build(mix="replace")(x)
    for m in x:
        torch.testing.assert_close(a.outputs[m], b.outputs[m], rtol=0, atol=0)


def test_one_learning_rate_ablation_leaves_gradient_scaling_alone():
    block = build(separate_lrs=False, lr_mult={"*.paired": 5.0}, grad_scale={"*": 0.0})
    assert {g["lr"] for g in block.param_groups(1e-3)} == {1e-3}
    assert block.config.kappa("text", "uni") == 0.0


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
