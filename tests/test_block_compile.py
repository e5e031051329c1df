"""The block's cost switches: ``compile=`` (``torch.compile`` of its computation) and
``check_finite='deferred'`` (no host sync per forward on a GPU); ``docs/design.md``, "Switches".

The eager CPU path is pinned by ``tests/test_block_equivalence.py`` (float64 fixture); these
tests hold the compiled block to eager and the deferred check to its contract."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import pgm_plugins as pp
from pgm_plugins.block import PgMBlock, PgMConfig
from pgm_plugins.block.finite import DeferredFiniteCheck
from pgm_plugins.errors import ConfigError, NonFiniteError
from pgm_plugins.toy import LateFusion

#: MULT-like: three equal [B, T, d] sequences (the stacked path); Self-MM-like: unequal widths
#: and a padding mask (the per-modality path)
CASES = {
    "stacked": ({"text": (6, 5, 24), "audio": (6, 5, 24), "vision": (6, 5, 24)}, False),
    "per_modality": ({"text": (6, 5, 24), "audio": (6, 12), "vision": (6, 16)}, True),
}


def _step(block: PgMBlock, case: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and every gradient (block parameters and inputs) of one training step."""
    shapes, masked = CASES[case]
    g = torch.Generator().manual_seed(1)
    xs = {m: torch.randn(s, generator=g).requires_grad_(True) for m, s in shapes.items()}
    masks = None
    if masked:
        mask = torch.ones(6, 5, dtype=torch.bool)
        mask[::2, 3:] = False
        masks = {"text": mask}
    y = torch.randn(6, generator=g)
    out = block(xs, masks)
    loss = out.aux_loss(y) + sum(o.square().sum() for o in out.outputs.values())
    loss.backward()
    grads = {n: p.grad for n, p in block.named_parameters()}
    grads |= {f"input.{m}": x.grad for m, x in xs.items()}
    return loss.detach(), grads


def _pair(case: str, compile_options: dict) -> tuple[PgMBlock, PgMBlock]:
    widths = {m: s[-1] for m, s in CASES[case][0].items()}
    torch.manual_seed(0)
    eager = PgMBlock(PgMConfig(modalities=widths, partitioner="gate"))
    compiled = PgMBlock(eager.config.replace(compile=compile_options))
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_block_traces_whole_and_matches_eager(case):
    # fullgraph=True: a graph break anywhere in the block's computation fails the test;
    # aot_eager runs the traced forward and backward graphs with eager kernels, so the numbers
    # are eager's (tolerance 1e-6 relative for the reordering AOTAutograd may do)
    eager, compiled = _pair(case, {"backend": "aot_eager", "fullgraph": True})
    want_loss, want = _step(eager, case)
    got_loss, got = _step(compiled, case)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=1e-6)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6, msg=name)
    assert "_compiled" in compiled.__dict__ and "_compiled" not in eager.__dict__


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # inductor's own use of deprecated helpers
def test_inductor_compiled_block_matches_eager_within_float32_rounding():
    # inductor fuses and reorders float32 reductions: 1e-4 relative covers the rounding (we
    # measured at most 8e-5 absolute on gradients of order 1)
    eager, compiled = _pair("stacked", {"fullgraph": True})
    want_loss, want = _step(eager, "stacked")
    got_loss, got = _step(compiled, "stacked")
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-4, atol=1e-4)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4, msg=name)


def test_compile_option_round_trips_through_json_and_checkpoints(tmp_path):
    options = {"mode": "reduce-overhead", "fullgraph": True, "dynamic": False}
    cfg = PgMConfig(modalities={"a": 8, "b": 8}, compile=options, check_finite="deferred")
    back = PgMConfig.from_json(cfg.to_json())
    assert back == cfg and back.compile == options and back.check_finite == "deferred"
    torch.manual_seed(0)
    model = LateFusion()
    x = (torch.randn(4, 16), torch.randn(4, 8))
    config = {"compile": {"backend": "aot_eager"}, "check_finite": "deferred"}
    handle = pp.inject(model, "toy.late_fusion", config=config, example_inputs=x)
    out = model(*x)
    pp.save(handle, tmp_path)
    torch.manual_seed(0)
    fresh = LateFusion()
    loaded = pp.load(fresh, tmp_path)
    assert loaded.block.config.compile == {"backend": "aot_eager"}
    assert loaded.block.config.check_finite == "deferred"
    torch.testing.assert_close(fresh(*x), out.detach(), rtol=1e-6, atol=1e-6)


def test_copies_and_pickles_of_a_compiled_block_compile_their_own():
    _, compiled = _pair("stacked", {"backend": "aot_eager"})
    _step(compiled, "stacked")
    twin = copy.deepcopy(compiled)
    assert "_compiled" not in twin.__dict__
    restored = pickle.loads(pickle.dumps(compiled))
    for block in (twin, restored):
        for p in block.parameters():
            p.grad = None
        _step(block, "stacked")
        assert block.__dict__["_compiled"] is not compiled.__dict__["_compiled"]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"compile": {"mdoe": "max-autotune"}}, r"compile option 'mdoe'.*Did you mean 'mode'"),
        ({"compile": "yes"}, r"compile='yes' \(str\) must be True, False or a mapping"),
        ({"compile": {"fullgraph": "true"}}, r"compile\['fullgraph'\]='true' must be bool"),
        ({"compile": {"options": {"x": object()}}}, r"must be dict of JSON values"),
        ({"check_finite": "defered"}, r"check_finite='defered'.*Did you mean 'deferred'"),
    ],
)
def test_bad_cost_switches_name_what_is_valid(fields, match):
    with pytest.raises(ConfigError, match=match):
        PgMConfig(modalities={"a": 8}, **fields)


def test_deferred_check_on_cpu_raises_at_once_as_the_default_does():
    block = PgMBlock(PgMConfig(modalities={"a": 8, "b": 8}, check_finite="deferred"))
    bad = torch.randn(4, 8)
    bad[1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"modality 'b' holds NaN or inf values \(1 of 32\)"):
        block({"a": torch.randn(4, 8), "b": bad})


def test_deferred_check_reads_later_names_the_forward_and_waits_at_depth():
    check = DeferredFiniteCheck(depth=3)
    good = {"a": torch.ones(2, 3), "b": torch.ones(2, 3)}
    bad = {"a": torch.ones(2, 3), "b": torch.full((2, 3), float("inf"))}
    check.submit(good)
    check.submit(bad)  # queued: not read yet
    assert check.unread == 1  # the first forward was read when the second came
    with pytest.raises(NonFiniteError, match=r"'b' held NaN or inf values at forward 2 .* 0 forw"):
        check.poll()
    assert check.unread == 0
    check.submit(good)
    check.flush()
    assert check.unread == 0 and check.forwards == 3
    with pytest.raises(ValueError, match="depth=0"):
        DeferredFiniteCheck(depth=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deferred_check_on_gpu_takes_no_host_sync_and_raises_later():
    block = PgMBlock(PgMConfig(modalities={"a": 8, "b": 8}, check_finite="deferred")).cuda()
    good = {m: torch.randn(4, 8, device="cuda") for m in "ab"}
    block(good)  # warm-up: pinned-memory allocation and the first kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        block(good)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    bad = {"a": good["a"], "b": torch.full((4, 8), float("nan"), device="cuda")}
    block(bad)
    with pytest.raises(NonFiniteError, match=r"modality 'b' held NaN or inf values at forward 3"):
        block.raise_if_nonfinite()
