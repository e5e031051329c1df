"""The pgm-timm plugin: the ``timm.towers`` adapter, the ``timm.fusion`` host and the ``timm.av``
bench host.

Registration imports no timm: the adapter's predicate and sites compare class paths.
"""

from __future__ import annotations

from typing import Any

from pgm_plugins import hookimpl
from pgm_timm import hosts
from pgm_timm.adapter import towers_adapter


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    register(towers_adapter())


@hookimpl
def pgm_register_models(register: Any) -> None:
    register(
        "timm.fusion",
        hosts.timm_fusion,
        "timm towers by name ('timm:<model>', size overrides) fused by a linear classifier",
        adapter="timm.towers",
        example=hosts.fusion_example,
    )


@hookimpl
def pgm_register_bench_hosts(register: Any) -> None:
    """``timm.av``: a timm image tower and a conv audio tower for ``pgm bench`` (asked only when
    bench hosts are listed; timm itself is imported when a tower is built)."""
    from pgm_timm.bench import DESCRIPTION, AvTowersRun

    register("timm.av", AvTowersRun, DESCRIPTION)
