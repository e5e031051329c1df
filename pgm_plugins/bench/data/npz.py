"""``npz``: any multi-view ``.npz`` as a benchmark data set.

The file holds ``labels`` ``[N]``, optionally ``split`` (``train`` / ``valid`` / ``test``
strings) and ``groups`` ``[N]``, and one array per modality, ``[N, d]`` or ``[N, T, d]``. It is
read with ``allow_pickle=False`` (:func:`read_npz`), then checked and built in named phases:
:func:`_check_keys` (labels and row counts), :func:`_modalities`, :func:`_labels`,
:func:`_folds` (the file's split, or a seeded split that is stratified and never separates a
group), :func:`_bench_data`.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.bench.data.bench_data import (
    BenchData,
    Fold,
    check_protocol,
    fixed_folds,
    require_file,
    sha256_of,
)
from pgm_plugins.errors import ConfigError, choices_text, did_you_mean

__all__ = ["NPZ_RESERVED", "npz", "read_npz"]

#: keys of the file that are not modalities
NPZ_RESERVED = ("labels", "split", "groups")
SPLITS = ("train", "valid", "test")


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


def npz(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    task: str = "classification",
    valid_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> BenchData:
    """A generic multi-view ``.npz``: ``labels`` (integers; ``task="regression"`` for floats),
    optional ``split`` (``train`` / ``valid`` / ``test`` strings; else a split by seed,
    stratified by label, ``valid_fraction`` / ``test_fraction``), optional ``groups`` (a split by
    seed never separates a group), and every other key a modality ``[N, d]`` or ``[N, T, d]``.
    Classification labels are mapped to 0..K-1 (the original values: ``extras["classes"]``)."""
    proto = check_protocol("npz", protocol, ("default",))
    if task not in ("classification", "regression"):
        raise ConfigError(
            f"npz: task {task!r}; valid: 'classification', 'regression'."
            + did_you_mean(task, ("classification", "regression"))
        )
    file = require_file("npz", path)
    arrays, raw = read_npz(file)
    labels, modalities, shapes = _check_keys(file, arrays)
    x = _modalities(file, modalities, shapes)
    y, classes = _labels(file, labels, task)
    groups = arrays.get("groups")
    if groups is not None and groups.ndim != 1:
        raise ValueError(f"{file}: 'groups' has shape {list(groups.shape)}; expected [N].")
    strata = y if task == "classification" else None
    folds, split_text = _folds(
        file, arrays.get("split"), strata, groups, valid_fraction, test_fraction, len(y)
    )
    return _bench_data(file, proto, raw, x, y, classes, groups, folds, split_text, task)


def _check_keys(
    file: Path, arrays: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """``labels`` ``[N]``, the modality arrays and a text of every shape, after checking that
    every array has ``N`` rows and that there are at least two modalities."""
    if "labels" not in arrays:
        raise ValueError(
            f"{file}: no 'labels' array; it has {choices_text(arrays)}. A multi-view .npz needs "
            "integer 'labels' [N], one array per modality, optionally 'split' and 'groups'."
        )
    labels = arrays["labels"]
    if labels.ndim != 1:
        raise ValueError(f"{file}: 'labels' has shape {labels.shape}; expected [N].")
    n = len(labels)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    modalities = {k: v for k, v in arrays.items() if k not in NPZ_RESERVED}
    for k, v in arrays.items():
        if v.ndim == 0 or len(v) != n:
            raise ValueError(
                f"{file}: {k!r} has {v.shape[0] if v.ndim else 'no'} rows, 'labels' {n}; every "
                f"array needs one row per sample (shapes: {shapes})."
            )
    if len(modalities) < 2:
        raise ValueError(
            f"{file}: {len(modalities)} modality array(s) ({choices_text(modalities)}); a "
            f"multi-view file needs at least two besides {', '.join(NPZ_RESERVED)} "
            f"(shapes: {shapes})."
        )
    return labels, modalities, shapes


def _modalities(
    file: Path, modalities: dict[str, np.ndarray], shapes: str
) -> dict[str, np.ndarray]:
    """Each modality as float32, after checking its name (block parameters are named after
    it), its shape and dtype, and that it holds no NaN / inf."""
    x: dict[str, np.ndarray] = {}
    for k, v in modalities.items():
        if not k.isidentifier():
            fixed = re.sub(r"[^0-9A-Za-z_]", "_", k)
            fixed = fixed if fixed[:1].isalpha() else f"m_{fixed}"
            raise ValueError(
                f"{file}: modality name {k!r} is not a Python identifier (letters, digits, "
                "underscores; no spaces, dots or dashes): block parameters are named after it. "
                f"Rename the array, e.g. {fixed!r}."
            )
        if v.ndim not in (2, 3) or not (
            np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)
        ):
            raise ValueError(
                f"{file}: modality {k!r} has shape {list(v.shape)} and dtype {v.dtype}; a "
                f"modality is numbers shaped [N, d] or [N, T, d] (shapes: {shapes})."
            )
        arr = v.astype(np.float32)
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))
            raise ValueError(
                f"{file}: modality {k!r} {list(v.shape)} has NaN / inf values in "
                f"{len(bad)} row(s) (first: {bad[:5].tolist()}); clean or impute them first."
            )
        x[k] = arr
    return x


def _labels(file: Path, labels: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Classification: labels mapped to 0..K-1 (int64) and the original classes; regression:
    float32 targets and None."""
    if task == "classification":
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise ValueError(
                f"{file}: 'labels' has dtype {labels.dtype} {list(labels.shape)}; a "
                "classification file needs integer labels (store labels.astype(int)), or load "
                "it with task='regression' for continuous targets."
            )
        classes, y = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{file}: 'labels' has a single class {classes.tolist()}.")
        return y.astype(np.int64), classes
    if not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"{file}: 'labels' has dtype {labels.dtype}; expected numbers.")
    y = labels.astype(np.float32)
    if not np.isfinite(y).all():
        raise ValueError(f"{file}: 'labels' {list(labels.shape)} has NaN / inf values.")
    return y, None


def _folds(
    file: Path,
    split: np.ndarray | None,
    strata: np.ndarray | None,
    groups: np.ndarray | None,
    valid_fraction: float,
    test_fraction: float,
    n: int,
) -> tuple[Callable[[int], list[Fold]], str]:
    """The file's ``split`` for every seed, else :func:`_seeded_split`; and a text for the
    description."""
    if split is not None:
        split = split.astype(str)
        unknown = sorted(set(split.tolist()) - set(SPLITS))
        if unknown:
            raise ValueError(
                f"{file}: 'split' {list(split.shape)} holds {unknown}; valid values: 'train', "
                "'valid', 'test'." + did_you_mean(unknown[0], SPLITS)
            )
        rows = {s: np.flatnonzero(split == s) for s in SPLITS}
        empty = [s for s, r in rows.items() if not len(r)]
        if empty:
            raise ValueError(f"{file}: 'split' gives no rows to {', '.join(empty)}.")
        return fixed_folds(rows["train"], rows["valid"], rows["test"]), "the file's split"
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise ConfigError(
            f"npz: valid_fraction {valid_fraction} and test_fraction {test_fraction} must "
            "be in (0, 1) with a sum below 1."
        )
    split_text = f"a split by seed ({1 - valid_fraction - test_fraction:.0%} / "
    split_text += f"{valid_fraction:.0%} / {test_fraction:.0%}"
    split_text += ", by group)" if groups is not None else ", stratified)"
    return _seeded_split(strata, groups, valid_fraction, test_fraction, n), split_text


def _bench_data(
    file: Path,
    protocol: str,
    raw: bytes,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    classes: np.ndarray | None,
    groups: np.ndarray | None,
    folds: Callable[[int], list[Fold]],
    split_text: str,
    task: str,
) -> BenchData:
    classification = task == "classification"
    extras: dict[str, Any] = {
        "path": str(file),
        **({"classes": classes} if classes is not None else {}),
    }
    return BenchData(
        name="npz",
        protocol=protocol,
        description=(
            f"{file.name}: {len(y)} rows, modalities "
            + ", ".join(f"{k} {list(v.shape[1:])}" for k, v in x.items())
            + f"; {split_text}"
        ),
        x=x,
        y=y,
        task="classification" if classification else "regression",
        num_classes=len(classes) if classes is not None else None,
        folds=folds,
        digest=sha256_of(raw),
        primary="acc" if classification else "mae",
        groups=groups,
        changes=(
            *(("labels mapped to 0..K-1 (extras['classes'])",) if classes is not None else ()),
            "raw features: standardised on the training rows by the runner",
        ),
        extras=extras,
    )


def _seeded_split(
    strata: np.ndarray | None,
    groups: np.ndarray | None,
    valid_fraction: float,
    test_fraction: float,
    n: int,
) -> Callable[[int], list[Fold]]:
    """Per seed: whole groups (or rows) shuffled within each stratum and cut into test, valid,
    train; with groups, a group goes to the stratum of its most common label."""

    def folds(seed: int) -> list[Fold]:
        rng = np.random.default_rng(seed)
        units = groups if groups is not None else np.arange(n)
        uniq, inverse = np.unique(units, return_inverse=True)
        if strata is not None:
            unit_stratum = np.array(
                [np.bincount(strata[inverse == u]).argmax() for u in range(len(uniq))]
            )
        else:
            unit_stratum = np.zeros(len(uniq), dtype=np.int64)
        part = np.empty(len(uniq), dtype=np.int64)
        for s in np.unique(unit_stratum):
            members = rng.permutation(np.flatnonzero(unit_stratum == s))
            n_test = round(test_fraction * len(members))
            n_valid = round(valid_fraction * len(members))
            part[members[:n_test]] = 2
            part[members[n_test : n_test + n_valid]] = 1
            part[members[n_test + n_valid :]] = 0
        row_part = part[inverse]
        got = [np.flatnonzero(row_part == k) for k in range(3)]
        if any(len(g) == 0 for g in got):
            raise ConfigError(
                f"npz: seed {seed} leaves a split empty ({[len(g) for g in got]} train / valid "
                f"/ test rows from {len(uniq)} {'groups' if groups is not None else 'rows'}); "
                "give a 'split' array or more groups."
            )
        return [Fold(got[0], got[1], got[2], fold=0, seed=seed)]

    return folds
