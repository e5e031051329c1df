"""What `pgm bench` names mean: a built-in suite's name, the data set's own protocol, the data
folder's source, and the benchmark plugin a filter left out."""

from __future__ import annotations

import pytest

from pgm_plugins import cli
from pgm_plugins.bench.suite import SuiteError, load_suite


def test_a_builtin_name_never_means_a_users_file_of_that_stem(tmp_path):
    (tmp_path / "quick-e8037528").mkdir()
    (tmp_path / "quick-e8037528" / "x.json").write_text("{}")
    (tmp_path / "mine-0123abcd").mkdir()
    (tmp_path / "mine-0123abcd" / "x.json").write_text("{}")
    assert cli._report_names(["quick"], tmp_path) == ["quick"]  # the built-in's own folder
    assert cli._report_names(["mine"], tmp_path) == ["mine-0123abcd"]  # a user's file


def test_list_shows_the_protocol_a_suite_runs(capsys, tmp_path):
    assert cli.main(["bench", "list", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "av-digits (speaker)" in out and "av-digits (default)" not in out


def test_a_filtered_out_bench_plugin_is_named_in_the_error(monkeypatch):
    from pgm_plugins.registry import PluginRegistry, use_registry

    monkeypatch.setenv("PGM_LOAD_PLUGINS", "pgm_timm")
    with use_registry(PluginRegistry()), pytest.raises(SuiteError) as err:
        load_suite("quick", datasets=None)
    text = str(err.value)
    assert "unknown data set 'synthetic'" in text
    assert "add pgm_plugins.bench to PGM_LOAD_PLUGINS (now 'pgm_timm')" in text


def test_the_data_folder_error_names_the_variable_that_chose_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PGM_DATA_DIR", str(tmp_path / "nothing"))
    args = ["bench", "run", "mosi", "--seeds", "0", "--hosts", "late_fusion", "--arms"]
    code = cli.main([*args, "baseline", "--results", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is $PGM_DATA_DIR" in err and "the data_dir argument" not in err
