"""``list_layers``: the named modules of a model, so a user can choose sites (``pgm layers``;
building the model and its example inputs from a command line: :mod:`.model_spec`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from pgm_plugins._text import format_table
from pgm_plugins.injection.probe import call_model, dry_run

__all__ = ["LayerInfo", "format_layers", "list_layers"]


@dataclass
class LayerInfo:
    name: str
    type: str
    parameters: int  #: parameters of the module itself and its children
    calls: int | None = None  #: calls per forward in the dry run (None without one)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)  #: tensors of the 1st call


def list_layers(
    model: nn.Module,
    filter: str = "*",
    example_inputs: Any = None,
) -> list[LayerInfo]:
    """Named modules (``fnmatch`` ``filter`` on the dotted name), in definition order; with
    ``example_inputs`` also each layer's call count and output tensor shapes from one dry run."""
    infos = {
        name: LayerInfo(name, type(m).__name__, sum(p.numel() for p in m.parameters()))
        for name, m in model.named_modules()
        if name and fnmatch.fnmatchcase(name, filter)
    }
    if example_inputs is not None:
        handles = []
        for name, module in model.named_modules():
            if name not in infos:
                continue
            info = infos[name]
            info.calls = 0

            def hook(mod: nn.Module, args: Any, out: Any, info: LayerInfo = info) -> None:
                info.calls = (info.calls or 0) + 1
                if info.calls == 1:
                    info.output_shapes = [
                        tuple(t.shape) for t in tree_leaves(out) if isinstance(t, Tensor)
                    ]

            handles.append(module.register_forward_hook(hook))
        try:
            with dry_run(model):
                call_model(model, example_inputs)
        finally:
            for h in handles:
                h.remove()
    return list(infos.values())


def format_layers(layers: list[LayerInfo]) -> str:
    """A plain-text table of ``list_layers`` output."""
    rows = [("layer", "type", "params", "calls", "output shapes")]
    for info in layers:
        shapes = ", ".join("x".join(map(str, s)) for s in info.output_shapes)
        rows.append(
            (
                info.name,
                info.type,
                f"{info.parameters:,}",
                "" if info.calls is None else str(info.calls),
                shapes,
            )
        )
    return "\n".join(format_table(rows))
