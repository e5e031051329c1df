"""Imports go one way, block <- injection <- registry <- api <- integrations <- bench <- cli, and
the core package imports no adapter distribution: the adapters plug into the core, never the
reverse.

An import is any way a module names another: ``import`` and ``from`` statements wherever they
are (module level or lazily, inside a function), relative ones resolved, and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal string.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgm_plugins

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pgm_plugins"
# each layer may import only the layers before it (and the shared helpers)
ORDER = ["block", "injection", "registry", "api", "integrations", "bench", "cli"]
SHARED = {"errors", "_io", "_text", "_version", "toy"}
#: the distributions under adapters/ and examples/ that a core module might reach for
ADAPTER_PACKAGES = {
    p.parent.name
    for pattern in ("adapters/*/*/__init__.py", "examples/*/*/__init__.py")
    for p in ROOT.glob(pattern)
}
#: (core module, adapter package) -> why the import stays; every entry must still be needed
ALLOWED_ADAPTER_IMPORTS: dict[tuple[str, str], str] = {}


def _is_import_call(func: ast.expr) -> bool:
    """``importlib.import_module``, a bare ``import_module`` or ``__import__``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def imported_modules(source: str, module: str = "pgm_plugins.module") -> set[str]:
    """Dotted names of every module ``source`` (the text of module ``module``) imports."""
    package = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            if target == "pgm_plugins":  # the package's lazy names live in their modules
                names |= {
                    pgm_plugins._LAZY.get(a.name, f"pgm_plugins.{a.name}") for a in node.names
                }
            elif not node.module:  # from . import sibling
                names |= {f"{target}.{a.name}" for a in node.names}
        elif (
            isinstance(node, ast.Call)
            and _is_import_call(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def imported(path: Path) -> set[str]:
    """What the core module at ``path`` imports."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    module = ".".join(parts if parts[-1] != "__init__" else [*parts[:-1], "x"])
    return imported_modules(path.read_text(), module)


def layers(path: Path) -> set[str]:
    return {m.split(".")[1] for m in imported(path) if m.startswith("pgm_plugins.")}


def test_every_way_of_naming_an_import_is_seen():
    source = """
import importlib
from importlib import import_module

def lazy():
    from pgm_plugins.bench import runner
    import pgm_plugins.cli

def by_name(name):
    importlib.import_module("pgm_plugins.block.config")
    import_module("pgm_mmsa.data")
    __import__("pgm_clip")
    importlib.import_module(name)  # not a literal: not seen
    print("pgm_timm")  # a string, not an import

class C:
    def m(self):
        from pgm_plugins import inject, toy
        from . import sibling
        from ..errors import PgMError
"""
    assert imported_modules(source, "pgm_plugins.registry.manager") == {
        "importlib",
        "pgm_plugins.bench",
        "pgm_plugins.cli",
        "pgm_plugins.block.config",
        "pgm_mmsa.data",
        "pgm_clip",
        "pgm_plugins",
        "pgm_plugins.api",  # inject, one of the package's lazy names
        "pgm_plugins.toy",
        "pgm_plugins.registry",
        "pgm_plugins.registry.sibling",
        "pgm_plugins.errors",
    }


@pytest.mark.parametrize("layer", ORDER)
def test_imports_go_one_way(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1]) | SHARED
    files = (
        [PKG / f"{layer}.py"]
        if (PKG / f"{layer}.py").exists()
        else sorted((PKG / layer).rglob("*.py"))
    )
    bad = {f.relative_to(PKG).as_posix(): sorted(layers(f) - allowed) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_core_imports_no_adapter_distribution():
    assert {"pgm_mmsa", "pgm_clip", "pgm_timm", "pgm_mmf", "pgm_example_plugin"} <= (
        ADAPTER_PACKAGES
    )
    found = {
        (f.relative_to(PKG).as_posix(), top)
        for f in sorted(PKG.rglob("*.py"))
        for top in {m.split(".")[0] for m in imported(f)} & ADAPTER_PACKAGES
    }
    assert sorted(found - set(ALLOWED_ADAPTER_IMPORTS)) == []
    stale = set(ALLOWED_ADAPTER_IMPORTS) - found
    assert not stale, f"allow-list entries no longer needed, remove them: {sorted(stale)}"
