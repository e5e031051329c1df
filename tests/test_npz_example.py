"""The ``.npz`` format's example (``examples/npz``: the file's maker and its suite, quoted by the
README's ``.npz`` section) runs as written: the file loads with its split and both modalities,
and ``pgm bench run views.toml`` trains on it."""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import pytest

from pgm_plugins.bench.data.catalog import load_dataset
from pgm_plugins.bench.suite import load_suite
from pgm_plugins.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "npz"
FILES = ("make_views.py", "views.toml")


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    for name in FILES:
        shutil.copy(EXAMPLE / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "make_views.py"), run_name="__main__")
    return tmp_path


def test_the_example_file_loads_with_its_split_and_modalities(example):
    suite = load_suite(str(example / "views.toml"))
    assert suite.dataset == "npz" and suite.options["task"] == "classification"
    data = load_dataset("npz", path=str(example / suite.options["path"]))
    assert {k: v.shape[1:] for k, v in data.x.items()} == {"audio": (20, 8), "text": (32,)}
    (fold,) = data.folds(0)
    assert (len(fold.train), len(fold.valid), len(fold.test)) == (200, 50, 50)
    assert data.num_classes == 3 and "the file's split" in data.description


@pytest.mark.slow
def test_the_example_suite_runs(example, capsys, fresh_registry):
    args = ["bench", "run", "views.toml", "--results", "runs", "--seeds", "0", "--quiet"]
    assert main([*args, "--arms", "baseline", "pgm"]) == 0
    assert len(list((example / "runs").rglob("*.json"))) >= 2


def test_the_readme_quotes_the_example_verbatim():
    """The README's ``.npz`` section shows both files as they are here (so it cannot drift)."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"\n(#{2,4}) [^\n]*`\.npz`[^\n]*\n(.*?)(?=\n#{2,3} |\Z)", readme, re.S)
    if match is None:
        pytest.skip("the README has no `.npz` section yet (examples/npz is its source)")
    section = match.group(2)
    for name in FILES:
        assert (EXAMPLE / name).read_text().strip() in section, f"{name} differs from the README"
