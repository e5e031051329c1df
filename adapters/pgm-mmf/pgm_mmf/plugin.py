"""The ``pgm_plugins`` entry point of pgm-mmf: adapters and the mmf registry patch.

Loading this module imports neither mmf nor transformers and applies no shim: adapters match
models by class name, and mmf is imported only when a model is built or the patch is applied.
"""

from __future__ import annotations

from typing import Any

from pgm_mmf.adapters import adapters
from pgm_plugins import hookimpl


def _apply_registry_patch(**options: Any) -> Any:
    from pgm_mmf.patch import apply

    return apply(**options)


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    for adapter in adapters():
        register(adapter)


@hookimpl
def pgm_register_zoo_patches(register: Any) -> None:
    register(
        "mmf.registry",
        _apply_registry_patch,
        "mmf: model '<name>_pgm' builds <name> with a PgM block (concat_bow, concat_bert, "
        "late_fusion, unimodal_text, unimodal_image, mmbt); models= selects some",
    )
