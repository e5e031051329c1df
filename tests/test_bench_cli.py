"""``pgm bench run / list / report``: bad input exits 2 and writes nothing; a run prints its
table."""

from __future__ import annotations

import types

import numpy as np
import pytest

from pgm_plugins import hookimpl
from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.suite import SUITES_DIR, suite_name
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


@pytest.mark.parametrize(
    ("option", "text"), [("--threads", "0"), ("--jobs", "-1"), ("--threads", "two")]
)
def test_a_count_below_one_is_refused_naming_the_option(env, capsys, option, text):
    suite, results = env
    with pytest.raises(SystemExit) as exc:
        _run("run", suite, "--results", results, option, text)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{option[2:]} {text!r}: give an integer >= 1" in err
    assert not results.exists()


def test_run_prints_the_table_and_resumes(env, capsys):
    suite, results = env
    folder = results / suite_name(str(suite))
    assert _run("run", suite, "--results", results, "--arms", "baseline", "pgm") == 0
    out = capsys.readouterr()
    assert "| `pgm` |" in out.out and "| `baseline` |" in out.out
    assert len(list(folder.glob("*.json"))) == 4
    assert _run("run", suite, "--results", results, "--quiet", "--seeds", "0") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(list(folder.glob("*.json"))) == 5  # only.a on seed 0 added


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


# --------------------------------------------------------------- a suite's identity is its file


def test_a_users_suite_named_like_a_builtin_one_leaves_the_builtin_results_alone(
    env, capsys, tmp_path
):
    # the issue: `pgm bench run mosi.toml` from another folder wrote into results/mosi and
    # re-rendered the committed MOSI report
    _, results = env
    committed = results / "mosi"
    (committed / "report").mkdir(parents=True)
    (committed / "cell.json").write_text("{}")
    (committed / "report" / "report.md").write_text("the committed report\n")
    before = sorted((p.relative_to(committed), p.read_bytes()) for p in committed.rglob("*.*"))
    mine = tmp_path / "elsewhere" / "mosi.toml"
    mine.parent.mkdir()
    mine.write_text(SUITE)
    assert _run("run", mine, "--results", results, "--seeds", "0", "--arms", "baseline") == 0
    err = capsys.readouterr().err
    after = sorted((p.relative_to(committed), p.read_bytes()) for p in committed.rglob("*.*"))
    assert after == before
    name = suite_name(str(mine))
    assert name.startswith("mosi-") and len(name) == len("mosi-") + 8
    assert f"results in {results / name}" in err
    assert len(list((results / name).glob("*.json"))) == 1
    assert (results / name / "report" / "report.md").is_file()
    # report and list find it: by the file's path, by its folder, by the bare stem
    for given in (mine, name):
        assert _run("report", given, "--results", results, "--format", "none") == 0
    assert f"report of suite {name!r}" in capsys.readouterr().err
    assert _run("list", "--results", results) == 0
    out = capsys.readouterr().out
    assert f"  {name:<16} done 1; from {mine}" in out


def test_two_suite_files_named_alike_never_share_a_folder(env, capsys, tmp_path):
    _, results = env
    files = []
    for where in ("a", "b"):
        path = tmp_path / where / "exp.toml"
        path.parent.mkdir()
        path.write_text(SUITE)
        files.append(path)
        assert _run("run", path, "--results", results, "--quiet", "--seeds", "0") == 0
    names = [suite_name(str(p)) for p in files]
    assert names[0] != names[1] and all(n.startswith("exp-") for n in names)
    for n in names:
        assert len(list((results / n).glob("*.json"))) == 3
    capsys.readouterr()
    # the bare stem is ambiguous now: refused, naming both folders and the fix
    assert _run("report", "exp", "--results", results) == 2
    err = capsys.readouterr().err
    assert names[0] in err and names[1] in err and "path/to/exp.toml" in err


def test_builtin_suites_keep_their_names():
    assert suite_name("quick") == "quick"
    assert suite_name(str(SUITES_DIR / "quick.toml")) == "quick"
    # a copy of a built-in file elsewhere is another suite
    assert suite_name("/somewhere/else/quick.toml").startswith("quick-")
