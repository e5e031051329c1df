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
from pgm_mmsa.zoo import VARIANTS, PretrainedTextError, apply_patch, is_patched

from pgm_plugins.api import apply_zoo_patch, list_zoo_patches
from pgm_plugins.errors import UnknownNameError


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


def test_misspelt_names_get_the_nearest_and_change_nothing(patched):
    before = snapshot()
    with pytest.raises(KeyError, match=r"no model 'mlt_pgm'\. Did you mean 'mult_pgm'\?") as e:
        MMSA.get_config_regression("mlt_pgm", "mosi")
    assert isinstance(e.value, UnknownNameError)
    message = str(e.value)  # plain text, not a KeyError's repr
    assert message.startswith("MMSA has no model 'mlt_pgm'.")
    assert "misa_pgm, self_mm_pgm" in message and "mlf_dnn" in message  # what is valid
    assert message.endswith("Run e.g. MMSA.get_config_regression('mult_pgm', 'mosi').")
    with pytest.raises(KeyError, match=r"'tfn' has no dataset 'mossi'\. Did you mean 'mosi'\?"):
        MMSA.get_config_regression("tfn_pgm", "mossi")
    with pytest.raises(KeyError, match=r"Did you mean 'tfn'\?"):  # MMSA's own names too
        MMSA.get_config_regression("tnf", "mosi")
    assert snapshot() == before


def test_bert_variant_offline_names_dense_text_and_pretrained(patched):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("bert-base-uncased", "config.json"), str):
        pytest.skip("bert-base-uncased is in this machine's Hugging Face cache: it loads")
    args = MMSA.get_config_regression("misa_pgm", "mosi")
    args.train_mode = "regression"
    before = snapshot()
    with pytest.raises(OSError, match=r"misa_pgm: .*'bert-base-uncased'.*could not be") as e:
        AMIO(args)
    assert isinstance(e.value, PretrainedTextError) and isinstance(e.value.__cause__, OSError)
    assert "args.pgm['dense_text'] = D" in str(e.value) and "args.pretrained" in str(e.value)
    assert snapshot() == before
    args.pgm["dense_text"] = 768  # the first way out works
    assert hasattr(AMIO(args), "pgm_block")
