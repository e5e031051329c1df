"""``benchmarks/gpu_device_check.py`` as a smoke test on the CPU (the GPU run is by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_device_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_device_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_device_check_runs_on_cpu_on_a_tiny_npz(tmp_path):
    pytest.importorskip("timm")
    rng = np.random.default_rng(0)
    n = 60
    np.savez(
        tmp_path / "tiny.npz",
        labels=rng.integers(0, 3, n),
        split=np.array(["train"] * 36 + ["valid"] * 12 + ["test"] * 12),
        image=rng.normal(size=(n, 64)).astype(np.float32),  # 8 x 8 grey images
        audio=rng.normal(size=(n, 6, 4)).astype(np.float32),  # 6 frames of 4 coefficients
    )
    out = tmp_path / "out.json"
    argv = ["--data", str(tmp_path / "tiny.npz"), "--device", "cpu", "--steps", "2"]
    code = _script().main([*argv, "--epochs", "1", "--arms", "baseline", "pgm", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert [a["arm"] for a in record["arms"]] == ["baseline", "pgm"]
    for arm in record["arms"]:
        assert len(arm["losses_cpu"]) == len(arm["losses_device"]) == 2
        assert arm["max_rel_diff"] == 0.0  # the same device twice: the same losses
        assert arm["cell"]["epochs_run"] == 1


def test_the_device_check_names_a_missing_data_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--data", str(tmp_path / "absent.npz"), "--device", "cpu"])
    assert "--pack benchmarks/.gpu/av-digits.npz" in capsys.readouterr().err
