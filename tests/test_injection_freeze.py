"""Which parameters train: ``freeze_host`` on ``inject`` / ``plan(...).apply()`` and on the
handle, ``remove()`` giving back ``requires_grad`` exactly, and the trainable summary in peft's
wording."""

from __future__ import annotations

import pytest
import torch
from test_injection import refused

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError
from pgm_plugins.toy import LateFusion

pytestmark = pytest.mark.usefixtures("one_thread")

X = (torch.randn(2, 16), torch.randn(2, 8))


def grads(model: torch.nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def host_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pgm_block."))


def test_freeze_host_true_trains_the_block_alone_and_remove_gives_requires_grad_back():
    model = LateFusion()
    model.fusion[0].bias.requires_grad_(False)  # the user's own choice, kept throughout
    before = grads(model)
    handle = pp.inject(model, "toy.late_fusion", freeze_host=True)
    after = grads(model)
    assert not any(v for n, v in after.items() if not n.startswith("pgm_block."))
    assert all(v for n, v in after.items() if n.startswith("pgm_block."))
    assert "host" not in {g["name"] for g in handle.param_groups(1e-3)}
    model(*X).sum().add(handle.aux_loss(torch.zeros(2))).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("pgm"))
    handle.remove()
    assert grads(model) == before


def test_freeze_host_by_name_or_pattern_through_plan_apply():
    model = LateFusion()
    plan = pp.plan(model, "toy.late_fusion", freeze_host=["encoders.*"])
    assert all(p.requires_grad for p in model.parameters())  # a plan changes nothing
    assert "freeze_host: 4 host tensors" in str(plan)
    handle = plan.apply()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"encoders.{m}.0.{w}" for m in ("text", "audio") for w in ("weight", "bias")}
    handle.unfreeze_host()
    assert all(p.requires_grad for p in model.parameters())
    handle.freeze_host("fusion")
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "fusion.0.weight",
        "fusion.0.bias",
        "fusion.2.weight",
        "fusion.2.bias",
    }
    handle.remove()
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_host_names_matching_nothing_are_refused_with_the_nearest_module():
    model = LateFusion()
    with refused(
        model, InjectionError, r"'encoder.text' matches no module \(near: 'encoders.text'"
    ):
        pp.inject(model, "toy.late_fusion", freeze_host=["encoder.text", "fusion"])
    assert all(p.requires_grad for p in model.parameters())
    with refused(model, InjectionError, r"freeze_host=3 is not valid"):
        pp.inject(model, "toy.late_fusion", freeze_host=3)
    handle = pp.inject(model, "toy.late_fusion")
    with pytest.raises(InjectionError, match="'fusoin' matches no module"):
        handle.freeze_host("fusoin")
    assert all(p.requires_grad for p in model.parameters())


def test_trainable_summary_and_peft_style_line(capsys):
    model = LateFusion()
    handle = pp.inject(model, "toy.late_fusion", freeze_host=True)
    s = handle.trainable_summary()
    block = sum(p.numel() for p in handle.block.parameters())
    assert (s.trainable, s.block_trainable, s.host_trainable) == (block, block, 0)
    assert s.total == block + host_count(model) and s.host_total == host_count(model)
    assert s.percent == pytest.approx(100 * block / s.total)
    assert len(s.frozen_by_pgm) == 8
    handle.print_trainable_parameters()
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"trainable params: {block:,d} || all params: {s.total:,d} || trainable%: {s.percent:.4f}"
    )
    handle.unfreeze_host()
    assert handle.trainable_summary().trainable == s.total


def test_a_tied_weight_is_frozen_through_either_name():
    class Tied(LateFusion):
        def __init__(self) -> None:
            super().__init__(widths={"text": 16, "audio": 16}, hidden=16)
            self.encoders["audio"][0].weight = self.encoders["text"][0].weight

    model = Tied()
    handle = pp.inject(model, "toy.late_fusion", freeze_host="encoders.audio")
    assert not model.encoders["text"][0].weight.requires_grad  # the same tensor
    assert model.encoders["text"][0].bias.requires_grad
    handle.remove()
    assert all(p.requires_grad for p in model.parameters())


def test_a_mapping_is_not_a_list_of_modules():
    model = LateFusion({"text": 16, "audio": 8})
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(InjectionError, match=r"freeze_host=.*is not valid"):
        pp.inject(model, "toy.late_fusion", freeze_host={"encoders": True})
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert not hasattr(model, "pgm_block")
