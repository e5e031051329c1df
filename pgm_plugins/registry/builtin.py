"""Built-in registrations, made through the same hooks as any third-party plugin."""

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


def _synthetic(**options: Any) -> Any:
    from pgm_plugins.toy import make_uni_paired

    return make_uni_paired(**options)


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
def pgm_register_hosts(register: Any) -> None:
    register(
        "toy.late_fusion",
        _toy_host,
        "a tiny late-fusion model (random weights)",
        adapter="toy.late_fusion",
        example=_toy_example,
    )


@hookimpl
def pgm_register_datasets(register: Any) -> None:
    from pgm_plugins.bench.datasets import register_builtin_datasets

    register_builtin_datasets(register)


def _late_fusion_bench(
    data: Any,
    seed: int,
    modalities: tuple[str, ...],
    *,
    lr: float = 3e-3,
    hidden: int = 32,
    dropout: float = 0.0,
    weight_decay: float = 1e-4,
    clip: float = 1.0,
    batch: int = 100,
) -> Any:
    from pgm_plugins.bench.late_fusion import LateFusionRun

    return LateFusionRun(
        data,
        seed,
        modalities,
        lr=lr,
        hidden=hidden,
        dropout=dropout,
        weight_decay=weight_decay,
        clip=clip,
        batch=batch,
    )


@hookimpl
def pgm_register_bench_hosts(register: Any) -> None:
    register(
        "late_fusion",
        _late_fusion_bench,
        "late fusion: per-modality MLP encoders (sequences: mean over real steps) -> concat -> "
        "MLP head; blocks at the encoders' outputs",
    )
