"""Measured contributions: Shapley values over modalities, part contributions, encoder probes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pgm_plugins.bench.bench_host import batch_rows
from pgm_plugins.bench.contributions import SiteTap, measure, probe_predictions, shapley
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.record import check_record
from pgm_plugins.block import PgMBlock, PgMConfig
from pgm_plugins.errors import InputError, UnknownNameError
from pgm_plugins.injection.site import InputMask, Site

from .test_bench_runner import _records, _runner, registry  # noqa: F401  (the fixture)


# ---------------------------------------------------------------------- Shapley
def test_shapley_splits_an_interaction_equally_and_gives_a_dummy_zero():
    weights = {"a": 0.3, "b": 0.1, "c": 0.0}

    def value(s):
        return 0.5 + sum(weights[m] for m in s) + (0.2 if {"a", "b"} <= s else 0.0)

    got = shapley(value, ("a", "b", "c"))
    assert got["a"] == pytest.approx(0.4) and got["b"] == pytest.approx(0.2)
    assert got["c"] == 0.0
    full, empty = value(frozenset("abc")), value(frozenset())
    assert sum(got.values()) == pytest.approx(full - empty)


# ---------------------------------------------------------------------- a host that ignores b
def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    y = (a[:, 0] + 0.5 * a[:, 1]).astype(np.float32)

    def folds(s):
        return [Fold(np.arange(80), np.arange(80, 90), np.arange(90, n), 0, s)]

    return BenchData(
        "ab", "default", "a decides, b is noise", {"a": a, "b": b}, y, "regression", folds,
        "0" * 64, "mae",
    )  # fmt: skip


class _IgnoresB(nn.Module):
    """Encoders for a and b; the output reads a's encoder only, and predicts y exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc_a = nn.Linear(3, 3)
        self.enc_b = nn.Linear(4, 4)
        self.head = nn.Linear(3, 1)
        with torch.no_grad():
            self.enc_a.weight.copy_(torch.eye(3) * 2.0)
            self.enc_a.bias.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[0.5, 0.25, 0.0]]))
            self.head.bias.fill_(-0.75)

    def forward(self, a, b):
        self.enc_b(b)
        return self.head(self.enc_a(a))[:, 0]


class _Run:
    def __init__(self):
        self.model = _IgnoresB().eval()
        self.sites = {"a": "enc_a", "b": "enc_b"}

    def batches(self, data, rows, batch, rng):
        for idx in batch_rows(rows, batch, rng):
            x = {m: torch.from_numpy(data.x[m][idx]) for m in ("a", "b")}
            yield x, torch.from_numpy(data.y[idx]), idx

    def predict(self, inputs):
        with torch.no_grad():
            return self.model(**inputs)


def _measure(run, data, handle=None):
    fold = data.folds(0)[0]
    return measure(run, data, fold.train, fold.test, handle, batch=32, device=torch.device("cpu"))


def test_a_modality_the_output_ignores_has_shapley_zero_and_the_values_sum_up():
    data = _data()
    got = _measure(_Run(), data)
    assert got is not None
    assert got["shapley"]["b"] == 0.0
    total = sum(got["shapley"].values())
    assert math.isclose(total, got["intact"] - got["all_at_mean"], abs_tol=1e-9)
    assert got["intact"] < 1e-5  # the host predicts y exactly
    assert got["shapley"]["a"] < -0.3  # MAE: without a the error grows
    assert got["parts"] is None  # no block
    assert got["train_rows"] == 80 and got["metric"] == "mae"


def test_probes_score_each_encoder_on_its_own():
    data = _data()
    got = _measure(_Run(), data)
    assert got is not None
    # a's encoder is an invertible linear map of a, and y is linear in a: the probe fits it
    assert got["probes"]["a"] < 0.05
    # b is noise: its probe does no better than the training mean of y
    fold = data.folds(0)[0]
    spread = float(np.abs(data.y[fold.test] - data.y[fold.train].mean()).mean())
    assert got["probes"]["b"] > 0.8 * spread


def test_probe_predictions_classify_separable_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    out = probe_predictions(x[:150], y[:150], x[150:], "classification", 2)
    assert out.shape == (50, 2) and (out.argmax(1) == y[150:]).mean() > 0.9


# ---------------------------------------------------------------------- the site tap
class _Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Identity()

    def forward(self, x, mask):
        return self.enc(x)


def test_the_site_tap_pools_and_replaces_real_tokens_only():
    from pgm_plugins.bench.contributions import _SiteView

    model = _Seq()
    site = Site("enc", layout="TBD", mask=InputMask(arg=1))
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(3, 2, 2)  # [T, B, d]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # [B, T]
    with SiteTap(model, {"s": _SiteView(site, model.enc, "TBD")}) as tap:
        tap.capture = True
        model(x, mask)
        rows, means = tap.take()
        real = x.transpose(0, 1)[mask.bool()]  # the 3 real tokens
        assert torch.allclose(means["s"], real.mean(0))
        np.testing.assert_allclose(rows["s"][1], x[0, 1].numpy())  # row 1: one real token
        tap.capture = False
        tap.replace = {"s": torch.tensor([-1.0, -2.0])}
        out = model(x, mask)
    btd = out.transpose(0, 1)
    assert (btd[mask.bool()] == torch.tensor([-1.0, -2.0])).all()
    assert torch.equal(btd[~mask.bool()], x.transpose(0, 1)[~mask.bool()])
    assert torch.equal(model(x, mask), x)  # the hooks are off


# ---------------------------------------------------------------------- the block's parts
def _block(**changes):
    torch.manual_seed(0)
    cfg = PgMConfig(modalities={"a": 8, "b": 8}, task="none", **changes)
    block = PgMBlock(cfg).eval()
    with torch.no_grad():
        for d in block.decoders.values():
            d.beta.fill_(1.0)
    return block


def test_a_part_the_decoders_ignore_changes_nothing_when_replaced():
    block = _block()
    uni_width = block.config.part_widths("a")[0]
    with torch.no_grad():
        for d in block.decoders.values():
            d.net[0].weight[:, uni_width:] = 0.0  # every decoder ignores its paired part
    h = {"a": torch.randn(5, 8), "b": torch.randn(5, 8)}
    base = block(h).outputs
    paired_w = block.config.part_widths("a")[1]
    with block.replaced_parts({"a.paired": torch.full((paired_w,), 3.0)}):
        same = block(h).outputs
    with block.replaced_parts({"a.uni": torch.full((uni_width,), 3.0)}):
        moved = block(h).outputs
    assert torch.allclose(same["a"], base["a"], atol=1e-6)
    assert torch.allclose(same["b"], base["b"], atol=1e-6)
    assert not torch.allclose(moved["a"], base["a"], atol=1e-3)


def test_a_part_replaced_by_its_own_value_gives_the_intact_output():
    block = _block()
    h = {"a": torch.randn(1, 8), "b": torch.randn(1, 8)}  # equal shapes: the stacked path
    out = block(h)
    vec = out.parts["a"].uni[0, 0]
    with block.replaced_parts({"a.uni": vec}):
        again = block(h)
    assert torch.allclose(again.outputs["a"], out.outputs["a"], atol=1e-5)
    assert not block._replaced  # set only inside


def test_replaced_parts_refuses_bad_names_and_widths_and_changes_nothing():
    block = _block()
    with (
        pytest.raises(UnknownNameError, match=r"'a\.unni'.*Did you mean 'a\.uni'"),
        block.replaced_parts({"a.unni": torch.zeros(4)}),
    ):
        pass
    with (
        pytest.raises(InputError, match=r"'b\.paired' is \d+ wide"),
        block.replaced_parts({"b.paired": torch.zeros(99)}),
    ):
        pass
    assert not block._replaced


# ---------------------------------------------------------------------- through the runner
def test_every_cell_records_its_contributions(registry, tmp_path):  # noqa: F811
    runner = _runner(registry, tmp_path, arms=["baseline", "pgm", "capacity"], seeds=[0])
    runner.run(runner.plan(folds=[0]))
    named = _records(tmp_path / "t")
    records = list(named.values())
    assert len(records) == 3
    for r in records:
        c = r["contributions"]
        assert set(c["shapley"]) == {"a", "b"} and set(c["probes"]) == {"a", "b"}
        assert math.isclose(sum(c["shapley"].values()), c["intact"] - c["all_at_mean"])
        assert c["intact"] == r["metrics"]["test"][r["primary"]]
        assert 0 < r["time"]["contributions_s"] < r["time"]["wall_s"]
        if r["key"]["arm"] == "pgm":
            assert set(c["parts"]) == {"a", "b"} and set(c["parts"]["a"]) == {"uni", "paired"}
            # the mixing scalars trained away from their start at 0
            assert set(c["betas"]) == {"a", "b"} and all(b != 0.0 for b in c["betas"].values())
        else:
            assert c["parts"] is None and c["betas"] is None
    bad = {**records[0], "contributions": {"parts": None, "shapley": {"a": "x"}, "probes": {}}}
    assert check_record(records[0], tmp_path / "t" / next(iter(named)), "t") is None
    why = check_record(bad, tmp_path / "t" / next(iter(named)), "t")
    assert why is not None and "contributions.shapley" in why
    bad = {**records[0], "contributions": {**records[0]["contributions"], "betas": {"a": "x"}}}
    why = check_record(bad, tmp_path / "t" / next(iter(named)), "t")
    assert why is not None and "contributions.betas" in why


# ---------------------------------------------------------------------- the report
def test_the_report_summarises_and_plots_contributions_and_says_when_there_are_none(tmp_path):
    from pgm_plugins.bench.report import build_report

    from .test_bench_report import SUITE, record, write

    for seed in range(3):
        for arm in ("baseline", "pgm"):
            key, body = record(arm=arm, seed=seed, shares={"a": 0.5, "b": 0.5})
            write(tmp_path / "old", key, body)
            body["contributions"] = {
                "metric": "acc2",
                "intact": 0.7,
                "all_at_mean": 0.5,
                "parts": {"a": {"uni": -0.1, "paired": -0.02 * seed}} if arm == "pgm" else None,
                "shapley": {"a": 0.15 + 0.01 * seed, "b": 0.05 - 0.01 * seed},
                "probes": {"a": 0.66, "b": 0.55},
                "train_rows": 80,
                "betas": {"a": 0.01 * seed, "b": -0.02} if arm == "pgm" else None,
            }
            write(tmp_path / "new", key, body)
    old = build_report(tmp_path / "old", SUITE, tmp_path / "old-out")
    assert "predate the contributions measure" in old.markdown
    assert not any(p.name.startswith(("contributions", "shares")) for p in old.plots)
    rep = build_report(tmp_path / "new", SUITE, tmp_path / "out")
    md = rep.markdown
    assert "- `h1` / `pgm` (3 cells):" in md
    # mean 0.16 over seeds, t-interval 0.16 +- 4.303 * 0.01 / sqrt(3)
    assert "Shapley value: a +0.160 [+0.135, +0.185], b +0.040 [+0.015, +0.065]" in md
    assert "probe: a 0.660" in md and "uni part: a -0.100" in md
    assert "mix beta: a +0.010 [-0.015, +0.035], b -0.020" in md
    names = sorted(p.name for p in rep.plots)
    # fixed shares (0.5 everywhere) are not plotted as if learned
    assert "contributions__mosi-utterance__clean__h1.png" in names
    assert not any(n.startswith("shares") for n in names)


def test_a_trained_blocks_parts_move_a_continuous_metric(registry, tmp_path):  # noqa: F811
    runner = _runner(registry, tmp_path, dataset="tiny-reg", arms=["pgm"], seeds=[0])
    (record,) = (runner.run_cell(c) for c in runner.plan(folds=[0]))
    parts = record["contributions"]["parts"]
    assert record["primary"] == "mae"
    assert all(v != 0.0 for p in parts.values() for v in p.values())
