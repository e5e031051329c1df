"""The examples run as written, so they cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_block_example_learns_and_reports_shares():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_block.py"), "--epochs", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "uni shares text=" in out
    losses = [float(v) for v in re.findall(r"\+PgM\s+epoch\s+\d+.*?test MSE ([\d.]+)", out)]
    assert len(losses) >= 2 and losses[-1] < losses[0]
