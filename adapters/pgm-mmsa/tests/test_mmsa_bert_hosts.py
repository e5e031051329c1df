"""The six hosts as MMSA builds them (``get_config_regression`` + ``AMIO``, BERT text encoder
included) take a PgM block with no site names; the text width is read from the BERT's config.

``BertTextEncoder`` loads ``args.pretrained`` in ``__init__``: here its model map hands it a small
random ``BertModel(BertConfig(...))`` instead, offline, and is restored after each test.
"""

from __future__ import annotations

import importlib
import warnings

import MMSA
import pytest
import torch
from MMSA.models import AMIO
from pgm_mmsa.adapters import KINDS
from pgm_mmsa.hosts import example_inputs
from transformers import BertConfig, BertModel

import pgm_plugins as pp
from pgm_plugins.api import apply_zoo_patch
from pgm_plugins.errors import InjectionError

VOCAB = 50
BERT_KINDS = ("misa", "self_mm", "mmim")


@pytest.fixture
def small_bert(request):
    """``BertTextEncoder`` builds a one-layer random BERT ``hidden`` wide (default 768, the width
    MMSA's configs expect) in place of ``from_pretrained``; the tokenizer is not needed."""
    hidden = getattr(request, "param", 768)
    table = importlib.import_module("MMSA.models.subNets.BertTextEncoder").TRANSFORMERS_MAP
    saved = dict(table)

    class SmallBert:
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            config = BertConfig(
                vocab_size=VOCAB,
                hidden_size=hidden,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=32,
            )
            return BertModel(config)

    class NoTokenizer:
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            return None

    table["bert"] = (SmallBert, NoTokenizer)
    yield hidden
    table.clear()
    table.update(saved)


def mmsa_args(kind, **changes):
    args = MMSA.get_config_regression(kind, "mosi")
    args.train_mode = "regression"
    for key, value in changes.items():
        args[key] = value
    return args


def build(args):
    """``AMIO(args)`` in eval mode, seeded; MISA's TransformerEncoder warns at construction."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return AMIO(args).eval()


def bert_input(batch=4, length=8, lengths=None, seed=0):
    """MMSA's BERT input ``[B, 3, L]``: token ids, attention mask, segment ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    lengths = torch.full((batch,), length) if lengths is None else lengths
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    return torch.stack([ids.float() * mask, mask, torch.zeros(batch, length)], dim=1)


def inputs(kind, batch=4, length=8):
    """Inputs at MOSI's widths (768 / 5 / 20) for a host as MMSA builds it."""
    if kind not in BERT_KINDS:
        return example_inputs(kind, seq_len=length, batch=batch)
    g = torch.Generator().manual_seed(1)
    audio, vision = torch.randn(batch, length, 5, generator=g), torch.randn(batch, length, 20)
    text = bert_input(batch, length)
    if kind == "misa":
        return text, audio, vision
    lengths = torch.full((batch,), length)
    return text, (audio, lengths), (vision, lengths)


@pytest.mark.parametrize("kind", list(KINDS.values()))
def test_each_host_as_mmsa_builds_it_takes_pgm_with_no_sites(small_bert, kind):
    model = build(mmsa_args(kind))
    x = inputs(kind)
    with torch.no_grad():
        before = model(*x)["M"]
    handle = pp.inject(model)  # no adapter name, no sites, no example inputs
    assert handle.plan.adapter == f"mmsa.{kind}"
    with torch.no_grad():
        torch.testing.assert_close(model(*x)["M"], before, rtol=0, atol=0)
    handle.remove()
    assert not hasattr(model, "pgm_block")


@pytest.mark.parametrize("small_bert", [32], indirect=True)
@pytest.mark.parametrize(
    ("kind", "layer", "changes"),
    [
        ("self_mm", "text_model", {"text_out": 32}),
        ("mmim", "bertmodel", {"feature_dims": [32, 5, 20]}),
    ],
)
def test_the_text_width_is_the_berts_own(small_bert, kind, layer, changes):
    model = build(mmsa_args(kind, **changes))
    plan = pp.plan(model)
    assert plan.sites["text"].site.layer == f"Model.{layer}"
    assert plan.sites["text"].width == small_bert == 32
    handle = pp.inject(model)
    with torch.no_grad():
        assert model(*inputs(kind))["M"].shape == (4, 1)
    handle.remove()


@pytest.mark.parametrize("kind", ["self_mm", "mmim"])
def test_bert_text_padding_does_not_change_a_prediction(small_bert, kind):
    model = build(mmsa_args(kind))
    pp.inject(model)
    with torch.no_grad():
        for p in model.pgm_block.parameters():  # the block is no longer the identity
            p.add_(0.3 * torch.randn_like(p))
    lengths = torch.tensor([5, 5, 5, 5])
    short = bert_input(4, 5, lengths)
    padded = torch.cat([short, torch.zeros(4, 3, 3)], dim=2)  # 3 padding positions
    audio, vision = torch.randn(4, 5, 5), torch.randn(4, 5, 20)
    with torch.no_grad():
        a = model(short, (audio, lengths), (vision, lengths))["M"]
        b = model(padded, (audio, lengths), (vision, lengths))["M"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_text_module_of_unknown_width_names_the_way_out(small_bert):
    model = build(mmsa_args("self_mm"))
    model.Model.text_model = torch.nn.Identity()
    with pytest.raises(InjectionError, match=r"Identity.*Site\('Model.text_model', dim=<width>\)"):
        pp.plan(model)
    assert not hasattr(model, "pgm_block")


@pytest.mark.parametrize("kind", BERT_KINDS)
def test_zoo_variant_with_mmsas_bert_needs_no_dense_text(small_bert, kind):
    undo = apply_zoo_patch("mmsa")
    try:
        args = MMSA.get_config_regression(f"{kind}_pgm", "mosi")
        args.train_mode = "regression"
        assert args.pgm["dense_text"] is None
        model = build(args)
        text = model.Model.text_model if kind == "self_mm" else model.Model.bertmodel
        assert type(text).__name__ == "BertTextEncoder"  # MMSA's own, no DenseText
        assert model.pgm.plan.adapter == f"mmsa.{kind}" and hasattr(model, "pgm_block")
        with torch.no_grad():
            assert model(*inputs(kind))["M"].shape == (4, 1)
    finally:
        undo()
