"""The ``pgm_plugins`` entry point of pgm-mmsa: adapters, recognition, hosts, zoo patch.

Registration is cheap: MMSA is imported only inside the factories and the zoo patch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pgm_mmsa import adapters as _adapters
from pgm_plugins import hookimpl


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    for adapter in _adapters.adapters():
        register(adapter)


@hookimpl
def pgm_match_adapter(model: Any) -> str | None:
    """``mmsa.<kind>`` for MMSA's MulT/MISA/Self-MM/TFN/LMF/MMIM (bare or in AMIO); an MMSA
    model of another kind raises an error listing the supported kinds."""
    return _adapters.match(model)


def _factory(kind: str, **options: Any) -> Any:
    from pgm_mmsa.hosts import build_host

    return build_host(kind, **options)


def _example(kind: str) -> Any:
    from pgm_mmsa.hosts import example_inputs

    return example_inputs(kind)


#: example inputs per host (``EXAMPLES[name]()``), registered as ``example=`` so the core
#: suite's registered-host checks run on every MMSA host
EXAMPLES = {f"mmsa.{kind}": partial(_example, kind) for kind in _adapters.KINDS.values()}


@hookimpl
def pgm_register_models(register: Any) -> None:
    for kind in _adapters.KINDS.values():
        register(
            f"mmsa.{kind}",
            partial(_factory, kind),
            f"MMSA {kind.upper()} from MMSA's own config, random weights, offline "
            "(options: widths, seq_len, text_hidden, wrap; changes in model.mmsa_host)",
            adapter=f"mmsa.{kind}",
            example=EXAMPLES[f"mmsa.{kind}"],
        )


def _zoo_patch(**options: Any) -> Any:
    from pgm_mmsa.zoo import apply_patch

    return apply_patch(**options)


@hookimpl
def pgm_register_zoo_patches(register: Any) -> None:
    register(
        "mmsa",
        _zoo_patch,
        "MMSA builds PgM variants by name: get_config_regression('mult_pgm', 'mosi'), "
        "AMIO(args) with model_name='mult_pgm' (all six)",
    )


@hookimpl
def pgm_register_bench_hosts(register: Any) -> None:
    """``mmsa.<kind>`` bench hosts for ``pgm bench run`` (MMSA imported only when one runs)."""
    from pgm_mmsa.bench import bench_hosts

    for name, factory, description in bench_hosts():
        register(name, factory, description)
