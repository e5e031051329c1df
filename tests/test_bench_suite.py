"""Suite files: validation with nearest-match errors; every committed suite parses."""

from __future__ import annotations

import pytest

from pgm_plugins.bench.suite import SUITES_DIR, SuiteError, list_suites, load_suite, parse_suite

DATASETS = ["synthetic", "mosi-utterance", "av-digits", "npz", "mmsa-pkl", "mult-pkl"]
HOSTS = [
    "late_fusion",
    "timm.av",
    *(f"mmsa.{k}" for k in ("mult", "misa", "self_mm", "tfn", "lmf", "mmim")),
]
GOOD = {
    "dataset": "synthetic",
    "hosts": ["late_fusion"],
    "arms": ["baseline", "pgm", "only.a"],
    "seeds": [0, 1],
}


def _parse(table):
    return parse_suite("t", table, datasets=DATASETS, hosts=HOSTS)


@pytest.mark.parametrize("name", list_suites())
def test_committed_suites_parse(name):
    suite = load_suite(name, datasets=DATASETS, hosts=HOSTS)
    assert suite.name == name and suite.seeds and suite.arms and suite.hosts
    assert len(suite.digest) == 64 and suite.file.endswith(f"{name}.toml")


def test_quick_suite():
    suite = load_suite("quick", datasets=DATASETS, hosts=HOSTS)
    assert suite.dataset == "synthetic" and len(suite.seeds) == 5
    assert {"baseline", "pgm", "capacity", "uni_heads", "mslr"} <= set(suite.arms)
    assert any(a.startswith("only.") for a in suite.arms)


def test_good_suite_defaults():
    suite = _parse(GOOD)
    assert suite.protocol is None and suite.folds is None and suite.threads == 1
    assert suite.arms == ("baseline", "pgm", "only.a") and suite.epochs == 20


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"arms": ["pgmm"]}, "Did you mean 'pgm'"),
        ({"arms": ["host"]}, "unknown arm 'host'"),
        ({"dataset": "synthetik"}, "Did you mean 'synthetic'"),
        ({"hosts": ["late_fusio"]}, "Did you mean 'late_fusion'"),
        ({"hosts": ["mmsa.mul"]}, "Did you mean 'mmsa.mult'"),
        ({"seeds": []}, "seeds must be"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"epochs": 0}, "epochs must be"),
        ({"folds": "all"}, "folds must be"),
        ({"lr": -1}, "lr must be"),
        ({"mslr_scales": [0]}, "mslr_scales must be"),
        ({"options": 3}, "options must be a table"),
        ({"host_options": {"mmsa.tfn": {}}}, "unknown host in host_options"),
        ({"seed": [1]}, "unknown key 'seed'"),
    ],
)
def test_bad_suite_errors(change, needle):
    with pytest.raises(SuiteError, match=needle):
        _parse({**GOOD, **change})


def _host_error(host: str) -> str:
    with pytest.raises(SuiteError) as err:
        parse_suite("t", {**GOOD, "hosts": [host]}, datasets=DATASETS, hosts=["late_fusion"])
    assert f"unknown host {host!r}" in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(("host", "dist"), [("mmsa.lmf", "pgm-mmsa"), ("timm.av", "pgm-timm")])
def test_a_host_of_an_uninstalled_adapter_names_its_distribution(host, dist, monkeypatch):
    """Installed from the wheel alone, the built-in suites name hosts no plugin registered: the
    error says which adapter distribution provides them and how to install it."""
    import importlib.metadata as md

    def absent(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", absent)
    assert f"pip install -c constraints.txt ./adapters/{dist}" in _host_error(host)


def test_an_installed_adapter_that_is_not_loaded_is_not_called_missing(monkeypatch):
    """Installed but filtered out, or failing to import: reinstalling would not help, so the
    error says what did happen."""
    from pgm_plugins.registry import get_registry
    from pgm_plugins.registry.manager import PluginInfo

    monkeypatch.setenv("PGM_BLOCK_PLUGINS", "mmsa")
    text = _host_error("mmsa.lmf")
    assert "pgm-mmsa, installed but not loaded" in text and "PGM_BLOCK_PLUGINS='mmsa'" in text
    assert "pip install" not in text
    broken = PluginInfo("mmsa", "pgm-mmsa", "0.1.0", error="ImportError: no module named MMSA")
    monkeypatch.setitem(get_registry().plugins, "mmsa", broken)
    assert "failed to load: ImportError: no module named MMSA" in _host_error("mmsa.lmf")


def test_a_misspelt_host_of_an_installed_adapter_names_no_distribution():
    with pytest.raises(SuiteError) as err:
        _parse({**GOOD, "hosts": ["mmsa.lmff"]})
    assert "Did you mean 'mmsa.lmf'" in str(err.value) and "pip install" not in str(err.value)


def test_missing_key():
    with pytest.raises(SuiteError, match="missing key 'seeds'"):
        _parse({k: v for k, v in GOOD.items() if k != "seeds"})


def test_unknown_suite_name_lists_valid():
    with pytest.raises(SuiteError, match="Did you mean 'quick'"):
        load_suite("quik")


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("dataset = \n")
    with pytest.raises(SuiteError, match="not a valid TOML file"):
        load_suite(str(path), datasets=DATASETS, hosts=HOSTS)


def test_suites_dir_is_the_repository_folder():
    assert (SUITES_DIR / "quick.toml").is_file()
