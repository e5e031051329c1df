"""The ``mmsa.<kind>`` bench hosts under the benchmark runner: each trains one epoch on tiny
clean-like data (context windows of utterances of one video) and writes a valid record; token
data without vision; per-modality learning rates; data a host cannot take."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from pgm_mmsa import plugin as mmsa_plugin
from pgm_mmsa.bench import MmsaRun
from pgm_mmsa.data import context_windows

from pgm_plugins import hookimpl
from pgm_plugins.bench import plugin as bench_plugin
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.runner import Runner, RunnerError
from pgm_plugins.bench.suite import parse_suite
from pgm_plugins.registry import PluginRegistry

KINDS = ["mult", "misa", "self_mm", "tfn", "lmf", "mmim"]


def clean_like(protocol=None, data_dir=None, n=72):
    """12 videos of 6 utterances; text / audio / vision vectors; binary labels."""
    rng = np.random.default_rng(1)
    x = {
        "text": rng.normal(size=(n, 12)).astype(np.float32),
        "audio": rng.normal(size=(n, 7)).astype(np.float32),
        "vision": rng.normal(size=(n, 5)).astype(np.float32),
    }
    y = (x["text"][:, 0] > 0).astype(np.int64)
    video = np.repeat(np.arange(n // 6), 6)
    position = np.tile(np.arange(6), n // 6)[::-1].copy()  # stored out of order

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n // 6)

        def rows(vs):
            return np.flatnonzero(np.isin(video, vs))

        return [Fold(rows(perm[:8]), rows(perm[8:10]), rows(perm[10:]), 0, seed)]

    return BenchData(
        "clean-like",
        "clean",
        "tiny clean-like",
        x,
        y,
        "classification",
        folds,
        "3" * 64,
        "acc2",
        num_classes=2,
        groups=video,
        extras={"video": video, "position": position},
    )


def tokens_like(protocol=None, data_dir=None, n=48, steps=6):
    """Text as padded token features with lengths, audio one vector, no vision."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, steps + 1, size=n)
    text = rng.normal(size=(n, steps, 10)).astype(np.float32)
    text[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    x = {"text": text, "audio": rng.normal(size=(n, 7)).astype(np.float32)}
    y = (x["audio"][:, 0] > 0).astype(np.int64)

    def folds(seed):
        return [Fold(np.arange(32), np.arange(32, 40), np.arange(40, n), 0, seed)]

    return BenchData(
        "tokens-like",
        "standard",
        "tiny standard-like",
        x,
        y,
        "classification",
        folds,
        "4" * 64,
        "acc2",
        num_classes=2,
        lengths={"text": lengths},
    )


def two_images(protocol=None, data_dir=None, n=40):
    rng = np.random.default_rng(3)
    x = {m: rng.normal(size=(n, 4)).astype(np.float32) for m in ("image", "audio")}

    def folds(seed):
        return [Fold(np.arange(24), np.arange(24, 32), np.arange(32, n), 0, seed)]

    y = (x["image"][:, 0] > 0).astype(np.int64)
    return BenchData("av", "default", "av", x, y, "classification", folds, "5" * 64, "acc", 2)


@pytest.fixture(scope="module")
def registry():
    plugin = types.ModuleType("mmsa_bench_test_plugin")

    @hookimpl
    def pgm_register_datasets(register):
        register("clean-like", clean_like)
        register("tokens-like", tokens_like)
        register("av", two_images)

    plugin.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    reg = PluginRegistry(load_entry_points=False)
    reg.register_plugin(bench_plugin, "pgm_plugins.bench")  # late_fusion, as pgm bench has it
    reg.register_plugin(mmsa_plugin, "pgm_mmsa")
    reg.register_plugin(plugin, "test")
    reg.refresh()
    return reg


def _runner(registry, tmp_path, **table):
    suite = parse_suite(
        "m",
        {"seeds": [0], "epochs": 1, "patience": 1, "window": 3, **table},
        datasets=registry.datasets.names(),
        hosts=registry.bench_hosts.names(),
    )
    return Runner(suite, tmp_path, registry=registry, quiet=True)


def test_context_windows_follow_the_video_order():
    video = np.array([0, 0, 0, 1, 1])
    position = np.array([2, 0, 1, 0, 1])
    ctx = context_windows(video, position, 3)
    assert ctx.tolist() == [[1, 2, 0], [-1, -1, 1], [-1, 1, 2], [-1, -1, 3], [-1, 3, 4]]


@pytest.mark.parametrize("kind", KINDS)
def test_each_host_trains_one_epoch_and_writes_a_record(registry, tmp_path, kind):
    runner = _runner(registry, tmp_path, dataset="clean-like", hosts=[f"mmsa.{kind}"], arms=["pgm"])
    summary = runner.run(runner.plan())
    assert summary["ran"] == 1
    (path,) = (tmp_path / "m").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "done" and record["key"]["host"] == f"mmsa.{kind}"
    test = record["metrics"]["test"]
    assert {"acc", "acc2", "wf1", "auroc", "loss"} <= set(test) and test["acc2"] == test["acc"]
    assert record["parameters"]["block"] > 0 and record["block_config"]["task"] == "regression"
    assert record["train"]["window"] == 3 and record["epochs_run"] == 1
    changes = " ".join(record["host"]["changes"])
    assert "context window of 3 utterances" in changes and "regression on +-1" in changes


def test_token_data_without_vision(registry, tmp_path):
    runner = _runner(registry, tmp_path, dataset="tokens-like", hosts=["mmsa.lmf"], arms=["pgm"])
    runner.run(runner.plan())
    (path,) = (tmp_path / "m").glob("*.json")
    record = json.loads(path.read_text())
    changes = " ".join(record["host"]["changes"])
    assert "no vision: a constant zero input of width 1" in changes
    assert record["train"]["window"] == 6


def test_per_modality_learning_rates_reach_the_optimizer(tmp_path):
    data = clean_like()
    torch.manual_seed(0)
    run = MmsaRun("tfn", data, 0, data.modalities, window=2)
    run.optimizers(None, lr_scale={"text": 4.0, "audio": 0.25, "vision": 1.0})
    base = run.cfg["learning_rate"]
    lrs = {}
    parts = run.parts()
    for group in run.trainer.optimizer.param_groups:
        for m in ("text", "audio", "vision"):
            if {id(p) for p in group["params"]} & {id(p) for p in parts[m]}:
                lrs[m] = group["lr"]
    assert lrs == {"text": 4 * base, "audio": 0.25 * base, "vision": base}
    grouped = sum(len(g["params"]) for g in run.trainer.optimizer.param_groups)
    assert grouped == len([p for p in run.model.parameters() if p.requires_grad])


def test_a_data_set_without_text_and_audio_is_refused_before_any_cell(registry, tmp_path):
    runner = _runner(registry, tmp_path, dataset="av", hosts=["mmsa.lmf"], arms=["baseline"])
    with pytest.raises(RunnerError, match=r"mmsa\.lmf.*takes modalities text, audio"):
        runner.plan()
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_baseline_and_block_cells_of_a_seed_start_from_the_same_host(registry, tmp_path, kind):
    """The runner's build -> inject -> optimizers order: the block's init must not change the
    host's starting weights (MMIM re-initialises in its trainer: from the cell's seed)."""
    import pgm_plugins as pp
    from pgm_plugins.bench.arms import block_factory, get_arm

    runner = _runner(
        registry, tmp_path, dataset="clean-like", hosts=[f"mmsa.{kind}"], arms=["baseline"]
    )
    data = runner.load_data()
    states = {}
    for arm_name in ("baseline", "pgm", "capacity"):
        run = runner._build(f"mmsa.{kind}", data, 0, data.modalities)
        spec = get_arm(arm_name)
        factory = block_factory(spec.kind, spec.changes) if spec.block else None
        handle = None
        if factory is not None:
            handle = pp.inject(
                run.model, sites=run.sites, config=dict(run.block_config), block_factory=factory
            )
        run.optimizers(handle)
        states[arm_name] = {
            k: v.clone() for k, v in run.model.state_dict().items() if "pgm" not in k
        }
    base = states["baseline"]
    assert base
    for arm_name in ("pgm", "capacity"):
        other = states[arm_name]
        assert set(other) == set(base)
        differ = [k for k in base if not torch.equal(base[k], other[k])]
        assert differ == [], f"{arm_name}: {differ[:3]}"
