"""A restricted unpickler for the feature files users download (MMSA's and MulT's pickles).

A pickle can run any code when it is loaded; :func:`safe_load_pickle` only builds numpy arrays,
numpy dtypes / scalars and plain containers (dict, list, tuple, set, str, bytes, numbers) and
refuses anything else (``os.system``, ``builtins.eval``, a class of some package ...) with
:class:`UnsafePickleError` before it is called.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from pgm_plugins.errors import PgMError

__all__ = ["UnsafePickleError", "safe_load_pickle"]


class UnsafePickleError(PgMError, pickle.UnpicklingError):
    """A pickle asked for something other than arrays, dtypes and plain containers."""


# (module, name) pairs the unpickler may build; numpy.core.* is numpy 1.x's name of numpy._core
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles store bytes
}
_DTYPE_MODULE = "numpy.dtypes"  # numpy >= 1.25 dtype classes (Float32DType, StrDType ...)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        canonical = "builtins" if module == "__builtin__" else module  # protocol <= 2 names
        if module.startswith("numpy.core"):
            canonical = "numpy._core" + module[len("numpy.core") :]
        if (canonical, name) in _ALLOWED or (canonical == _DTYPE_MODULE and name.endswith("DType")):
            if canonical.startswith("numpy._core") and not hasattr(np, "_core"):
                canonical = "numpy.core" + canonical[len("numpy._core") :]  # numpy 1.x
            return super().find_class(canonical, name)
        raise UnsafePickleError(
            f"{self.source}: the pickle asks for {module}.{name}, which is not a numpy array, "
            "dtype or plain container; refusing to load it (unpickling can run arbitrary code). "
            "Only numpy arrays, dtypes, scalars, dict / list / tuple / set, str, bytes and "
            "numbers are accepted. If you trust the file, convert it yourself to a .npz and use "
            "the 'npz' data set."
        )


def safe_load_pickle(path: str | os.PathLike[str] | bytes) -> Any:
    """Unpickle ``path`` (or the given bytes), allowing only arrays and plain containers."""
    if isinstance(path, bytes):
        return _RestrictedUnpickler(io.BytesIO(path), "<bytes>").load()
    with open(path, "rb") as fh:
        return _RestrictedUnpickler(fh, str(path)).load()
