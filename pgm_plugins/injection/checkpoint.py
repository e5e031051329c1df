"""Adapter-only checkpoints: the block's tensors and the recipe to put it back, no pickle.

``save(handle, dir)`` writes ``pgm_block.safetensors`` (the block's state) and
``pgm_config.json`` (config, adapter, sites as spelled, mode, package version, the host's
architecture fingerprint and the tensor file's SHA-256), each atomically, tensors first: a
directory with a config always has the matching tensors. ``load`` checks the fingerprint and the
digest before touching the model.

Besides the one digest over everything, the config keeps a short digest of every field (one level
into the mappings: ``config.rho``, ``sites.text``) and of every tensor, and the tensor file's size:
when the digest does not match, the error names the field or tensor that differs, or says the
file was truncated. A checkpoint of a newer format than this version reads is refused, never
loaded as something else.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
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
FORMAT = 3  #: 2: one digest over tensors and configuration; 3: and one per field and tensor
READS = (2, 3)  #: the formats this version reads


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _tensor_digest(t: torch.Tensor) -> str:
    """Digest of one tensor's dtype, shape and bytes."""
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return _short(f"{t.dtype}{tuple(t.shape)}".encode() + raw)


def _field_digests(meta: dict[str, Any]) -> dict[str, str]:
    """Digest of every field of the config except the digests, one level into mappings."""
    out: dict[str, str] = {}
    for key, value in meta.items():
        if key in ("sha256", "parts"):
            continue
        items = value.items() if isinstance(value, dict) and value else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            out[name] = _short(json.dumps(v, sort_keys=True, separators=(",", ":")).encode())
    return out


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
        "tensors": {"file": TENSORS_FILE, "bytes": len(data)},
    }
    meta["parts"] = {
        "fields": _field_digests(meta),
        "tensors": {k: _tensor_digest(v) for k, v in state.items()},
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
    _check_format(cfg_path, meta)
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
        where = _what_differs(data, meta)
        raise CheckpointError(
            f"{directory}: the tensors or the configuration differ from what was saved (the "
            f"SHA-256 over {TENSORS_FILE} and {CONFIG_FILE} does not match"
            + (f"; {where}" if where else "")
            + "): corrupt or edited files; save the block again."
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


def _check_format(cfg_path: Path, meta: Any) -> None:
    """A checkpoint of a format this version reads; a newer one is refused with the upgrade."""
    found = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT:
        raise CheckpointError(
            f"{cfg_path} declares checkpoint format {found}, newer than this pgm-plugins "
            f"({__version__}) reads (formats {READS[0]} to {READS[-1]}); it was written by "
            f"pgm-plugins {meta.get('pgm_plugins_version', 'of a later version')}. Upgrade "
            "(pip install -U pgm-plugins) to load it; loading it here could give other outputs."
        )
    if found not in READS or isinstance(found, bool):
        raise CheckpointError(
            f"{cfg_path} is not a PgM checkpoint this version reads (format={found!r}; "
            f"readable formats: {', '.join(map(str, READS))}); write it with pgm_plugins.save."
        )


def _what_differs(data: bytes, meta: dict[str, Any]) -> str:
    """Which fields and tensors differ from the per-part digests saved with them ("" when the
    checkpoint keeps none, format 2)."""
    parts = meta.get("parts")
    if not isinstance(parts, dict):
        return ""
    found: list[str] = []
    saved_fields = parts.get("fields")
    if isinstance(saved_fields, dict):
        now = _field_digests(meta)
        for name in sorted(set(now) | set(saved_fields)):
            if name not in saved_fields:
                found.append(f"field {name!r} was added")
            elif name not in now:
                found.append(f"field {name!r} was removed")
            elif now[name] != saved_fields[name]:
                found.append(f"field {name!r} was changed")
    size = meta.get("tensors", {}).get("bytes") if isinstance(meta.get("tensors"), dict) else None
    if isinstance(size, int) and size != len(data):
        found.append(
            f"{TENSORS_FILE} is {len(data):,} bytes, {size:,} when saved"
            + (" (truncated)" if len(data) < size else "")
        )
    saved_tensors = parts.get("tensors")
    if isinstance(saved_tensors, dict):
        try:
            tensors = st_load(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            found.append(f"{TENSORS_FILE} cannot be parsed ({exc})")
        else:
            for name in sorted(set(tensors) | set(saved_tensors)):
                if name not in saved_tensors:
                    found.append(f"tensor {name!r} was added")
                elif name not in tensors:
                    found.append(f"tensor {name!r} is missing")
                elif _tensor_digest(tensors[name]) != saved_tensors[name]:
                    found.append(f"tensor {name!r} differs")
    if not found:
        return "the per-field digests match: the 'sha256' or 'parts' entries were edited"
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    return "; ".join(found[:8]) + more
