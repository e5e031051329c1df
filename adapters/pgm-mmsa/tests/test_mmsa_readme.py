"""The README's Python examples run, in order, as one script."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 3
    scope: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), scope)  # the host as MMSA builds it
    assert scope["handle"].plan.adapter == "mmsa.self_mm"
    assert scope["handle"].plan.sites["text"].width == 384  # MiniLM's, read from its config
    assert scope["out"]["M"].shape == (3, 1)
    assert not hasattr(scope["model"], "pgm_block")  # removed
    for code in blocks[1:]:
        exec(compile(code, str(README), "exec"), scope)
    assert "task" in scope["terms"] and "pgm" in scope["terms"]
    assert scope["loss"].requires_grad
    assert hasattr(scope["model"], "pgm_block")  # the zoo-built variant carries a block
    assert not hasattr(scope["MMSA"].get_config_regression, "__wrapped__")  # undone
