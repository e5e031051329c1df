"""Adapter-only checkpoints: the block's tensors and the recipe to put it back, no pickle.

``save(handle, dir)`` writes ``pgm_block.safetensors`` (the block's state) and
``pgm_config.json`` (config, adapter, sites as spelled, mode, package version, the host's
architecture fingerprint and the tensor file's SHA-256), each atomically, tensors first: a
directory with a config always has the matching tensors. ``load`` checks the fingerprint and the
digest before touching the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from pgm_plugins._io import atomic_write_bytes, atomic_write_text
from pgm_plugins._version import __version__
from pgm_plugins.errors import CheckpointError
from pgm_plugins.injection.handle import PgMHandle
from pgm_plugins.injection.plan import host_fingerprint

__all__ = ["CONFIG_FILE", "FORMAT", "TENSORS_FILE", "read_checkpoint", "save"]

TENSORS_FILE = "pgm_block.safetensors"
CONFIG_FILE = "pgm_config.json"
FORMAT = 1


def save(handle: PgMHandle, directory: str | Path) -> Path:
    """Write the block of ``handle`` (only the block) to ``directory``; returns the directory."""
    handle._check_live()
    directory = Path(directory)
    plan = handle.plan
    state = {k: v.detach().contiguous().cpu() for k, v in handle.block.state_dict().items()}
    data = st_save(state, metadata={"format": "pt", "pgm_plugins_version": __version__})
    meta = {
        "format": FORMAT,
        "pgm_plugins_version": __version__,
        "adapter": plan.adapter,
        "mode": plan.mode,
        "prefix": plan.prefix,
        "sites": plan.spelled,
        "resolved": {k: {"width": rs.width, "layout": rs.layout} for k, rs in plan.sites.items()},
        "config": plan.config.to_dict(),
        "host": {
            "class": f"{type(plan.model).__module__}.{type(plan.model).__qualname__}",
            "fingerprint": host_fingerprint(plan.model, plan.prefix),
        },
        "tensors": {"file": TENSORS_FILE, "sha256": hashlib.sha256(data).hexdigest()},
    }
    atomic_write_bytes(directory / TENSORS_FILE, data)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def read_checkpoint(
    directory: str | Path,
    model: nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a checkpoint; returns ``(meta, tensors)``. Raises ``CheckpointError``."""
    directory = Path(directory)
    cfg_path, st_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    for path in (cfg_path, st_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; a PgM checkpoint directory holds "
                f"{CONFIG_FILE} and {TENSORS_FILE} (written by pgm_plugins.save)."
            )
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{cfg_path} is not valid JSON ({exc}); the checkpoint is corrupt."
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{cfg_path} is not a PgM checkpoint of format {FORMAT} "
            f"(format={meta.get('format') if isinstance(meta, dict) else None})."
        )
    data = st_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.get("tensors", {}).get("sha256"):
        raise CheckpointError(
            f"{st_path} does not match the digest recorded in {CONFIG_FILE} "
            "(corrupt or replaced file); save the block again."
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{st_path} cannot be read: {exc}") from exc
    if model is not None:
        expected = meta.get("host", {}).get("fingerprint")
        found = host_fingerprint(model, meta.get("prefix", "pgm_block"))
        if expected != found:
            raise CheckpointError(
                f"this checkpoint was saved from a host {meta['host'].get('class')} with "
                f"architecture fingerprint {expected}; the model given "
                f"({type(model).__module__}.{type(model).__qualname__}) has {found}. Load it into "
                "a model built with the same architecture and configuration."
            )
    return meta, tensors
