"""Built-in registrations, made through the same hooks as any third-party plugin: the toy
late-fusion model's adapter and its example model.

The benchmark's data sets and hosts are not here: the benchmark sits above the registry, so its
plugin, ``pgm_plugins.bench.plugin``, is the ``pgm_plugins.bench`` entry point of this
distribution (``pyproject.toml``), loaded, allowed and blocked like any other.
"""

from __future__ import annotations

from typing import Any

from pgm_plugins.injection.adapter import Adapter
from pgm_plugins.registry.hookspecs import hookimpl


def _toy_sites(model: Any) -> dict[str, str]:
    return {m: f"encoders.{m}" for m in model.encoders}


def _is_toy(model: Any) -> bool:
    from pgm_plugins.toy import LateFusion

    return isinstance(model, LateFusion)


def _toy_host(**options: Any) -> Any:
    from pgm_plugins.toy import LateFusion

    return LateFusion(**options)


def _toy_example() -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randn(4, 16, generator=g), torch.randn(4, 8, generator=g))


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    register(
        Adapter(
            "toy.late_fusion",
            sites=_toy_sites,
            matches=_is_toy,
            description="pgm_plugins.toy.LateFusion: the encoders' outputs",
        )
    )


@hookimpl
def pgm_register_models(register: Any) -> None:
    register(
        "toy.late_fusion",
        _toy_host,
        "a tiny late-fusion model (random weights)",
        adapter="toy.late_fusion",
        example=_toy_example,
    )
