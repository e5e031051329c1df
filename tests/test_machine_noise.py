"""benchmarks/machine_noise.py: committed cells rerun on another machine, paired and summarised."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def machine_noise() -> ModuleType:
    path = REPO / "benchmarks" / "machine_noise.py"
    spec = importlib.util.spec_from_file_location("machine_noise", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _record(fold: int, seed: int, acc: float, digest: str = "d", platform: str = "A") -> dict:
    key = {"suite": "s", "host": "h", "arm": "baseline", "fold": fold, "seed": seed}
    return {
        "key": key,
        "cell_digest": digest,
        "primary": "acc",
        "metrics": {"valid": {"acc": 0.5}, "test": {"acc": acc}},
        "curves": {"train_loss": [acc]},
        "env": {"machine": {"platform": platform}},
    }


def _write(root: Path, record: dict) -> None:
    folder = root / "s"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"fold={record['key']['fold']}__seed={record['key']['seed']}.json"
    (folder / name).write_text(json.dumps(record))


def test_pairs_by_cell_and_summarises_the_difference(machine_noise, tmp_path, capsys):
    committed, rerun = tmp_path / "committed", tmp_path / "rerun"
    old = {(0, 0): 0.70, (0, 1): 0.74, (1, 0): 0.80, (1, 1): 0.76}
    new = {(0, 0): 0.70, (0, 1): 0.76, (1, 0): 0.77, (1, 1): 0.80}
    for (fold, seed), acc in old.items():
        _write(committed, _record(fold, seed, acc))
        _write(rerun, _record(fold, seed, new[(fold, seed)], platform="B"))
    _write(rerun, _record(2, 0, 0.9))  # no committed twin
    result = machine_noise.compare(committed, rerun)
    (row,) = result["rows"]
    diffs = [new[k] - old[k] for k in old]
    assert row["cells"] == 4 and row["identical"] == 1
    assert row["diff_mean"] == pytest.approx(sum(diffs) / 4)
    assert row["diff_low"] < row["diff_mean"] < row["diff_high"]
    # pooled over folds: fold 0 (0.70, 0.74), fold 1 (0.80, 0.76), each variance 0.0008
    assert row["seed_sd_within_fold"] == pytest.approx(0.0008**0.5)
    assert row["committed_platforms"] == ["A"]
    assert result["skipped"] == ["s/fold=2__seed=0.json: no committed record"]
    assert machine_noise.main(["--committed", str(committed), "--rerun", str(rerun)]) == 0
    assert "| s | h | baseline | 4 | 1 |" in capsys.readouterr().out


def test_a_rerun_with_other_settings_is_left_out(machine_noise, tmp_path):
    committed, rerun = tmp_path / "committed", tmp_path / "rerun"
    _write(committed, _record(0, 0, 0.7))
    _write(rerun, _record(0, 0, 0.8, digest="other"))
    result = machine_noise.compare(committed, rerun)
    assert result["rows"] == [] and "other settings or code" in result["skipped"][0]
    assert machine_noise.main(["--committed", str(committed), "--rerun", str(rerun)]) == 2
