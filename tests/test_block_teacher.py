"""PgM guided by uni-modal training (``lambda_teacher``, docs/design.md "Losses"): a uni-modal
teacher's features distilled into each modality's uni part, and only there."""

from __future__ import annotations

import pytest
import torch

import pgm_plugins as pp
from pgm_plugins import PgMBlock, PgMConfig
from pgm_plugins.block.losses import teacher_loss
from pgm_plugins.errors import ConfigError, InputError, UnknownNameError
from pgm_plugins.toy import LateFusion

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = {"text": 12, "audio": 7}


def build(**overrides) -> PgMBlock:
    torch.manual_seed(0)
    kwargs = {"modalities": dict(WIDTHS), "task": "regression", "lambda_teacher": 1.0}
    return PgMBlock(PgMConfig(**(kwargs | overrides)))


def teachers(batch: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in WIDTHS.items()}


def test_the_default_block_has_no_teacher_path():
    block = PgMBlock(PgMConfig(modalities=dict(WIDTHS)))
    assert PgMConfig(modalities=dict(WIDTHS)).lambda_teacher == 0.0
    assert not any("teacher" in k for k in block.state_dict())
    out = block({m: torch.randn(3, d) for m, d in WIDTHS.items()})
    assert out.teacher_preds is None
    assert not any(k.startswith("teacher.") for k in out.loss_terms(torch.randn(3)))


def test_the_teacher_gradient_reaches_the_uni_part_and_its_map_not_the_paired_part():
    # only the teacher terms: every other loss off
    block = build(lambda_uni=0.0, lambda_paired=0.0, lambda_rec=0.0, rho=0.5)
    # sequences with masks: the per-modality path, whose parts are the tensors the forward used
    h = {m: torch.randn(6, 3, d, requires_grad=True) for m, d in WIDTHS.items()}
    out = block(h, masks={m: torch.ones(6, 3, dtype=torch.bool) for m in WIDTHS})
    terms = out.loss_terms(teacher=teachers())
    assert set(terms) == {"teacher.text", "teacher.audio"}
    loss = sum(terms.values())
    # through the parts: the uni part gets a gradient, the paired part none at all
    for m in WIDTHS:
        g_uni, g_paired = torch.autograd.grad(
            loss, [out.parts[m].uni, out.parts[m].paired], retain_graph=True, allow_unused=True
        )
        assert g_uni is not None and g_uni.abs().sum() > 0
        assert g_paired is None or g_paired.abs().sum() == 0
    loss.backward()
    for m in WIDTHS:
        assert block.teacher_heads[m].weight.grad.abs().sum() > 0
        assert all(p.grad.abs().sum() > 0 for p in block.uni_learners[m].parameters())
        # Q's uni columns (Gram-Schmidt: they depend on the first k columns only) move, the
        # paired columns' parameters get nothing
        k, _ = block.config.part_widths(m)
        basis = block.partitioners[m].basis.grad
        assert basis[:, :k].abs().sum() > 0
        assert basis[:, k:].abs().sum() == 0
        assert h[m].grad.abs().sum() > 0  # the host's encoder is trained through the uni branch
    assert block.paired_learner is not None
    for name, p in block.named_parameters():
        if name.startswith(("paired_learner.", "paired_heads.", "paired_bias", "decoders.")):
            assert p.grad is None or p.grad.abs().sum() == 0, name


def test_the_uni_branch_gradient_scale_holds_for_the_teacher_term():
    block = build(lambda_uni=0.0, lambda_paired=0.0, lambda_rec=0.0, grad_scale={"*.uni": 0.0})
    h = {m: torch.randn(6, d, requires_grad=True) for m, d in WIDTHS.items()}
    block(h).aux_loss(teacher=teachers()).backward()
    assert all(h[m].grad is None or h[m].grad.abs().sum() == 0 for m in WIDTHS)


def test_the_term_equals_a_hand_computation():
    block = build(
        modalities={"a": 4, "b": 4},
        uni_learner=False,
        bottleneck=4,
        rho=0.5,
        lambda_teacher=0.6,
        teacher_widths={"a": 3},
        lambda_rec=0.0,
    ).double()
    torch.manual_seed(3)
    h = {"a": torch.randn(5, 4, dtype=torch.float64), "b": torch.randn(5, 4, dtype=torch.float64)}
    t = {"a": torch.randn(5, 3, dtype=torch.float64), "b": torch.randn(5, 4, dtype=torch.float64)}
    got = block(h).loss_terms(teacher=t)
    for m in ("a", "b"):
        q = torch.linalg.qr(block.partitioners[m].basis).Q
        q = q * torch.sign(torch.diagonal(torch.linalg.qr(block.partitioners[m].basis).R))
        u = h[m] @ q[:, :2]  # the uni part: the first round(0.5 * 4) code channels
        head = block.teacher_heads[m]
        pred = u @ head.weight.T + head.bias
        mean = t[m].mean(0)
        std = ((t[m] - mean) ** 2).mean(0).add(1e-5).sqrt()
        want = (0.6 / 2) * ((pred - (t[m] - mean) / std) ** 2).mean()
        torch.testing.assert_close(got[f"teacher.{m}"].double(), want, rtol=1e-6, atol=1e-8)


def test_teacher_loss_standardises_the_teacher_and_never_trains_it():
    t = torch.tensor([[1.0, 10.0], [3.0, 30.0]], requires_grad=True)
    # standardised per channel: both channels become (-1, +1), whatever their scale
    loss = teacher_loss(torch.zeros(2, 2), t)
    torch.testing.assert_close(loss, torch.tensor(1.0), rtol=1e-4, atol=0)
    assert not loss.requires_grad
    assert torch.isfinite(teacher_loss(torch.zeros(1, 2), t[:1]))  # one row: zeros, not NaN


def test_sequence_teachers_are_pooled_over_real_tokens():
    block = build(lambda_uni=0.0, lambda_paired=0.0, lambda_rec=0.0)
    h = {m: torch.randn(4, 5, d) for m, d in WIDTHS.items()}
    masks = {m: torch.ones(4, 5, dtype=torch.bool) for m in WIDTHS}
    masks["text"][:, 3:] = False
    seq = {m: torch.randn(4, 5, d) for m, d in WIDTHS.items()}
    pooled = {"text": seq["text"][:, :3].mean(1), "audio": seq["audio"].mean(1)}
    out = block(h, masks=masks)
    got, want = out.loss_terms(teacher=seq), out.loss_terms(teacher=pooled)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_a_missing_teacher_is_an_error():
    out = build()({m: torch.randn(3, d) for m, d in WIDTHS.items()})
    with pytest.raises(InputError, match=r"lambda_teacher=1.0 needs the teacher's features"):
        out.loss_terms(torch.randn(3))
    with pytest.raises(InputError, match=r"no features for modality 'audio'"):
        out.loss_terms(teacher={"text": torch.randn(3, 12)})


def test_a_teacher_without_the_weight_is_an_error():
    out = PgMBlock(PgMConfig(modalities=dict(WIDTHS)))(
        {m: torch.randn(3, d) for m, d in WIDTHS.items()}
    )
    with pytest.raises(InputError, match=r"no teacher path \(lambda_teacher=0.0\)"):
        out.loss_terms(teacher=teachers(3))


@pytest.mark.parametrize(
    ("teacher", "match"),
    [
        ({"txt": torch.randn(3, 12), "audio": torch.randn(3, 7)}, "'txt'.*Did you mean 'text'"),
        ({"text": torch.randn(3, 11), "audio": torch.randn(3, 7)}, "width 12.*teacher_widths"),
        ({"text": torch.randn(4, 12), "audio": torch.randn(3, 7)}, "needs batch 3"),
        ({"text": torch.randn(12), "audio": torch.randn(3, 7)}, r"expected \[B, 12\]"),
    ],
)
def test_bad_teacher_features_are_named(teacher, match):
    out = build()({m: torch.randn(3, d) for m, d in WIDTHS.items()})
    err = UnknownNameError if "txt" in teacher else InputError
    with pytest.raises(err, match=match):
        out.loss_terms(teacher=teacher)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"lambda_teacher": -1.0}, "lambda_teacher=-1.0 must be a finite number >= 0"),
        ({"teacher_widths": {"txt": 5}}, "'txt'.*configured.*Did you mean 'text'"),
        ({"teacher_widths": {"text": 0}}, r"teacher_widths\['text'\]=0 must be a positive int"),
        ({"teacher_widths": [5]}, "must be a mapping"),
    ],
)
def test_bad_teacher_settings_are_config_errors(fields, match):
    with pytest.raises(ConfigError, match=match):
        PgMConfig(modalities=dict(WIDTHS), **fields)


def test_the_teacher_settings_round_trip_through_json_and_checkpoints(tmp_path):
    cfg = PgMConfig(
        modalities={"text": 32, "audio": 32}, lambda_teacher=0.25, teacher_widths={"audio": 5}
    )
    assert PgMConfig.from_json(cfg.to_json()) == cfg
    model = LateFusion()
    handle = pp.inject(model, "toy.late_fusion", config=cfg)
    x = (torch.randn(4, 16), torch.randn(4, 8))
    t = {"text": torch.randn(4, 32), "audio": torch.randn(4, 5)}
    with torch.no_grad():
        for p in handle.block.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model(*x)
    want = handle.loss_terms(teacher=t)
    pp.save(handle, tmp_path)
    fresh = LateFusion()
    fresh.load_state_dict(model.state_dict(), strict=False)
    loaded = pp.load(fresh, tmp_path)
    assert loaded.block.config.lambda_teacher == 0.25
    assert loaded.block.config.teacher_widths == {"audio": 5}
    fresh(*x)
    got = loaded.loss_terms(teacher=t)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_the_handle_passes_teachers_and_refuses_them_without_the_weight():
    model = LateFusion()
    handle = pp.inject(model, "toy.late_fusion", config={"lambda_teacher": 0.5})
    x = (torch.randn(4, 16), torch.randn(4, 8))
    t = {"text": torch.randn(4, 32), "audio": torch.randn(4, 32)}
    model(*x)
    with pytest.raises(InputError, match="needs the teacher's features"):
        handle.aux_loss(torch.randn(4))
    model(*x)
    model(*x)  # two pending forwards: one mapping for both, or one per forward
    assert torch.isfinite(handle.aux_loss(torch.randn(4), teacher=[t, t]))
    plain = LateFusion()
    handle = pp.inject(plain, "toy.late_fusion")
    plain(*x)
    with pytest.raises(InputError, match="lambda_teacher is 0"):
        handle.aux_loss(torch.randn(4), teacher=t)
