"""The MMSA zoo patch: PgM variants through MMSA's own entry points; undo restores MMSA."""

from __future__ import annotations

import MMSA
import MMSA.config
import MMSA.run
import pytest
import torch
import torch.nn.functional as F
from MMSA.models import AMIO
from pgm_mmsa.hosts import example_inputs, labels_like
from pgm_mmsa.zoo import VARIANTS, apply_patch, is_patched

from pgm_plugins.api import apply_zoo_patch, list_zoo_patches


def snapshot():
    return {
        "SUPPORTED_MODELS": list(MMSA.run.SUPPORTED_MODELS),
        "functions": (
            MMSA.get_config_regression,
            MMSA.config.get_config_regression,
            MMSA.run.get_config_regression,
            AMIO.__init__,
        ),
        "config": dict(MMSA.get_config_regression("tfn", "mosi")),
    }


@pytest.fixture
def patched():
    before = snapshot()
    undo = apply_zoo_patch("mmsa")
    yield
    undo()
    assert snapshot() == before


def test_registered():
    assert "mmsa" in list_zoo_patches()


@pytest.mark.parametrize("kind", sorted(set(VARIANTS.values())))
def test_variant_trains_through_mmsa_interface(patched, kind):
    args = MMSA.get_config_regression(f"{kind}_pgm", "mosi")
    assert args.model_name == f"{kind}_pgm" and args.pgm["adapter"] == f"mmsa.{kind}"
    args.train_mode = "regression"
    args.pgm["dense_text"] = 768  # offline: no bert-base-uncased
    torch.manual_seed(0)
    model = AMIO(args)
    assert model.pgm.plan.adapter == f"mmsa.{kind}"
    assert hasattr(model, "pgm_block") and type(model.Model).__name__ == kind.upper()
    text, audio, vision = example_inputs(kind, seq_len=8, batch=4)
    labels = labels_like(4)
    host = [p for n, p in model.named_parameters() if not n.startswith("pgm_block")]
    optimizer = torch.optim.Adam(
        model.pgm.param_groups(1e-3, host_groups=[{"params": host, "lr": 1e-3}])
    )
    block_before = {k: v.clone() for k, v in model.pgm.block.state_dict().items()}
    model.train()
    outputs = model(text, audio, vision)  # as MMSA's trainers call it
    loss = F.l1_loss(outputs["M"], labels.view(-1, 1)) + model.pgm.aux_loss(labels)
    loss.backward()
    optimizer.step()
    after = model.pgm.block.state_dict()
    assert any(not torch.equal(v, block_before[k]) for k, v in after.items())


def test_base_models_unchanged_while_patched(patched):
    args = MMSA.get_config_regression("tfn", "mosi")
    args.train_mode = "regression"
    model = AMIO(args)
    assert not hasattr(model, "pgm_block") and not hasattr(model, "pgm")
    assert set(model.MODEL_MAP) == set(AMIO(args).MODEL_MAP)
    assert "tfn_pgm" not in model.MODEL_MAP


def test_patch_twice_and_name_clash_are_refused():
    undo = apply_patch()
    try:
        assert is_patched()
        with pytest.raises(RuntimeError, match="applied already"):
            apply_patch()
    finally:
        undo()
    assert not is_patched()
    before = snapshot()
    MMSA.run.SUPPORTED_MODELS.append("mult_pgm")
    try:
        with pytest.raises(RuntimeError, match="overwrite"):
            apply_patch()
        assert not is_patched()
    finally:
        MMSA.run.SUPPORTED_MODELS.remove("mult_pgm")
    assert snapshot() == before
