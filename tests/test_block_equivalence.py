"""The block computes what it computed before its per-step cost was cut (the stacked path,
``docs/design.md``).

``test_block_equivalence_reference.pt`` (beside this file) holds, for every partitioner x paired
learner switch and the other switches that take their own code path (masks, vectors vs
sequences, gradient scaling, ``mix``, classification, ablations, heads, ``cmd`` alignment), what
the block of commit db2373e returned on seeded inputs and seeded weights (away from the identity
at initialisation, so that every path is active): outputs, parts, shares, loss terms, logits and
the gradients of a fixed objective with respect to every parameter and input. It was written by
this module (``python tests/test_block_equivalence.py --write``) from that commit's code, before
the edits; the test rebuilds each case and compares in float64.

The fixture is never regenerated to make a change pass: a change that alters these numbers
changes the method and needs its own evidence (``docs/method.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pgm_plugins.block import PgMBlock, PgMConfig

FIXTURE = Path(__file__).with_name("test_block_equivalence_reference.pt")
BATCH = 5

#: name -> (config overrides, input kind); widths differ so that no case hides a shape bug
VECTORS = {"text": 10, "audio": 6, "vision": 8}
CASES: dict[str, tuple[dict[str, Any], str]] = {}
for _part in ("project", "gate", "split", "none"):
    for _paired in ("bilinear", "attention", "shared"):
        CASES[f"{_part}-{_paired}-vec"] = ({"partitioner": _part, "paired": _paired}, "vec")
    CASES[f"{_part}-seq"] = ({"partitioner": _part}, "seq")
CASES["attention-seq"] = ({"paired": "attention"}, "seq")
CASES["shared-seq"] = ({"paired": "shared"}, "seq")
CASES.update(
    {
        "project-bilinear-seqmask": ({}, "seqmask"),
        "gate-attention-seqmask": ({"partitioner": "gate", "paired": "attention"}, "seqmask"),
        "shared-seqmask": ({"paired": "shared"}, "seqmask"),
        "heads2-seqmask": ({"heads": 2, "paired_width": 8}, "seqmask"),
        "gradscale": ({"grad_scale": {"*.uni": 0.5, "text.paired": 0.0}}, "seqmask"),
        "gradscale-gate": ({"partitioner": "gate", "grad_scale": {"*.paired": 0.25}}, "vec"),
        "replace": ({"mix": "replace"}, "vec"),
        "classification": ({"task": "classification", "num_classes": 3}, "seqmask"),
        "l1": ({"regression_loss": "l1"}, "vec"),
        "no-uni": ({"uni_learner": False}, "seqmask"),
        "no-paired": ({"paired_learner": False}, "seqmask"),
        "no-decoder": ({"decoder": False}, "vec"),
        "no-heads": ({"lambda_uni": 0.0, "lambda_paired": 0.0}, "vec"),
        "task-none": ({"task": "none"}, "seqmask"),
        "no-rec": ({"lambda_rec": 0.0}, "vec"),
        "cmd": ({"paired": "shared", "align": "cmd"}, "seqmask"),
        "two-modalities": ({"modalities": {"text": 10, "audio": 6}}, "vec"),
        "rho-per-modality": ({"rho": {"text": 0.25, "audio": 0.5, "vision": 0.75}}, "seqmask"),
    }
)


def _inputs(kind: str, widths: dict[str, int]) -> tuple[dict[str, torch.Tensor], Any]:
    """Vectors, sequences of different lengths, or sequences with padding plus one vector."""
    g = torch.Generator().manual_seed(1)
    lengths = {"text": 4, "audio": 3, "vision": 1}
    xs, masks = {}, None
    for m, d in widths.items():
        shape = (BATCH, d) if kind == "vec" else (BATCH, lengths[m], d)
        if kind == "seqmask" and m == "vision":
            shape = (BATCH, d)
        xs[m] = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "seqmask":
        masks = {"text": torch.ones(BATCH, 4, dtype=torch.bool)}
        masks["text"][1, 2:] = False
        masks["text"][3, 1:] = False
        if "audio" in widths:
            masks["audio"] = torch.ones(BATCH, 3, dtype=torch.bool)
            masks["audio"][0, 1:] = False
    return xs, masks


def _config(overrides: dict[str, Any]) -> PgMConfig:
    # small learner widths keep the fixture small; the width defaults are plain arithmetic
    fields = {
        "modalities": dict(VECTORS),
        "uni_width": 6,
        "paired_width": 6,
        "decoder_width": 8,
        **overrides,
    }
    return PgMConfig(**fields)


def _weights(block: PgMBlock) -> None:
    """Seeded weights in place of the initial ones (whatever the init draws), away from the
    identity at initialisation so every path carries a signal and a gradient."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, p in sorted(block.named_parameters()):
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _targets(cfg: PgMConfig) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(3)
    if cfg.task == "classification":
        return torch.randint(0, cfg.out_dim, (BATCH,), generator=g)
    if cfg.task == "regression":
        return torch.randn(BATCH, generator=g, dtype=torch.float64)
    return None


def _run(block: PgMBlock, xs: dict[str, torch.Tensor], masks: Any) -> dict[str, torch.Tensor]:
    """Everything the block returns, and the gradients of a fixed objective, flattened by name."""
    block.zero_grad(set_to_none=True)
    xs = {m: x.clone().requires_grad_(True) for m, x in xs.items()}
    out = block(xs, masks=masks)
    cfg = block.config
    y = _targets(cfg)
    got: dict[str, torch.Tensor] = {}
    for m, t in out.outputs.items():
        got[f"outputs.{m}"] = t
    for m, p in out.parts.items():
        for name in ("uni", "paired", "uni_learned", "paired_learned", "rebuilt", "gate"):
            t = getattr(p, name)
            if t is not None:
                got[f"parts.{m}.{name}"] = t
    for m, s in out.shares.items():
        got[f"shares.{m}"] = s
    for name, t in out.loss_terms(y).items():
        got[f"loss.{name}"] = t
    for name, t in out.logits.items():
        got[f"logits.{name}"] = t
    g = torch.Generator().manual_seed(4)
    objective = out.aux_loss(y)
    for t in out.outputs.values():
        objective = objective + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    objective.backward()
    result = {k: v.detach().clone() for k, v in got.items()}
    for name, p in block.named_parameters():
        if p.grad is not None:
            result[f"grad.{name}"] = p.grad.detach().clone()
    for m, x in xs.items():
        if x.grad is not None:
            result[f"grad.input.{m}"] = x.grad.detach().clone()
    return result


def build_case(name: str) -> tuple[PgMBlock, Any]:
    overrides, kind = CASES[name]
    cfg = _config(overrides)
    block = PgMBlock(cfg).double()
    _weights(block)
    return block, _inputs(kind, dict(cfg.modalities))


def _pack(tensors: dict[str, torch.Tensor], flat: torch.dtype) -> dict[str, Any]:
    """One flat tensor plus names, shapes and dtypes (a small fixture file)."""
    return {
        "names": list(tensors),
        "shapes": [list(t.shape) for t in tensors.values()],
        "dtypes": [str(t.dtype).removeprefix("torch.") for t in tensors.values()],
        "flat": torch.cat([t.detach().reshape(-1).to(flat) for t in tensors.values()]),
    }


def _unpack(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    out, at = {}, 0
    for name, shape, dtype in zip(packed["names"], packed["shapes"], packed["dtypes"], strict=True):
        n = int(torch.Size(shape).numel())
        out[name] = packed["flat"][at : at + n].reshape(shape).to(getattr(torch, dtype))
        at += n
    assert at == packed["flat"].numel()
    return out


def write_fixture(path: Path = FIXTURE) -> None:
    cases = {}
    for name in CASES:
        block, (xs, masks) = build_case(name)
        cases[name] = _pack(_run(block, xs, masks), torch.float64)
    tmp = path.with_suffix(".tmp")
    torch.save(cases, tmp)
    tmp.replace(path)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    assert FIXTURE.is_file(), f"missing {FIXTURE}; it is committed with this test"
    return torch.load(FIXTURE, weights_only=True)


def test_fixture_covers_every_case(reference: dict[str, Any]) -> None:
    assert sorted(reference) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_matches_reference(name: str, reference: dict[str, Any]) -> None:
    block, (xs, masks) = build_case(name)
    got = _run(block, xs, masks)
    want = _unpack(reference[name])
    assert sorted(got) == sorted(want), "the block returns or differentiates other tensors"
    for key, w in want.items():
        g = got[key]
        assert g.shape == w.shape and g.dtype == w.dtype, key
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11, msg=lambda s, k=key: f"{k}: {s}")
    # the perturbation reached every path: no case compares zeros with zeros only
    assert any(k.startswith("grad.") and v.abs().sum() > 0 for k, v in want.items())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_block_equivalence.py --write")
    write_fixture()
    print(f"wrote {FIXTURE}")
