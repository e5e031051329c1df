"""Where the data sets are read from: --data-dir, else $PGM_DATA_DIR, else the user cache that
``pgm bench fetch`` fills; the error for missing files says where it looked, why, and the fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

import pgm_plugins
from pgm_plugins.bench.data import catalog
from pgm_plugins.bench.data.catalog import fetch_dataset, load_dataset
from pgm_plugins.bench.data.location import data_root, locate_data, user_cache_dir
from pgm_plugins.cli import main

ENV = ("PGM_DATA_DIR", "PGM_CACHE_DIR", "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_each_step_of_the_resolution(clean_env, monkeypatch):
    home = clean_env / "home"
    default = locate_data()
    assert default.path == home / ".cache" / "pgm-plugins" / "data" == user_cache_dir()
    assert "default user cache" in default.chosen_by
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    assert data_root() == clean_env / "xdg" / "pgm-plugins" / "data" == user_cache_dir()
    assert "$XDG_CACHE_HOME" in locate_data().chosen_by
    monkeypatch.setenv("PGM_CACHE_DIR", str(clean_env / "cache"))
    assert data_root() == clean_env / "cache" == user_cache_dir()
    assert "$PGM_CACHE_DIR" in locate_data().chosen_by
    monkeypatch.setenv("PGM_DATA_DIR", str(clean_env / "data"))
    assert data_root() == clean_env / "data" and locate_data().chosen_by == "$PGM_DATA_DIR"
    assert user_cache_dir() == clean_env / "cache"  # fetch still fills the cache
    given = locate_data(clean_env / "given")
    assert given.path == clean_env / "given" and "--data-dir" in given.chosen_by
    monkeypatch.setenv("PGM_DATA_DIR", "")  # empty counts as unset
    assert data_root() == clean_env / "cache"


def test_no_folder_is_relative_to_the_package(clean_env, monkeypatch):
    package = Path(pgm_plugins.__file__).resolve().parents[1]
    monkeypatch.chdir(clean_env)
    assert not data_root().resolve().is_relative_to(package)


def test_the_error_names_the_folder_how_it_was_chosen_and_the_three_fixes(clean_env, monkeypatch):
    cache = clean_env / "home" / ".cache" / "pgm-plugins" / "data"
    with pytest.raises(FileNotFoundError) as got:
        load_dataset("mosi-utterance")
    text = str(got.value)
    assert f"looked in {cache / 'mosi-utterance'}" in text
    assert "default user cache ~/.cache/pgm-plugins/data" in text
    for fix in ("--data-dir DIR", "PGM_DATA_DIR=DIR", "`pgm bench fetch mosi-utterance`"):
        assert fix in text
    monkeypatch.setenv("PGM_DATA_DIR", str(clean_env / "shared"))
    with pytest.raises(FileNotFoundError, match=r"pairs\.csv.*is \$PGM_DATA_DIR\)") as got:
        load_dataset("av-digits")
    assert f"looked in {clean_env / 'shared' / 'av-digits'}" in str(got.value)
    assert "`pgm bench fetch av-digits`" in str(got.value)
    with pytest.raises(FileNotFoundError, match=r"is the data_dir argument \(--data-dir\)"):
        load_dataset("mosi-utterance", protocol="standard", data_dir=str(clean_env / "x"))


def test_fetch_fills_the_user_cache_unless_given_a_folder(clean_env, monkeypatch, capsys):
    seen: list[Path] = []

    def recipe(root: Path, timeout: float) -> list[Path]:
        seen.append(root)
        return []

    monkeypatch.setitem(catalog.FETCHERS, "mosi-utterance", recipe)
    monkeypatch.setenv("PGM_DATA_DIR", str(clean_env / "elsewhere"))  # not where fetch writes
    monkeypatch.setenv("PGM_CACHE_DIR", str(clean_env / "cache"))
    assert fetch_dataset("mosi-utterance") == clean_env / "cache"
    assert fetch_dataset("mosi-utterance", clean_env / "given") == clean_env / "given"
    assert main(["bench", "fetch", "mosi-utterance"]) == 0
    assert seen == [
        clean_env / "cache" / "mosi-utterance",
        clean_env / "given" / "mosi-utterance",
        clean_env / "cache" / "mosi-utterance",
    ]
    out = capsys.readouterr().out
    assert f"--data-dir {clean_env / 'cache'}" in out and "the user cache" in out
