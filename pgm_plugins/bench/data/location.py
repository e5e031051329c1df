"""Where the data sets' files are read from: one resolution, used by every data set.

The data folder holds one sub-folder per data set (``mosi-utterance/``, ``av-digits/``). It is,
in this order:

1. the ``data_dir`` argument (``--data-dir DIR`` on the command line);
2. ``$PGM_DATA_DIR``;
3. the user cache that ``pgm bench fetch NAME`` fills: ``$PGM_CACHE_DIR``, else
   ``$XDG_CACHE_HOME/pgm-plugins/data``, else ``~/.cache/pgm-plugins/data``.

An empty environment variable counts as unset. Nothing is ever looked up relative to the
installed package, so an installed wheel reads the same folders as a checkout. When files are
missing, :func:`missing_files_error` names the folder, how it was chosen and the three ways to
point the loaders at the data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataLocation",
    "data_root",
    "locate_data",
    "missing_files_error",
    "user_cache_dir",
]


@dataclass(frozen=True)
class DataLocation:
    """The data folder and how it was chosen (for error messages)."""

    path: Path
    chosen_by: str  #: e.g. "the data_dir argument (--data-dir)", "$PGM_DATA_DIR"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _user_cache() -> DataLocation:
    env = _env("PGM_CACHE_DIR")
    if env is not None:
        return DataLocation(Path(env).expanduser(), "the user cache $PGM_CACHE_DIR")
    xdg = _env("XDG_CACHE_HOME")
    if xdg is not None:
        return DataLocation(
            Path(xdg).expanduser() / "pgm-plugins" / "data",
            "the user cache $XDG_CACHE_HOME/pgm-plugins/data",
        )
    return DataLocation(
        Path.home() / ".cache" / "pgm-plugins" / "data",
        "the default user cache ~/.cache/pgm-plugins/data (no --data-dir, PGM_DATA_DIR, "
        "PGM_CACHE_DIR or XDG_CACHE_HOME given)",
    )


def user_cache_dir() -> Path:
    """The folder ``pgm bench fetch`` fills by default: ``$PGM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/pgm-plugins/data``, else ``~/.cache/pgm-plugins/data``."""
    return _user_cache().path


def locate_data(data_dir: str | os.PathLike[str] | None = None) -> DataLocation:
    """The data folder: ``data_dir``, else ``$PGM_DATA_DIR``, else :func:`user_cache_dir`."""
    if data_dir is not None:
        return DataLocation(Path(data_dir).expanduser(), "the data_dir argument (--data-dir)")
    env = _env("PGM_DATA_DIR")
    if env is not None:
        return DataLocation(Path(env).expanduser(), "$PGM_DATA_DIR")
    return _user_cache()


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`locate_data`'s folder."""
    return locate_data(data_dir).path


def missing_files_error(
    what: str,
    dataset: str,
    missing: Sequence[Path],
    where: DataLocation,
    show: int | None = None,
) -> FileNotFoundError:
    """The error for files of ``dataset`` (``what`` says which loader) not found under
    ``where``: the files (all, or the first ``show``), the folder and how it was chosen, and the
    three fixes."""
    listed = missing if show is None else missing[:show]
    shown = ", ".join(str(p) for p in listed)
    more = f" and {len(missing) - len(listed)} more" if len(missing) > len(listed) else ""
    return FileNotFoundError(
        f"{what}: {len(missing)} file(s) not found: {shown}{more} (looked in "
        f"{where.path / dataset}; the data folder {where.path} is {where.chosen_by}). "
        f"Either pass --data-dir DIR (Python: data_dir=DIR), or set PGM_DATA_DIR=DIR, with DIR "
        f"the folder that holds '{dataset}/'; or run `pgm bench fetch {dataset}` to download "
        f"it into the user cache ({user_cache_dir()})."
    )
