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
import os
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
FORMAT = 2  #: 2: one digest over tensors and configuration


def _digest(data: bytes, meta: dict[str, Any]) -> str:
    """SHA-256 over the tensor bytes and the canonical JSON of everything else in the config, so
    an edited ``rho`` or swapped sites are refused like a changed tensor."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    h = hashlib.sha256(data)
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def save(handle: PgMHandle, directory: str | Path) -> Path:
    """Write the block of ``handle`` (only the block) to ``directory``; returns the directory."""
    handle._check_live()
    directory = _as_dir(directory, "pgm_plugins.save")
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(
            f"{directory} is a file; pgm_plugins.save writes a directory holding {CONFIG_FILE} "
            f"and {TENSORS_FILE}. Give a directory path."
        )
    inj = handle.injection
    model = handle.model
    state = {k: v.detach().contiguous().cpu() for k, v in inj.block.state_dict().items()}
    data = st_save(state, metadata={"format": "pt", "pgm_plugins_version": __version__})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "pgm_plugins_version": __version__,
        "adapter": inj.adapter,
        "mode": inj.mode,
        "prefix": inj.prefix,
        "sites": inj.spelled,
        "resolved": {k: {"width": s.width, "layout": s.layout} for k, s in inj.slots.items()},
        "config": inj.config.to_dict(),
        "host": {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "fingerprint": host_fingerprint(model, inj.prefix),
        },
        "tensors": {"file": TENSORS_FILE},
    }
    meta["sha256"] = _digest(data, meta)
    atomic_write_bytes(directory / TENSORS_FILE, data)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


#: fields every checkpoint config holds, with their JSON types
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "mode": str,
    "prefix": str,
    "sites": dict,
    "resolved": dict,
    "config": dict,
    "host": dict,
    "sha256": str,
}


def _as_dir(directory: Any, what: str) -> Path:
    if not isinstance(directory, str | os.PathLike) or not str(directory):
        raise CheckpointError(
            f"{what} needs a checkpoint directory (a str or Path), got {directory!r}; e.g. "
            "pgm_plugins.save(handle, 'runs/pgm') then pgm_plugins.load(model, 'runs/pgm')."
        )
    return Path(directory)


def read_checkpoint(
    directory: str | Path,
    model: nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a checkpoint; returns ``(meta, tensors)``. Raises ``CheckpointError``."""
    directory = _as_dir(directory, "pgm_plugins.load")
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(
            f"{directory} is a file, not a PgM checkpoint directory (one holding {CONFIG_FILE} "
            f"and {TENSORS_FILE}, written by pgm_plugins.save)."
        )
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
    for name, kind in _FIELDS.items():
        if name not in meta:
            raise CheckpointError(f"{cfg_path} has no field {name!r}; the checkpoint is corrupt.")
        if not isinstance(meta[name], kind) or isinstance(meta[name], bool):
            raise CheckpointError(
                f"{cfg_path}: field {name!r} is a {type(meta[name]).__name__}, expected "
                f"{getattr(kind, '__name__', kind)}; the checkpoint is corrupt."
            )
    data = st_path.read_bytes()
    if _digest(data, meta) != meta["sha256"]:
        raise CheckpointError(
            f"{directory}: the tensors or the configuration differ from what was saved (the "
            f"SHA-256 over {TENSORS_FILE} and {CONFIG_FILE} does not match): corrupt or edited "
            "files; save the block again."
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{st_path} cannot be read: {exc}") from exc
    if model is not None:
        expected = meta["host"].get("fingerprint")
        found = host_fingerprint(model, meta["prefix"])
        if expected != found:
            raise CheckpointError(
                f"this checkpoint was saved from a host {meta['host'].get('class')} with "
                f"architecture fingerprint {expected}; the model given "
                f"({type(model).__module__}.{type(model).__qualname__}) has {found}. Load it into "
                "a model built with the same architecture and configuration."
            )
    return meta, tensors
