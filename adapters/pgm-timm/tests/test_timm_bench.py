"""The ``timm.av`` bench host: built, trained and scored by ``pgm bench``'s runner like any host."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from pgm_timm import plugin as timm_plugin
from pgm_timm.bench import AvTowersRun

from pgm_plugins import hookimpl
from pgm_plugins.bench import plugin as bench_plugin
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.runner import Runner
from pgm_plugins.bench.suite import parse_suite
from pgm_plugins.registry import PluginRegistry

N, SIDE, T, C = 60, 28, 6, 5


def av_tiny(protocol=None, data_dir=None, image_shape=(N, SIDE * SIDE)):
    rng = np.random.default_rng(0)
    y = np.arange(N) % 3
    image = rng.normal(size=image_shape).astype(np.float32)
    audio = rng.normal(size=(N, T, C)).astype(np.float32) + y[:, None, None]
    rows = np.arange(N)

    def folds(seed):
        return [Fold(rows[:36], rows[36:48], rows[48:], 0, seed)]

    return BenchData(
        name="av-tiny",
        protocol="default",
        description="random images, audio frames shifted by the label",
        x={"image": image, "audio": audio},
        y=y.astype(np.int64),
        task="classification",
        folds=folds,
        digest="0" * 64,
        primary="acc",
        num_classes=3,
        lengths={"audio": np.full(N, T, dtype=np.int64)},
    )


@pytest.fixture
def registry():
    data = types.ModuleType("av_tiny_data")

    @hookimpl
    def pgm_register_datasets(register):
        register("av-tiny", av_tiny, "tiny image x audio")
        register("av-flat", lambda **kw: av_tiny(image_shape=(N, 30), **kw), "not square")

    data.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    reg = PluginRegistry(load_entry_points=False)
    reg.register_plugin(bench_plugin, "pgm_plugins.bench")  # late_fusion, for the only.* arms
    reg.register_plugin(data, "av-tiny")
    reg.register_plugin(timm_plugin, "pgm_timm")
    reg.refresh()
    return reg


def _runner(registry, tmp_path, dataset="av-tiny", **changes):
    table = {
        "dataset": dataset,
        "hosts": ["timm.av"],
        "arms": ["baseline", "pgm", "capacity", "only.audio"],
        "seeds": [0],
        "epochs": 1,
        "patience": 1,
        "batch": 16,
        "host_options": {"timm.av": {"tower": "timm:test_resnet", "dim": 16}},
        **changes,
    }
    suite = parse_suite(
        "t", table, datasets=registry.datasets.names(), hosts=registry.bench_hosts.names()
    )
    return Runner(suite, tmp_path, registry=registry, quiet=True)


def test_timm_av_is_a_bench_host_that_every_arm_runs_on(registry, tmp_path):
    assert "timm.av" in registry.bench_hosts.names()
    runner = _runner(registry, tmp_path)
    runner.run(runner.plan())
    recs = {
        r["arm"]["name"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "t").glob("*.json"))
    }
    assert set(recs) == {"baseline", "pgm", "capacity", "only.audio"}
    base, pgm = recs["baseline"], recs["pgm"]
    assert base["key"]["host"] == "timm.av" and recs["only.audio"]["key"]["host"] == "late_fusion"
    assert base["train"]["tower"] == "timm:test_resnet" and base["train"]["image_side"] == SIDE
    assert pgm["parameters"]["host"] == base["parameters"]["host"]
    assert pgm["parameters"]["block"] > 0 and set(pgm["shares"]) == {"image", "audio"}
    for r in recs.values():
        assert 0 <= r["metrics"]["test"]["acc"] <= 1


def test_parts_sites_and_batches():
    run = AvTowersRun(av_tiny(), 0, ("image", "audio"), tower="timm:test_resnet", dim=16)
    assert run.sites == {"image": "encoders.image", "audio": "encoders.audio"}
    parts = run.parts()
    ids = [id(p) for ps in parts.values() for p in ps]
    assert sorted(parts) == ["audio", "fusion", "image"]
    assert len(ids) == len(set(ids)) == len(list(run.model.parameters()))
    data = av_tiny()
    (inputs, y, rows), *_ = run.batches(data, np.arange(10), 4, None)
    assert inputs["image"].shape == (4, 1, SIDE, SIDE) and inputs["audio"].shape == (4, T, C)
    assert rows.tolist() == [0, 1, 2, 3] and y.tolist() == data.y[:4].tolist()
    assert run.predict(inputs).shape == (4, 3)


def test_bad_data_is_refused_with_what_was_given(registry, tmp_path):
    with pytest.raises(ValueError, match=r"square grey images.*got shape \(60, 30\)"):
        AvTowersRun(av_tiny(image_shape=(N, 30)), 0, ("image", "audio"))
    with pytest.raises(ValueError, match=r"together; got \['audio'\].*late_fusion"):
        AvTowersRun(av_tiny(), 0, ("audio",))
    runner = _runner(registry, tmp_path, dataset="av-flat", arms=["baseline"])
    with pytest.raises(Exception, match="square grey images"):
        runner.plan()
    assert not list(tmp_path.rglob("*.json"))


def test_regression_targets_stay_scores():
    data = av_tiny()
    data.task, data.num_classes = "regression", None
    data.y = np.linspace(-1, 1, N).astype(np.float32)
    run = AvTowersRun(data, 0, ("image", "audio"), tower="timm:test_resnet", dim=16)
    (inputs, y, _), *_ = run.batches(data, np.arange(4), 4, None)
    assert y.dtype.is_floating_point and y.tolist() == pytest.approx(data.y[:4].tolist())
    assert run.predict(inputs).shape == (4,)


def test_a_tower_that_cannot_take_the_images_fails_when_built():
    with pytest.raises(ValueError, match=r"'timm:test_vit'.*\[1, 28, 28\].*img_size=28"):
        AvTowersRun(av_tiny(), 0, ("image", "audio"), tower="timm:test_vit", dim=16)
    run = AvTowersRun(
        av_tiny(),
        0,
        ("image", "audio"),
        tower="timm:test_vit",
        tower_options={"img_size": 28, "patch_size": 7},
        dim=16,
    )
    assert run.recipe["tower_options"] == {"img_size": 28, "patch_size": 7}


def test_padded_audio_and_other_data_are_refused_naming_the_shapes():
    data = av_tiny()
    data.lengths = {"audio": np.r_[np.full(N - 1, T), 2].astype(np.int64)}
    with pytest.raises(ValueError, match=r"padded \(real frames 2-6 of 6\).*frames=32"):
        AvTowersRun(data, 0, ("image", "audio"), tower="timm:test_resnet")
    other = av_tiny()
    other.x = {"a": other.x["image"], "b": other.x["audio"]}
    with pytest.raises(ValueError, match=r"needs image \[N, side \* side\].*'a': \(60, 784\)"):
        AvTowersRun(other, 0, ("a", "b"))
    extra = av_tiny()
    extra.x["stats"] = np.zeros((N, 4), np.float32)
    with pytest.raises(ValueError, match=r"got \['image', 'audio', 'stats'\] \(av-tiny has"):
        AvTowersRun(extra, 0, ("image", "audio", "stats"))
