"""Imports go one way: block <- injection <- registry <- api <- bench <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pgm_plugins"
# each layer may import only the layers before it (and the shared helpers)
ORDER = ["block", "injection", "registry", "api", "bench", "cli"]
SHARED = {"errors", "_io", "_text", "_version", "toy"}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("pgm_plugins.")
        ):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pgm_plugins.")}
    return names


@pytest.mark.parametrize("layer", ORDER)
def test_imports_go_one_way(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1]) | SHARED
    files = (
        [PKG / f"{layer}.py"]
        if (PKG / f"{layer}.py").exists()
        else sorted((PKG / layer).rglob("*.py"))
    )
    bad = {f.relative_to(PKG).as_posix(): sorted(imported(f) - allowed) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}
