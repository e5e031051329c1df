"""The benchmark's built-in plugin: its data sets, the late-fusion bench host, the built-in
arms and the method arms (:mod:`pgm_plugins.bench.methods`), registered through the same hooks
as any third-party plugin, from the ``pgm_plugins.bench`` entry point."""

from __future__ import annotations

from typing import Any

from pgm_plugins.registry.hookspecs import hookimpl


@hookimpl
def pgm_register_datasets(register: Any) -> None:
    from pgm_plugins.bench.data.catalog import register_builtin_datasets

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


@hookimpl
def pgm_register_arms(register: Any) -> None:
    from pgm_plugins.bench.arms import builtin_arms
    from pgm_plugins.bench.methods import method_arms

    for spec in [*builtin_arms(), *method_arms()]:
        register(spec)
