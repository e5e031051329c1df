"""One JSON result file per run (cell), written atomically; a rerun skips finished cells.

A record holds the full config, seed, fold, metrics (validation and test), curves, wall time,
parameter counts, package versions, git commit and dirty flag, data digest and machine. A killed
run loses only its unfinished cell: files appear whole (temporary file renamed into place) and a
file that does not parse is reported, never counted as done.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pgm_plugins._io import atomic_write_text

__all__ = [
    "RESULTS_ENV",
    "ResultStore",
    "code_digest",
    "default_results_dir",
    "environment",
    "key_file_name",
]

_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")
#: the environment variable that sets the default results root
RESULTS_ENV = "PGM_RESULTS_DIR"


def default_results_dir() -> Path:
    """Where results go without ``--results``: ``$PGM_RESULTS_DIR``, else ``./pgm-results``
    under the current directory (never inside the installed package)."""
    value = os.environ.get(RESULTS_ENV, "").strip()
    return Path(value).expanduser() if value else Path.cwd() / "pgm-results"


@functools.cache
def code_digest(package: str) -> str | None:
    """SHA-256 (first 16 hex) of what the installed ``package``'s Python code does: every
    module's syntax tree without docstrings or comments, so a change of code (a default, a
    recipe, a loader) changes it and an edit of prose does not. None when ``package`` cannot be
    found or read as source."""
    import ast
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    digest = hashlib.sha256()
    for root in sorted(spec.submodule_search_locations):
        for path in sorted(Path(root).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError):
                return None
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                first = body[0] if isinstance(body, list) and body else None
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined,index]
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(ast.dump(tree, include_attributes=False).encode())
    return digest.hexdigest()[:16]


def key_file_name(key: Mapping[str, Any]) -> str:
    """``k=v__k=v....json`` for a cell key (other characters than ``[A-Za-z0-9_.=+-]``: ``-``)."""
    return "__".join(f"{k}={_SAFE.sub('-', str(v))}" for k, v in key.items()) + ".json"


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _loaded_versions() -> dict[str, str]:
    """Versions of the optional packages that shape results, where this process imported them."""
    out = {}
    for name, module in (
        ("MMSA", "MMSA"),
        ("scipy", "scipy"),
        ("timm", "timm"),
        ("transformers", "transformers"),
        ("open_clip", "open_clip"),
    ):
        mod = sys.modules.get(module)
        if mod is not None:
            version = getattr(mod, "__version__", None)
            if version is None:
                from importlib.metadata import PackageNotFoundError
                from importlib.metadata import version as dist_version

                try:
                    version = dist_version(name if name != "open_clip" else "open_clip_torch")
                except PackageNotFoundError:
                    continue
            out[name] = str(version)
    return out


# The instruction-set extensions by which MKL, oneDNN and torch's own kernels pick their code
# paths: one cell on CPUs that differ in them can differ in the last bits from the first step,
# and training amplifies that (docs/results.md, ``env``).
CPU_ISA = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "sve",
    "sve2",
)


def cpu_identity() -> dict[str, Any]:
    """:func:`_cpu_identity`, a copy (records must not share the cached one)."""
    found = _cpu_identity()
    return {**found, "isa": list(found["isa"])}


@functools.lru_cache(maxsize=1)
def _cpu_identity() -> dict[str, Any]:
    """This machine's CPU as far as a result can depend on it: ``model`` (``/proc/cpuinfo``'s
    model name, else :func:`platform.processor`), ``capability`` (the vector code torch's own
    kernels use, :func:`torch.backends.cpu.get_cpu_capability`) and ``isa`` (which of
    :data:`CPU_ISA` the CPU has; empty where ``/proc/cpuinfo`` is absent)."""
    import torch

    model, flags = "", set[str]()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
        if model and flags:
            break
    return {
        "model": model or platform.processor() or platform.machine(),
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "isa": [f for f in CPU_ISA if f in flags],
    }


def environment(repo: Path | None = None) -> dict[str, Any]:
    """Versions, git commit + dirty flag, machine: what every record carries.

    The commit is that of the git work tree holding the imported ``pgm_plugins`` (``repo``
    overrides); installed from a wheel there is none, and the versions say what ran."""
    import numpy
    import torch

    from pgm_plugins._version import __version__

    repo = repo or Path(__file__).resolve().parent
    # a venv inside a checkout is not that checkout: the package must be tracked there
    tracked = repo != Path(__file__).resolve().parent or (
        _git(["ls-files", "--error-unmatch", "__init__.py"], repo) is not None
    )
    commit = _git(["rev-parse", "HEAD"], repo) if tracked else None
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo) if tracked else None
    return {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "pgm_plugins": __version__,
            **_loaded_versions(),
        },
        "git": {"commit": commit, "dirty": bool(status) if status is not None else None},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cpu": cpu_identity(),
        },
    }


class ResultStore:
    """Result files under ``root``, one per cell key (``{"arm": ..., "seed": ..., ...}``)."""

    def __init__(
        self, root: str | Path, check: Callable[[dict[str, Any], Path], str | None] | None = None
    ) -> None:
        """``check(record, path)``: why a parsed record cannot be used (it is then rerun), or
        None; the runner passes the report's :func:`~pgm_plugins.bench.report.check_record`
        so a cell the report would skip is never counted as done."""
        self.root = Path(root)
        self.check = check

    def path(self, key: Mapping[str, Any]) -> Path:
        return self.root / key_file_name(key)

    def load(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The finished record of ``key``, or None (missing, or corrupt: reported on stderr).
        Raises :class:`~pgm_plugins.bench.record.NewerRecordError` for a record a newer
        pgm-plugins wrote: it is kept, never treated as missing."""
        from pgm_plugins.bench.record import NewerRecordError, newer_version

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            print(f"warning: corrupt result file {path} ({exc}); it will be rerun", file=sys.stderr)
            return None
        if not isinstance(record, dict) or record.get("key") != dict(key):
            print(f"warning: result file {path} does not hold cell {dict(key)}", file=sys.stderr)
            return None
        version = newer_version(record)
        if version is not None:
            raise NewerRecordError(path, version)
        reason = self.check(record, path) if self.check is not None else None
        if reason is not None:
            print(
                f"warning: result file {path} is not usable ({reason}); it will be rerun",
                file=sys.stderr,
            )
            return None
        return record

    def write(self, key: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
        path = self.path(key)
        data = {"key": dict(key), **record}
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=float) + "\n")
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record under ``root`` (corrupt files reported and skipped)."""
        for path in sorted(self.root.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                print(f"warning: skipping corrupt result file {path} ({exc})", file=sys.stderr)
                continue
            if isinstance(record, dict) and "key" in record:
                yield record
