"""``import pgm_plugins`` stays light: no torch-heavy zoo, no entry-point scan."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "pluggy",
    "transformers",
    "timm",
    "open_clip",
    "MMSA",
    "mmf",
    "safetensors",
    "pgm_plugins.registry",
    "pgm_plugins.injection",
]


def test_import_is_light():
    code = (
        "import importlib.metadata as md, json, sys\n"
        "calls = []\n"
        "orig = md.entry_points\n"
        "md.entry_points = lambda *a, **k: calls.append(1) or orig(*a, **k)\n"
        "import pgm_plugins\n"
        "print(json.dumps({'mods': sorted(sys.modules), 'scans': len(calls),\n"
        "                  'version': pgm_plugins.__version__}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    loaded = [m for m in HEAVY if m in data["mods"]]
    assert loaded == [], f"import pgm_plugins loaded {loaded}"
    assert data["scans"] == 0
    assert data["version"]


def test_public_names_resolve_lazily():
    import pgm_plugins

    for name in pgm_plugins.__all__:
        assert getattr(pgm_plugins, name) is not None
