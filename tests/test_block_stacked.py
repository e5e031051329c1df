"""The stacked path (``pgm_plugins/block/stacked.py``) computes what the per-modality path does.

Modalities of one input shape (vectors ``[B, d]`` or unmasked sequences ``[B, T, d]``) run as one
batched computation over a ``[M, B, (T,) d]`` stack; every
output, part, share, loss term, logit and gradient must match the per-modality path (forced by
clearing the block's ``_stack_group``) in float64, for every switch that changes the code path.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch

from pgm_plugins.block import PgMBlock, PgMConfig
from pgm_plugins.block.stacked import stackable
from pgm_plugins.errors import NonFiniteError

BATCH = 5
WIDTHS = {"text": 8, "audio": 8, "vision": 8}
SWITCHES: dict[str, dict[str, Any]] = {
    "plain": {},
    "gradscale": {"grad_scale": {"*.uni": 0.5, "text.paired": 0.0}},
    "replace": {"mix": "replace"},
    "no-decoder": {"decoder": False},
    "no-learners": {"uni_learner": False, "paired_learner": False},
    "classification": {"task": "classification", "num_classes": 3},
    "cmd": {"align": "cmd"},
    "no-heads": {"lambda_uni": 0.0, "lambda_paired": 0.0, "lambda_rec": 0.0},
    "pair": {"modalities": {"image": 8, "caption": 8}},  # a CLIP-like equal-width pair
    "seq": {},  # [B, 3, d] sequences of one length, no mask (MULT's sites)
    "seq1": {},  # [B, 1, d]: one token (the attention's one-key path)
    "seq-heads2": {"heads": 2},
}
#: leading shape of every modality's input per switch (vectors [B, d] otherwise)
LEADING = {"seq": (BATCH, 3), "seq1": (BATCH, 1), "seq-heads2": (BATCH, 3)}
CASES = (
    [
        pytest.param(part, paired, switch, id=f"{part}-{paired}-{switch}")
        for part in ("project", "gate", "split", "none")
        for paired in ("bilinear", "attention", "shared")
        for switch in (
            ("plain", "gradscale", "classification", "seq")
            if paired != "shared"
            else ("cmd", "seq")
        )
    ]
    + [
        pytest.param("project", "bilinear", s, id=f"project-bilinear-{s}")
        for s in ("replace", "no-decoder", "no-learners", "no-heads", "pair", "seq1", "seq-heads2")
    ]
    + [pytest.param("gate", q, "pair", id=f"gate-{q}-pair") for q in ("attention", "shared")]
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _block(part: str, paired: str, switch: str) -> PgMBlock:
    cfg = PgMConfig(
        **{"modalities": dict(WIDTHS), **SWITCHES[switch]},
        partitioner=part,
        paired=paired,
        uni_width=6,
        paired_width=6,
        decoder_width=8,
    )
    torch.manual_seed(0)
    block = PgMBlock(cfg).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # away from the identity at initialisation: every path carries signal
        for _, p in sorted(block.named_parameters()):
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return block


def _run(block: PgMBlock, stacked: bool, switch: str) -> dict[str, torch.Tensor]:
    saved = block._stack_group
    if not stacked:
        block._stack_group = None
    try:
        g = torch.Generator().manual_seed(1)
        lead = LEADING.get(switch, (BATCH,))
        xs = {
            m: torch.randn(*lead, d, generator=g, dtype=torch.float64).requires_grad_(True)
            for m, d in block.config.modalities.items()
        }
        cfg = block.config
        y = (
            torch.randint(0, 3, (BATCH,), generator=g)
            if cfg.task == "classification"
            else torch.randn(BATCH, generator=g, dtype=torch.float64)
        )
        assert stackable(block, list(xs), xs, {}) is stacked
        block.zero_grad(set_to_none=True)
        out = block(xs)
        got = {f"outputs.{m}": t for m, t in out.outputs.items()}
        for m, p in out.parts.items():
            for name in ("uni", "paired", "uni_learned", "paired_learned", "rebuilt", "gate"):
                t = getattr(p, name)
                if t is not None:
                    got[f"parts.{m}.{name}"] = t
        got |= {f"shares.{m}": s for m, s in out.shares.items()}
        got |= {f"loss.{k}": t for k, t in out.loss_terms(y).items()}
        got |= {f"logits.{k}": t for k, t in out.logits.items()}
        objective = out.aux_loss(y)
        for t in out.outputs.values():
            objective = objective + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
        objective.backward()
        result = {k: v.detach().clone() for k, v in got.items()}
        result |= {
            f"grad.{n}": p.grad.clone() for n, p in block.named_parameters() if p.grad is not None
        }
        result |= {f"grad.input.{m}": x.grad.clone() for m, x in xs.items() if x.grad is not None}
        return result
    finally:
        block._stack_group = saved


@pytest.mark.parametrize(("part", "paired", "switch"), CASES)
def test_stacked_path_matches_the_per_modality_path(part, paired, switch):
    block = _block(part, paired, switch)
    want = _run(block, stacked=False, switch=switch)
    got = _run(block, stacked=True, switch=switch)
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        assert got[key].shape == w.shape and got[key].dtype == w.dtype, key
        torch.testing.assert_close(got[key], w, rtol=1e-9, atol=1e-11, msg=lambda s, k=key: k + s)
    assert any(k.startswith("grad.") and v.abs().sum() > 0 for k, v in want.items())


def test_only_equal_shapes_without_masks_take_the_stacked_path():
    block = PgMBlock(PgMConfig(modalities=dict(WIDTHS)))
    vec = {m: torch.randn(3, 8) for m in WIDTHS}
    assert stackable(block, list(vec), vec, {})
    seq = {m: torch.randn(3, 2, 8) for m in WIDTHS}
    assert stackable(block, list(seq), seq, {})
    mixed = {**seq, "audio": torch.randn(3, 4, 8)}  # another length
    assert not stackable(block, list(mixed), mixed, {})
    assert not stackable(block, list(vec), {**vec, "audio": torch.randn(3, 1, 8)}, {})
    assert not stackable(block, list(seq), seq, {"text": torch.ones(3, 2, dtype=torch.bool)})
    two = {m: vec[m] for m in ("text", "audio")}  # a modality missing: per-modality path
    assert not stackable(block, list(two), two, {})
    # unequal widths or uni shares give modules of different shapes: never stacked
    assert PgMBlock(PgMConfig(modalities={"a": 8, "b": 6}))._stack_group is None
    uneven = PgMConfig(modalities={"a": 32, "b": 32}, rho={"a": 0.25, "b": 0.5})
    assert PgMBlock(uneven)._stack_group is None
    # dropout while training draws per modality: per-modality path; in eval it stacks
    drop = PgMBlock(PgMConfig(modalities=dict(WIDTHS), dropout=0.1))
    assert not stackable(drop, list(vec), vec, {})
    assert stackable(drop.eval(), list(vec), vec, {})


def test_hooked_or_replaced_submodules_take_the_per_modality_path():
    block = PgMBlock(PgMConfig(modalities=dict(WIDTHS)))
    x = {m: torch.randn(3, 8) for m in WIDTHS}
    assert stackable(block, list(x), x, {})
    seen = []
    handle = (
        block.uni_learners["audio"]
        .net[0]
        .register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    )
    assert not stackable(block, list(x), x, {})
    block(x)
    assert seen == [(3, block.config.uni_hidden("audio"))]  # the hook ran
    handle.remove()
    assert stackable(block, list(x), x, {})

    class Scaled(torch.nn.Linear):  # an adapter-style replacement of one Linear
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(inp)

    old = block.decoders["text"].net[3]
    new = Scaled(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    block.decoders["text"].net[3] = new
    assert not stackable(block, list(x), x, {})


def test_stacked_block_keeps_its_state_dict_groups_and_copies():
    cfg = PgMConfig(modalities=dict(WIDTHS))
    block = PgMBlock(cfg)
    keys = list(block.state_dict())
    assert keys == list(
        PgMBlock(PgMConfig(modalities={"text": 8, "audio": 6, "vision": 7})).state_dict()
    )
    names = [g["name"] for g in block.param_groups(1e-3)]
    assert names == [n for n in cfg.group_names() if n in names] and len(names) == 13
    x = {m: torch.randn(4, 8) for m in WIDTHS}
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    want = block(x).outputs
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        got = clone(x).outputs
        for m in WIDTHS:
            torch.testing.assert_close(got[m], want[m])
    # a block pickled before the stacked path existed has no _stack_group: per-modality path
    old = copy.deepcopy(block)
    del old.__dict__["_stack_group"]
    for m, t in old(x).outputs.items():
        torch.testing.assert_close(t, want[m])


def test_finite_check_names_the_modality_and_ignores_an_overflowing_sum():
    block = PgMBlock(PgMConfig(modalities=dict(WIDTHS)))
    x = {m: torch.randn(4, 8) for m in WIDTHS}
    x["vision"][1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"'vision' holds NaN or inf values \(1 of 32\)"):
        block(x)
    big = {m: torch.full((4, 8), 3e38) for m in WIDTHS}  # finite, but their sum overflows
    assert torch.isinf(sum(t.sum() for t in big.values()))
    out = block(big)
    assert set(out.outputs) == set(WIDTHS)
