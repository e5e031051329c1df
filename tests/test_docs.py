"""The README's code blocks run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks(section: str) -> list[str]:
    start = README.index(section)
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start : end if end > 0 else None], re.S)


def test_block_section_runs():
    (code,) = python_blocks("## The block")
    exec(compile(code, "README:block", "exec"), {})


def test_injection_section_runs(tmp_path, monkeypatch):
    (code,) = python_blocks("## Injecting PgM")
    code = code.replace("/tmp/pgm-ckpt", str(tmp_path / "ckpt"))
    exec(compile(code, "README:inject", "exec"), {})
    assert (tmp_path / "ckpt" / "pgm_block.safetensors").is_file()


def test_training_section_runs():
    (code,) = python_blocks("## Training an injected model")
    exec(compile(code, "README:training", "exec"), {})


def test_adapter_plugin_section_registers_a_working_adapter(monkeypatch, fresh_registry):
    from pgm_plugins import inject

    (code,) = python_blocks("## Writing an adapter plugin")
    module = types.ModuleType("my_package.pgm_plugin")
    exec(compile(code, "README:plugin", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "my_package.pgm_plugin", module)
    registry = fresh_registry
    registry.register_plugin(module, "mymodels")
    registry.refresh()

    class TwoStream(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rgb_encoder = torch.nn.Linear(4, 6)
            self.flow_encoder = torch.nn.GRU(3, 5)
            self.head = torch.nn.Linear(11, 10)

        def forward(self, rgb, flow):
            r = self.rgb_encoder(rgb)
            f, _ = self.flow_encoder(flow)
            return self.head(torch.cat([r, f.mean(0)], -1))

    model = TwoStream()
    from pgm_plugins import match_adapter

    assert match_adapter(model) == "mymodels.two_stream"
    x = (torch.randn(2, 4), torch.randn(7, 2, 3))
    ref = model(*x)
    handle = inject(model, "mymodels.two_stream", example_inputs=x)
    torch.testing.assert_close(model(*x), ref, rtol=0, atol=0)
    handle.aux_loss(torch.tensor([1, 7])).backward()


@pytest.mark.parametrize("name", ["make bench", "make test"])
def test_readme_starts_with_the_two_commands(name):
    head = README.split("\n## ")[0]
    assert name in head.split("```")[1]
