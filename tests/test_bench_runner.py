"""The benchmark runner: cells, pairing, resume, lock, determinism, arms, records."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

from pgm_plugins import hookimpl
from pgm_plugins.bench.arms import ARMS, lr_scale_grid
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.record import REQUIRED
from pgm_plugins.bench.runner import (
    Runner,
    RunnerError,
    classification_metrics,
    regression_metrics,
    standardise,
)
from pgm_plugins.bench.suite import parse_suite

#: what every record must hold (the schema, docs/results.md)
RECORD_KEYS = set(REQUIRED)


def tiny(protocol=None, data_dir=None, n=96, task="classification", redraw=None):
    """Two modalities, one a padded sequence; 2 folds per seed; label from both."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = (rng.normal(size=(n, 4, 5)) * 3 + 1).astype(np.float32)
    lengths = rng.integers(1, 5, size=n)
    score = a[:, 0] + b[:, 0, 0] / 3
    y = (score > 0.3).astype(np.int64) if task == "classification" else score.astype(np.float32)

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n)
        out = []
        for k in range(2):
            test = perm[k * 24 : (k + 1) * 24]
            rest = np.setdiff1d(perm, test)
            out.append(Fold(rest[:-16], rest[-16:], test, k, seed))
        return out

    return BenchData(
        "tiny",
        protocol or "default",
        "tiny test data",
        {"a": a, "b": b},
        y,
        task,
        folds,
        "0" * 64,
        "acc" if task == "classification" else "mae",
        num_classes=2 if task == "classification" else None,
        lengths={"b": lengths},
        extras={"truth": {"order_by_uni_share": ["a", "b"]}},
        redraw=redraw,
    )


def _broken_host(data, seed, modalities):
    raise ValueError("needs modalities text and audio")


def _own_lr_host(data, seed, modalities, *, hidden: int = 16):
    """late_fusion at its own learning rate: a host that takes no ``lr``."""
    from pgm_plugins.bench.late_fusion import LateFusionRun

    return LateFusionRun(data, seed, modalities, hidden=hidden)


def tiny_seed1_empty(protocol=None, data_dir=None):
    """tiny, but seed 1's split leaves the validation rows empty."""
    data = tiny(protocol, data_dir)
    good = data.folds

    def folds(seed):
        if seed == 1:
            return [Fold(f.train, f.valid[:0], f.test, f.fold, seed) for f in good(seed)]
        return good(seed)

    data.folds = folds
    return data


@pytest.fixture
def registry(core_registry):
    plugin = types.ModuleType("tiny_bench_plugin")

    @hookimpl
    def pgm_register_datasets(register):
        register("tiny", tiny, "tiny")
        register("tiny-reg", lambda **kw: tiny(task="regression", **kw), "tiny regression")
        register("tiny-seed1", tiny_seed1_empty, "tiny, seed 1 without validation rows")

    @hookimpl
    def pgm_register_bench_hosts(register):
        register("broken", _broken_host, "a host that takes no data set")
        register("own_lr", _own_lr_host, "late_fusion at its own learning rate")

    plugin.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    plugin.pgm_register_bench_hosts = pgm_register_bench_hosts  # type: ignore[attr-defined]
    reg = core_registry
    reg.register_plugin(plugin, "tiny")
    reg.refresh()
    return reg


def _suite(registry, **changes):
    table = {
        "dataset": "tiny",
        "hosts": ["late_fusion"],
        "arms": ["baseline", "pgm"],
        "seeds": [0, 1],
        "epochs": 2,
        "patience": 1,
        "batch": 32,
        **changes,
    }
    return parse_suite(
        "t",
        table,
        datasets=registry.datasets.names(),
        hosts=registry.bench_hosts.names(),
        arms=registry.arms.names(),
    )


def _runner(registry, tmp_path, **changes):
    return Runner(_suite(registry, **changes), tmp_path, registry=registry, quiet=True)


def _records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_cells_pair_arms_on_the_same_seeds_and_folds(registry, tmp_path):
    runner = _runner(registry, tmp_path, arms=["baseline", "pgm", "only.a", "only.b"])
    cells = runner.plan()
    # 2 seeds x 2 folds x (2 fusion arms + 2 single-modality arms)
    assert len(cells) == 2 * 2 * 4 == len(set(cells))
    assert {c.host for c in cells if c.arm.startswith("only.")} == {"late_fusion"}
    by_arm = {a: {(c.seed, c.fold) for c in cells if c.arm == a} for a in {c.arm for c in cells}}
    assert len({frozenset(v) for v in by_arm.values()}) == 1
    runner.run(cells)
    recs = list(_records(tmp_path / "t").values())
    sizes = {(r["key"]["seed"], r["key"]["fold"]): set() for r in recs}
    for r in recs:
        sizes[(r["key"]["seed"], r["key"]["fold"])].add(json.dumps(r["sizes"]))
        assert set(r) >= RECORD_KEYS, RECORD_KEYS - set(r)
        assert r["status"] == "done" and r["data"]["digest"] == "0" * 64
        assert r["truth"] == {"order_by_uni_share": ["a", "b"]}
    assert all(len(v) == 1 for v in sizes.values())  # every arm saw the same split
    fold_rows = runner.folds(0)
    assert not set(fold_rows[0].train) & set(fold_rows[0].test)


def test_filters_are_subsets_and_name_the_valid_ones(registry, tmp_path):
    runner = _runner(registry, tmp_path)
    with pytest.raises(RunnerError, match="Did you mean 'baseline'"):
        runner.plan(arms=["baselin"])
    with pytest.raises(RunnerError, match="valid: '0', '1'"):
        runner.plan(seeds=[7])
    with pytest.raises(RunnerError, match="--folds 5"):
        runner.plan(folds=[5])
    cells = runner.plan(arms=["pgm"], seeds=[1], folds=[0])
    assert [(c.arm, c.seed, c.fold) for c in cells] == [("pgm", 1, 0)]
    assert not (tmp_path / "t").exists()


def test_unknown_modality_arm_and_a_host_that_cannot_take_the_data(registry, tmp_path):
    with pytest.raises(RunnerError, match="no modality 'c'"):
        _runner(registry, tmp_path, arms=["only.c"]).plan()
    with pytest.raises(RunnerError, match=r"'broken' cannot take data set tiny.*text and audio"):
        _runner(registry, tmp_path, hosts=["late_fusion", "broken"]).plan()
    assert not (tmp_path / "t").exists()


def test_resume_skips_finished_cells_and_reruns_a_corrupt_one(registry, tmp_path, capsys):
    runner = _runner(registry, tmp_path)
    cells = runner.plan()
    first = runner.run(cells)
    assert first["ran"] == len(cells) == 8
    folder = tmp_path / "t"
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}
    again = _runner(registry, tmp_path).run(cells)
    assert again["ran"] == 0 and again["skipped"] == 8
    assert stamps == {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")
    }
    broken = sorted(folder.glob("*.json"))[3]
    broken.write_text('{"key": {"suite": "t", "arm"')
    third = _runner(registry, tmp_path).run(cells)
    assert third["ran"] == 1 and third["skipped"] == 7
    assert "corrupt result file" in capsys.readouterr().err
    assert json.loads(broken.read_text())["status"] == "done"


def test_a_cell_claimed_elsewhere_is_waited_for_naming_the_pid(
    registry, tmp_path, capsys, monkeypatch
):
    """Per-cell claims: a run skips a cell another process holds, runs the rest, waits (naming
    the holder's PID), and takes the cell over once the claim is released."""
    import threading

    from pgm_plugins.bench import executors
    from pgm_plugins.bench.claims import Claims

    runner = Runner(_suite(registry), tmp_path, registry=registry, quiet=False)
    cells = runner.plan()
    held = cells[0]
    claim = Claims(tmp_path / "t").take(runner.store.path(held.key("t")).stem)
    assert claim is not None
    stop = threading.Event()
    held_elsewhere = executors._Grid.held_elsewhere

    def announced(self, verb):  # the run says it waits: from now on the claim may go
        text = held_elsewhere(self, verb)
        stop.set()
        return text

    monkeypatch.setattr(executors._Grid, "held_elsewhere", announced)

    def release_once_waited_for() -> None:
        # not on a clock: a fixed delay races the run on a loaded machine
        stop.wait(300)
        claim.release()

    releaser = threading.Thread(target=release_once_waited_for)
    releaser.start()
    try:
        summary = runner.run(cells, retries=0)
    finally:
        stop.set()
        releaser.join()
        claim.release()
    err = capsys.readouterr().err
    assert f"waiting for 1 job(s) held by another run (PID {os.getpid()}: {held.text()})" in err
    assert summary["ran"] == len(cells) and not summary["failed"]
    assert len(list((tmp_path / "t").glob("*.json"))) == len(cells)


def _without_times(record):
    out = {k: v for k, v in record.items() if k not in ("time", "env")}
    return json.loads(json.dumps(out))


def test_a_cell_is_deterministic_per_seed_and_threads(registry, tmp_path):
    runner = _runner(registry, tmp_path, arms=["pgm"])
    cell = runner.plan(seeds=[1], folds=[1])[0]
    one, two = runner.run_cell(cell), runner.run_cell(cell)
    assert _without_times(one) == _without_times(two)
    other = runner.run_cell(runner.plan(seeds=[0], folds=[1])[0])
    assert _without_times(other)["curves"] != _without_times(one)["curves"]


def test_every_arm_runs_on_tiny_data(registry, tmp_path):
    arms = [*ARMS, "only.a", "only.b"]
    runner = _runner(registry, tmp_path, arms=arms, seeds=[0], epochs=1)
    cells = runner.plan(folds=[0])
    runner.run(cells)
    recs = {r["arm"]["name"]: r for r in _records(tmp_path / "t").values()}
    assert set(recs) == set(arms)
    host_params = recs["baseline"]["parameters"]["host"]
    for name, r in recs.items():
        assert 0 <= r["metrics"]["test"]["acc"] <= 1
        assert r["epochs_run"] == 1 and len(r["curves"]["valid_primary"]) == 1
        if ARMS.get(name) is not None and ARMS[name].block:
            assert r["parameters"]["block"] > 0 and r["parameters"]["host"] == host_params
            assert "block_config" in r
        else:
            assert r["parameters"]["block"] == 0 and "block_config" not in r
    assert recs["pgm"]["shares"] is not None and set(recs["pgm"]["shares"]) == {"a", "b"}
    parts = recs["pgm"]["parts"]
    assert set(parts) == {"a", "b"} and len(parts["a"]["uni"]) == len(parts["a"]["y"]) == 24
    assert recs["capacity"]["shares"] is None
    # a single-modality arm is the late-fusion host on that modality alone
    assert recs["only.a"]["parameters"]["host"] < host_params
    assert recs["only.a"]["key"]["host"] == "late_fusion"


def test_suite_lr_and_window_reach_only_the_hosts_that_take_them(registry, tmp_path):
    runner = _runner(registry, tmp_path, arms=["baseline"], seeds=[0], lr=0.01, window=4)
    record = runner.run_cell(runner.plan(folds=[0])[0])
    assert record["train"]["lr"] == 0.01 and "window" not in record["train"]


def test_regression_task(registry, tmp_path):
    runner = _runner(registry, tmp_path, dataset="tiny-reg", arms=["baseline", "pgm"], seeds=[0])
    runner.run(runner.plan(folds=[0]))
    recs = list(_records(tmp_path / "t").values())
    assert len(recs) == 2
    for r in recs:
        assert r["primary"] == "mae" and r["higher_is_better"] is False
        # no known scale (no extras["metric_dataset"]): mae and corr, no MOSI bins
        assert set(r["metrics"]["test"]) == {"mae", "corr", "loss"}
    pgm = next(r for r in recs if r["arm"]["name"] == "pgm")
    assert pgm["block_config"]["task"] == "regression"


def test_mslr_chooses_its_learning_rates_on_validation(registry, tmp_path):
    runner = _runner(registry, tmp_path, arms=["mslr"], seeds=[0], mslr_scales=[0.25, 1, 4])
    record = runner.run_cell(runner.plan(folds=[0])[0])
    grid = lr_scale_grid(("a", "b"), (0.25, 1.0, 4.0))
    assert [s["setting"] for s in record["selection"]] == grid and len(grid) == 5
    best = max(s["valid"] for s in record["selection"])
    assert record["setting"] in grid
    chosen = next(s for s in record["selection"] if s["setting"] == record["setting"])
    assert chosen["valid"] == best == record["metrics"]["valid"]["acc"]
    assert record["train"]["lr_scale"] == record["setting"]["lr_scale"]


def test_redraw_gives_fresh_training_inputs_each_epoch(registry, tmp_path):
    calls = []

    def redraw(rows, rng):
        calls.append(len(rows))
        return {"a": rng.normal(size=(len(rows), 6)).astype(np.float32)}

    data = tiny(redraw=redraw)
    runner = _runner(registry, tmp_path, arms=["baseline"], seeds=[0], epochs=3, patience=5)
    runner.data = data
    record = runner.run_cell(runner.plan(folds=[0])[0])
    assert calls == [len(data.folds(0)[0].train)] * record["epochs_run"] == [56] * 3


def test_standardise_uses_training_rows_and_keeps_padding_zero():
    data = tiny()
    train = data.folds(0)[0].train
    std, _stats = standardise(data, train)
    assert np.allclose(std.x["a"][train].mean(0), 0, atol=1e-5)
    assert np.allclose(std.x["a"][train].std(0), 1, atol=1e-4)
    mask = np.arange(4)[None, :] < data.lengths["b"][:, None]
    assert (std.x["b"][~mask] == 0).all()
    real = std.x["b"][train][mask[train]]
    assert np.allclose(real.mean(0), 0, atol=1e-5)


def test_metrics():
    y = np.array([0, 1, 1, 0, 1])
    logits = np.array([[2.0, 0], [0, 1], [1, 0], [0, 3], [0, 1]])
    m = classification_metrics(y, logits, primary="acc2")
    assert m["acc"] == m["acc2"] == 0.6
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 1 -> 2/3; weights 2 and 3
    assert m["wf1"] == pytest.approx((2 * 0.5 + 3 * 2 / 3) / 5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    scores = classification_metrics(y, np.array([-1.0, 0.5, -0.2, 0.3, 2.0]))
    assert scores["acc"] == 0.6 and "acc2" not in scores
    assert scores["loss"] == pytest.approx(np.mean([0, 0.5, 1.2, 1.3, 1.0]))
    r = regression_metrics(np.array([-2.0, 0.0, 1.0, 2.5]), np.array([-1.6, 0.4, -0.2, 3.4]))
    assert r["mae"] == pytest.approx(np.mean([0.4, 0.4, 1.2, 0.9]))
    assert r["acc7"] == 0.5  # rounded, clipped to [-3, 3]: -2/-2, 0/0, 1/0, 2(.5)/3
    assert r["acc2_has0"] == 0.75 and r["acc2_non0"] == pytest.approx(2 / 3)


# ------------------------------------------------- stale settings, digests, one-row batches
def test_changed_settings_refuse_resume_and_name_the_cells(registry, tmp_path):
    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    folder = tmp_path / "t"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    for r in _records(folder).values():
        assert r["cell_digest"] and r["cell_settings"]["data_digest"] == "0" * 64
        assert "threads" not in r["cell_settings"]
    # same settings, other thread count: nothing to rerun
    assert _runner(registry, tmp_path, seeds=[0], threads=2).run(cells)["skipped"] == 2
    # the block config reaches only the pgm cell; epochs reach both
    changed = _runner(registry, tmp_path, seeds=[0], block={"rho": 0.2})
    with pytest.raises(RunnerError) as err:
        changed.run(changed.plan(folds=[0]))
    text = str(err.value)
    assert "1 finished cell(s)" in text and "late_fusion pgm fold 0 seed 0" in text
    assert "block: {} -> {'rho': 0.2}" in text and "--results" in text
    longer = _runner(registry, tmp_path, seeds=[0], epochs=3)
    with pytest.raises(RunnerError, match=r"(?s)2 finished cell\(s\).*epochs: 2 -> 3"):
        longer.run(longer.plan(folds=[0]))
    assert stamps == {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    # an older record without a digest is accepted as it is
    for p in folder.glob("*.json"):
        r = json.loads(p.read_text())
        del r["cell_digest"]
        p.write_text(json.dumps(r))
    assert longer.run(longer.plan(folds=[0]))["skipped"] == 2


def test_train_digest_tells_a_split_drawn_per_seed_from_a_fixed_one(registry, tmp_path):
    from pgm_plugins.bench.report import build_report

    runner = _runner(registry, tmp_path, seeds=[0, 1, 2])
    runner.run(runner.plan(folds=[0]))  # one fold index, but tiny draws its split per seed
    recs = list(_records(tmp_path / "t").values())
    by_seed: dict[int, set[str]] = {}
    for r in recs:
        by_seed.setdefault(r["key"]["seed"], set()).add(r["train_digest"])
    assert all(len(d) == 1 for d in by_seed.values())  # arms of a seed share the rows
    assert len(set.union(*by_seed.values())) == 3
    report = build_report(tmp_path, "t", tmp_path / "out", plots=False, step_time_files=[])
    assert set(report.comparisons.loc[report.comparisons["n"] >= 2, "test"]) == {"corrected"}
    assert "overlapping row sets" in report.markdown
    # the same rows in every seed: the plain paired t
    fixed = Runner(
        _suite(registry, seeds=[0, 1, 2]), tmp_path / "fixed", registry=registry, quiet=True
    )
    data = fixed.load_data()
    first = data.folds(0)
    fixed.data = BenchData(
        **{
            **data.__dict__,
            "folds": lambda seed: [Fold(f.train, f.valid, f.test, f.fold, seed) for f in first],
        }
    )
    fixed.run(fixed.plan(folds=[0]))
    report = build_report(
        tmp_path / "fixed", "t", tmp_path / "out2", plots=False, step_time_files=[]
    )
    assert set(report.comparisons.loc[report.comparisons["n"] >= 2, "test"]) == {"paired"}
    assert "only the model's seed differs" in report.markdown


def test_a_diverged_cell_is_recorded_as_failed_and_counted(registry, tmp_path):
    from pgm_plugins.bench.report import build_report

    runner = _runner(
        registry,
        tmp_path,
        dataset="tiny-reg",
        seeds=[0],
        host_options={"late_fusion": {"lr": 1e12, "clip": 1e30}},
    )
    out = runner.run(runner.plan())
    assert out["ran"] == 4  # the suite went on past the first diverged cell
    recs = list(_records(tmp_path / "t").values())
    assert {r["stopped"] for r in recs} == {"non-finite"}
    for r in recs:
        assert np.isnan(r["metrics"]["test"]["mae"]) and "non-finite" in r["train"]["why"]
    # a rerun does not retry them (they are finished, as failed)
    assert (
        _runner(
            registry,
            tmp_path,
            dataset="tiny-reg",
            seeds=[0],
            host_options={"late_fusion": {"lr": 1e12, "clip": 1e30}},
        ).run(runner.plan())["skipped"]
        == 4
    )
    report = build_report(tmp_path, "t", tmp_path / "out", plots=False, step_time_files=[])
    assert not report.problems and len(report.cells) == 4
    assert "| `pgm` | 2 (2 failed) |" in report.markdown
    assert "FAILED: 4 cell(s) diverged" in report.markdown
    assert set(report.table["failed"]) == {2}


def test_store_reruns_partial_and_undecodable_records(registry, tmp_path, capsys):
    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    partial, binary = sorted((tmp_path / "t").glob("*.json"))
    key = json.loads(partial.read_text())["key"]
    partial.write_text(json.dumps({"key": key, "status": "done"}))
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert _runner(registry, tmp_path, seeds=[0]).done(cells) == [False, False]
    again = _runner(registry, tmp_path, seeds=[0]).run(cells)
    assert again["ran"] == 2
    err = capsys.readouterr().err
    assert "partial record" in err and "corrupt result file" in err
    assert all(r["status"] == "done" and "metrics" in r for r in _records(tmp_path / "t").values())


def test_bad_input_is_refused_in_plan_before_any_cell(registry, tmp_path):
    cases = [
        (
            {"options": {"nn": 5}},
            r"data set 'tiny' has no option 'nn'; valid: 'n', 'redraw', 'task'",
        ),
        (
            {"host_options": {"late_fusion": {"hiden": 8}}},
            r"bench host 'late_fusion' \(host_options\) has no option 'hiden'.*Did you mean "
            r"'hidden'",
        ),
        ({"block": {"rhoo": 0.5}}, r"arm 'pgm' cannot put its block.*unknown PgMConfig field"),
        ({"block": {"partitioner": "gaet"}}, r"arm 'pgm'.*Did you mean 'gate'"),
        (
            {"hosts": ["late_fusion", "own_lr"], "lr": 0.5},
            r"lr = 0.5 would be ignored by host\(s\) own_lr.*hosts that take lr: 'late_fusion'",
        ),
        ({"dataset": "tiny-seed1"}, r"fold 0 of seed 1 has an empty valid split"),
    ]
    for table, message in cases:
        with pytest.raises(RunnerError, match=message):
            _runner(registry, tmp_path, **table).plan()
    assert not list(tmp_path.rglob("*.json"))
    # lr given per host where the host takes it, and a host without lr left alone: fine
    _runner(registry, tmp_path, hosts=["late_fusion", "own_lr"]).plan()
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunnerError, match=r"results folder .*afile is a file, not a folder"):
        Runner(_suite(registry), tmp_path / "afile", registry=registry)


def test_a_relative_npz_path_is_read_beside_the_suite_file(tmp_path):
    from pgm_plugins.bench.suite import load_suite

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "views.npz",
        labels=np.arange(40) % 2,
        a=rng.normal(size=(40, 3)),
        b=rng.normal(size=(40, 2)),
    )
    (tmp_path / "rel.toml").write_text(
        'dataset = "npz"\nhosts = ["late_fusion"]\narms = ["baseline"]\nseeds = [0]\n'
        '[options]\npath = "views.npz"\n'
    )
    suite = load_suite(str(tmp_path / "rel.toml"))
    cwd = os.getcwd()
    try:
        os.chdir("/")
        data = Runner(suite, tmp_path / "res").load_data()
    finally:
        os.chdir(cwd)
    assert data.extras["path"] == str(tmp_path / "views.npz")


def test_records_carry_the_versions_of_imported_packages():
    import scipy

    from pgm_plugins.bench.results import environment

    versions = environment()["versions"]
    assert versions["scipy"] == scipy.__version__
    assert {"python", "torch", "numpy", "pgm_plugins"} <= set(versions)


def test_records_say_which_cpu_trained_them():
    import torch

    from pgm_plugins.bench.record import cpu_label
    from pgm_plugins.bench.results import CPU_ISA, environment

    cpu = environment()["machine"]["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["model"] and set(cpu["isa"]) <= set(CPU_ISA)
    assert cpu_label(cpu).startswith(f"{cpu['capability']}: ")
    assert environment()["machine"]["cpu"] is not cpu  # each record its own copy


def test_single_modality_cells_can_run_alone_under_late_fusion(registry, tmp_path):
    runner = _runner(registry, tmp_path, hosts=["own_lr"], arms=["baseline", "only.a"])
    cells = runner.plan(hosts=["late_fusion"], folds=[0])
    assert {(c.host, c.arm) for c in cells} == {("late_fusion", "only.a")}
    assert {(c.host, c.arm) for c in runner.plan(folds=[0])} == {
        ("own_lr", "baseline"),
        ("late_fusion", "only.a"),
    }
    with pytest.raises(RunnerError, match=r"--hosts 'late_fusin'.*Did you mean 'late_fusion'"):
        runner.plan(hosts=["late_fusin"])


def test_batch_rows_never_trains_on_a_one_row_batch():
    from pgm_plugins.bench.bench_host import batch_rows

    rows = np.arange(100, 133)  # 33 rows: two batches of 16 and one of 1
    train = list(batch_rows(rows, 16, np.random.default_rng(0)))
    assert [len(b) for b in train] == [16, 17]
    assert sorted(np.concatenate(train).tolist()) == rows.tolist()
    # the same draw and order as one permutation sliced in batches (other cells unchanged)
    order = rows[np.random.default_rng(0).permutation(len(rows))]
    assert np.concatenate(train).tolist() == order.tolist()
    # evaluation keeps every batch as it is, in order; a remainder other than 1 is kept too
    assert [len(b) for b in batch_rows(rows, 16, None)] == [16, 16, 1]
    assert np.concatenate(list(batch_rows(rows, 16, None))).tolist() == rows.tolist()
    assert [len(b) for b in batch_rows(np.arange(34), 16, np.random.default_rng(0))] == [16, 16, 2]
    assert [len(b) for b in batch_rows(rows[:1], 16, np.random.default_rng(0))] == [1]
    assert [len(b) for b in batch_rows(rows[:5], 1, np.random.default_rng(0))] == [1] * 5
    with pytest.raises(ValueError, match="got 0"):
        list(batch_rows(rows, 0, None))


def test_a_stale_cell_names_the_keys_of_a_table_that_changed_not_the_tables_whole():
    """A new block default (``compile``) made every PgM cell of an older run stale; the refusal
    listed both ``block_defaults`` tables whole (two 40-key dicts per cell) instead of the one
    key that was added."""
    from pgm_plugins.bench.runner import _differences

    old = {"block_defaults": {"rho": 0.5, "tau": 1.0}, "code": {"pgm_plugins code": "aa"}}
    new = {
        "block_defaults": {"rho": 0.5, "tau": 1.0, "compile": False},
        "code": {"pgm_plugins code": "bb"},
    }
    assert _differences(old, new) == [
        "block_defaults.compile: '<absent>' -> False",
        "code.pgm_plugins code: 'aa' -> 'bb'",
    ]
