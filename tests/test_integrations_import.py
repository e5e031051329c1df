"""``pgm_plugins.integrations`` imports neither trainer library until a name is used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_the_package_imports_no_trainer_library():
    code = (
        "import json, sys\n"
        "import pgm_plugins.integrations as i\n"
        "print(json.dumps({'mods': sorted(sys.modules), 'names': dir(i)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert [
        m for m in ("transformers", "accelerate", "lightning", "torch") if m in data["mods"]
    ] == []
    assert data["names"] == ["PgMModuleMixin", "PgMTrainer"]


def test_an_unknown_name_is_an_attribute_error():
    import pgm_plugins.integrations as integrations

    with pytest.raises(
        AttributeError, match=r"no attribute 'PgMTrainr'.*Did you mean 'PgMTrainer'"
    ):
        integrations.PgMTrainr  # noqa: B018
