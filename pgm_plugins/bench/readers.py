"""Readers for the feature files users download (their metrics: ``bench.metrics``).

- :func:`safe_load_pickle`: a **restricted unpickler**. MMSA's and MulT's feature files are
  pickles, and a pickle can run any code when it is loaded; this one only builds numpy arrays,
  numpy dtypes / scalars and plain containers (dict, list, tuple, set, str, bytes, numbers) and
  refuses anything else (``os.system``, ``builtins.eval``, a class of some package ...) with
  :class:`UnsafePickleError` before it is called.
- :func:`read_mmsa_pkl`: MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` (MOSI, MOSEI, SIMS),
  the layout MMSA 2.2.1's ``MMSA/data_loader.py`` reads: ``data[split][key]`` for split
  ``train`` / ``valid`` / ``test`` and keys ``text`` ``[N, L, d]`` (GloVe) or ``text_bert``
  ``[N, 3, L]`` (token ids, mask, segments), ``audio`` / ``vision`` ``[N, T, d]``,
  ``regression_labels`` ``[N]``, ``classification_labels``, ``audio_lengths`` /
  ``vision_lengths`` (unaligned files), ``id``, ``raw_text``, ``annotations``.
- :func:`read_mult_pkl`: MulT's ``mosi_data.pkl`` / ``mosei_senti_data.pkl`` /
  ``iemocap_data.pkl``: ``data[split]`` with keys ``text``, ``audio``, ``vision``, ``labels``
  (``[N, 1, 1]`` continuous sentiment; IEMOCAP ``[N, 4, 2]``: one one-hot pair per emotion,
  neutral, happy, sad, angry), ``id``.
- :func:`read_npz`: the generic multi-view ``.npz`` (checked by
  :func:`pgm_plugins.bench.datasets.npz`), loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.errors import PgMError, UnknownNameError, choices_text, did_you_mean

__all__ = [
    "IEMOCAP_EMOTIONS",
    "MMSA_DATASETS",
    "MULT_DATASETS",
    "SPLITS",
    "UnsafePickleError",
    "read_mmsa_pkl",
    "read_mult_pkl",
    "read_npz",
    "safe_load_pickle",
]

SPLITS = ("train", "valid", "test")
MMSA_DATASETS = ("mosi", "mosei", "sims")
MULT_DATASETS = ("mosi", "mosei_senti", "iemocap")
#: MulT's IEMOCAP label order (``src/eval_metrics.py``: Neutral, Happy, Sad, Angry)
IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")


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


def _check_name(kind: str, given: str, valid: tuple[str, ...]) -> None:
    if given not in valid:
        raise UnknownNameError(
            f"unknown {kind} {given!r}; valid: {choices_text(valid)}." + did_you_mean(given, valid)
        )


def _splits(data: Any, path: Path, fmt: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a {fmt} file holds a dict of splits {SPLITS}; got {type(data).__name__}."
        )
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise ValueError(
            f"{path}: a {fmt} file holds the splits {', '.join(SPLITS)}; missing "
            f"{', '.join(missing)} (it has {choices_text(map(str, data))})."
        )
    for s in SPLITS:
        if not isinstance(data[s], dict):
            raise ValueError(f"{path}: split {s!r} is a {type(data[s]).__name__}, not a dict.")
    return {s: data[s] for s in SPLITS}


def _array(split: dict[str, Any], key: str, path: Path, name: str) -> np.ndarray:
    if key not in split:
        raise ValueError(
            f"{path}: split {name!r} has no key {key!r}; it has {choices_text(map(str, split))}."
            + did_you_mean(key, [str(k) for k in split])
        )
    return np.asarray(split[key])


def _features(arr: np.ndarray, key: str, split: str, path: Path) -> np.ndarray:
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"{path}: {split}[{key!r}] has shape {arr.shape} and dtype {arr.dtype}; expected "
            "numbers shaped [N, d] or [N, T, d]."
        )
    out = arr.astype(np.float32)
    out[np.isneginf(out)] = 0.0  # MMSA and MulT both zero the -inf of their audio features
    return out


def read_mmsa_pkl(
    path: str | os.PathLike[str], dataset: str = "mosi"
) -> dict[str, dict[str, np.ndarray]]:
    """Read an MMSA feature pickle: ``{split: {"text", "audio", "vision", "regression_labels",
    "audio_lengths"?, "vision_lengths"?, "classification_labels"?, "id"?}}`` with float32
    features (``-inf`` set to 0, as MMSA does for audio) and ``[N]`` labels.

    The text key is ``text`` (``[N, L, d]`` features). ``text_bert`` holds BERT token ids and
    masks, not features: a file with only ``text_bert`` is refused with that explanation.
    """
    _check_name("MMSA data set", dataset, MMSA_DATASETS)
    path = Path(path)
    splits = _splits(safe_load_pickle(path), path, "MMSA")
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, d in splits.items():
        if "text" not in d and "text_bert" in d:
            raise ValueError(
                f"{path}: split {s!r} has 'text_bert' (BERT token ids, mask and segment ids "
                "[N, 3, L]) but no 'text' features; a feature host needs 'text' [N, L, d]: use "
                "the GloVe-feature files (aligned_50.pkl / unaligned_50.pkl with 'text')."
            )
        rec: dict[str, np.ndarray] = {}
        for key in ("text", "audio", "vision"):
            rec[key] = _features(_array(d, key, path, s), key, s, path)
        rec["regression_labels"] = (
            _array(d, "regression_labels", path, s).astype(np.float32).reshape(-1)
        )
        for key in ("audio_lengths", "vision_lengths"):
            if key in d:
                rec[key] = np.asarray(d[key]).astype(np.int64).reshape(-1)
        if "classification_labels" in d:
            rec["classification_labels"] = np.asarray(d["classification_labels"]).reshape(-1)
        if "id" in d:
            rec["id"] = np.asarray(d["id"]).astype(str).reshape(-1)
        n = len(rec["regression_labels"])
        for key, arr in rec.items():
            if len(arr) != n:
                raise ValueError(
                    f"{path}: split {s!r}: {key!r} has {len(arr)} rows, regression_labels {n}."
                )
        out[s] = rec
    return out


def read_mult_pkl(
    path: str | os.PathLike[str], dataset: str = "mosi"
) -> dict[str, dict[str, np.ndarray]]:
    """Read a MulT feature pickle: ``{split: {"text", "audio", "vision", "labels", "id"?}}``.

    ``labels`` is ``[N]`` float32 sentiment for ``mosi`` / ``mosei_senti`` (MulT stores
    ``[N, 1, 1]``) and ``[N, 4]`` int64 (1 = the emotion is present) for ``iemocap`` (MulT
    stores ``[N, 4, 2]``, a one-hot pair per emotion, in :data:`IEMOCAP_EMOTIONS` order).
    """
    _check_name("MulT data set", dataset, MULT_DATASETS)
    path = Path(path)
    splits = _splits(safe_load_pickle(path), path, "MulT")
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, d in splits.items():
        rec = {
            key: _features(_array(d, key, path, s), key, s, path)
            for key in ("text", "audio", "vision")
        }
        labels = _array(d, "labels", path, s)
        n = len(labels)
        if dataset == "iemocap":
            if labels.shape[1:] == (4, 2):
                labels = labels.argmax(-1)
            elif labels.shape[1:] != (4,):
                raise ValueError(
                    f"{path}: split {s!r}: IEMOCAP labels have shape {labels.shape}; expected "
                    f"[N, 4, 2] (one-hot per emotion {IEMOCAP_EMOTIONS}) or [N, 4]."
                )
            rec["labels"] = labels.astype(np.int64)
        else:
            if labels.size != n:
                raise ValueError(
                    f"{path}: split {s!r}: sentiment labels have shape {labels.shape}; expected "
                    "one value per sample ([N], [N, 1] or [N, 1, 1])."
                )
            rec["labels"] = labels.astype(np.float32).reshape(-1)
        if "id" in d:
            ids = np.asarray(d["id"])
            rec["id"] = np.array([str(i) for i in ids.reshape(len(ids), -1).tolist()])
        for key, arr in rec.items():
            if len(arr) != n:
                raise ValueError(f"{path}: split {s!r}: {key!r} has {len(arr)} rows, labels {n}.")
        out[s] = rec
    return out


def read_npz(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], bytes]:
    """All arrays of a ``.npz`` (no pickled objects) and the file's bytes (for the digest)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise ValueError(
            f"{path}: cannot read it as a .npz without pickled objects ({exc}). Store strings as "
            "fixed-width unicode (np.array([...], dtype=str)), not object arrays."
        ) from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc}).") from exc
    return arrays, raw
