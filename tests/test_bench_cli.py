"""``pgm bench run / list / report``: bad input exits 2 and writes nothing; a run prints its
table."""

from __future__ import annotations

import types

import numpy as np
import pytest

from pgm_plugins import hookimpl
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.cli import main


def _tiny(protocol=None, data_dir=None, n=64):
    if data_dir is not None and data_dir.endswith("missing"):
        raise FileNotFoundError(f"tiny: no file {data_dir}/tiny.npz")
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(n, 4)).astype(np.float32)}
    x["b"] = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x["a"][:, 0] + x["b"][:, 0] > 0).astype(np.int64)

    def folds(seed):
        perm = np.random.default_rng(seed).permutation(n)
        return [Fold(perm[:32], perm[32:48], perm[48:], 0, seed)]

    return BenchData(
        "tiny", "default", "tiny", x, y, "classification", folds, "1" * 64, "acc", num_classes=2
    )


SUITE = """
dataset = "tiny"
hosts = ["late_fusion"]
arms = ["baseline", "pgm", "only.a"]
seeds = [0, 1]
epochs = 2
patience = 1
"""


@pytest.fixture
def env(tmp_path, monkeypatch, fresh_registry):
    plugin = types.ModuleType("tiny_cli_plugin")

    @hookimpl
    def pgm_register_datasets(register):
        register("tiny", _tiny, "tiny test data")

    plugin.pgm_register_datasets = pgm_register_datasets  # type: ignore[attr-defined]
    reg = fresh_registry
    reg.register_plugin(plugin, "tiny")
    reg.refresh()
    monkeypatch.delenv("PGM_DATA_DIR", raising=False)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    return suite, tmp_path / "results"


def _run(*args):
    return main(["bench", *map(str, args)])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--hosts", "late_fusio"], "Did you mean 'late_fusion'"),
        (["--arms", "pgmm"], "Did you mean 'pgm'"),
        (["--arms", "host"], "--arms 'host' is not in the suite"),
        (["--seeds", "5"], "valid: '0', '1'"),
        (["--folds", "3"], "--folds 3 is not in the suite"),
        (["--data-dir", "/nowhere/missing"], "/nowhere/missing/tiny.npz"),
    ],
)
def test_bad_filters_exit_2_and_write_nothing(env, capsys, extra, needle):
    suite, results = env
    assert _run("run", suite, "--results", results, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgm bench run: ") and needle in err
    assert not results.exists()


def test_unknown_suite_lists_the_valid_ones(env, capsys):
    _, results = env
    assert _run("run", "quik", "--results", results) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'quik'" in err and "Did you mean 'quick'" in err
    assert not results.exists()


def test_seed_that_is_not_a_number(env, capsys):
    suite, results = env
    with pytest.raises(SystemExit) as exc:
        _run("run", suite, "--results", results, "--seeds", "one")
    assert exc.value.code == 2 and "seed 'one' is not an integer" in capsys.readouterr().err


def test_run_prints_the_table_and_resumes(env, capsys):
    suite, results = env
    assert _run("run", suite, "--results", results, "--arms", "baseline", "pgm") == 0
    out = capsys.readouterr()
    assert "| `pgm` |" in out.out and "| `baseline` |" in out.out
    assert len(list((results / "tiny").glob("*.json"))) == 4
    assert _run("run", suite, "--results", results, "--quiet", "--seeds", "0") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(list((results / "tiny").glob("*.json"))) == 5  # only.a on seed 0 added


@pytest.mark.parametrize("option", ["--arm", "--result"])
def test_an_abbreviated_option_is_refused_with_the_nearest_one(env, capsys, option):
    # argparse would take a unique prefix for the full option; a typo must not run anything
    suite, results = env
    with pytest.raises(SystemExit) as exc:
        _run("run", suite, option, results)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"unrecognized arguments: {option}" in err and "options of 'pgm bench run'" in err
    assert f"Did you mean '{option}s'?" in err
    assert not results.exists()


def test_list_shows_suites_data_sets_and_hosts(env, capsys):
    _, results = env
    assert _run("list", "--results", results) == 0
    out = capsys.readouterr().out
    assert "suites (built in; results under" in out and "quick" in out
    assert "tiny             tiny" in out and "late_fusion" in out


def test_report_without_results_exits_2(env, capsys):
    _, results = env
    assert _run("report", "tiny", "--results", results) == 2
    assert "pgm bench run" in capsys.readouterr().err


def test_fetch_an_unknown_data_set_exits_2_with_the_nearest_match(tmp_path, capsys):
    assert main(["bench", "fetch", "mosi-utterence", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'av-digits', 'mosi-utterance'" in err and "Did you mean 'mosi-utterance'" in err
    assert list(tmp_path.iterdir()) == []


def test_fetch_says_which_folder_to_use(tmp_path, capsys, monkeypatch):
    from pgm_plugins.bench.data import catalog

    monkeypatch.setattr(catalog, "fetch_dataset", lambda name, cache_dir: tmp_path / "cache")
    assert main(["bench", "fetch", "av-digits", "--cache-dir", str(tmp_path)]) == 0
    assert f"--data-dir {tmp_path / 'cache'}" in capsys.readouterr().out
