"""``mmsa-pkl`` and ``mult-pkl``: the feature pickles of MMSA and MulT as benchmark data sets.

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

Both are loaded through :func:`pgm_plugins.bench.data.safe_pickle.safe_load_pickle` (arrays and
plain containers only). :func:`mmsa_pkl` and :func:`mult_pkl` are the registered factories; the
files' own train / valid / test splits are the folds of every seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.bench.data.bench_data import (
    BenchData,
    check_protocol,
    fixed_folds,
    require_file,
    sha256_of,
)
from pgm_plugins.bench.data.safe_pickle import safe_load_pickle
from pgm_plugins.errors import ConfigError, UnknownNameError, choices_text, did_you_mean

__all__ = [
    "IEMOCAP_EMOTIONS",
    "MMSA_DATASETS",
    "MULT_DATASETS",
    "SPLITS",
    "check_name",
    "mmsa_pkl",
    "mult_pkl",
    "read_mmsa_pkl",
    "read_mult_pkl",
]

SPLITS = ("train", "valid", "test")
MMSA_DATASETS = ("mosi", "mosei", "sims")
MULT_DATASETS = ("mosi", "mosei_senti", "iemocap")
#: MulT's IEMOCAP label order (``src/eval_metrics.py``: Neutral, Happy, Sad, Angry)
IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")


def check_name(kind: str, given: str, valid: tuple[str, ...]) -> None:
    """Raise :class:`UnknownNameError` unless ``given`` is one of ``valid`` (the ``dataset``
    options of the readers and of the MMSA metrics)."""
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
    check_name("MMSA data set", dataset, MMSA_DATASETS)
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
    check_name("MulT data set", dataset, MULT_DATASETS)
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


# ---------------------------------------------------------------------- the factories
def _pkl_data(
    name: str,
    splits: dict[str, dict[str, np.ndarray]],
    label_key: str,
    task: str,
    file: Path,
    description: str,
    lengths_keys: dict[str, str],
    changes: tuple[str, ...],
    extras: dict[str, Any],
    num_classes: int | None = None,
) -> BenchData:
    order = ("train", "valid", "test")
    sizes = [len(splits[s][label_key]) for s in order]
    bounds = np.cumsum([0, *sizes])
    rows = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
    x = {}
    for m in ("text", "audio", "vision"):
        shapes = {s: splits[s][m].shape[1:] for s in order}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{file}: {m!r} differs in shape between splits: {shapes}.")
        x[m] = np.concatenate([splits[s][m] for s in order])
    lengths = {}
    for m, key in lengths_keys.items():
        if all(key in splits[s] for s in order):
            lens = np.concatenate([splits[s][key] for s in order])
            lengths[m] = np.clip(lens, 1, x[m].shape[1]).astype(np.int64)
    y = np.concatenate([splits[s][label_key] for s in order])
    ids = [splits[s].get("id") for s in order]
    if all(i is not None for i in ids):
        extras = {**extras, "id": np.concatenate([i for i in ids if i is not None])}
    return BenchData(
        name=name,
        protocol="default",
        description=description + f" ({sizes[0]} / {sizes[1]} / {sizes[2]} rows)",
        x=x,
        lengths=lengths,
        y=y,
        task="regression" if task == "regression" else "classification",
        num_classes=num_classes,
        folds=fixed_folds(*rows),
        digest=sha256_of(file.read_bytes()),
        primary="mae" if task == "regression" else "acc2",
        changes=changes,
        extras={"path": str(file), **extras},
    )


def mmsa_pkl(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    dataset: str = "mosi",
    labels: str = "regression",
) -> BenchData:
    """MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` (``dataset`` mosi / mosei / sims; see
    :func:`read_mmsa_pkl`): ``text``, ``audio``, ``vision`` sequences,
    ``lengths`` for audio / vision when the file has them (unaligned). ``labels="regression"``
    (default): the continuous scores, metrics :func:`~pgm_plugins.bench.metrics.
    regression_metrics` (MAE, Corr, Acc-7, both Acc-2, F1); ``"binary"``: score ``>= 0`` (MOSI /
    MOSEI, MMSA's has-0 convention; SIMS ``> 0``) as class 1, primary ``acc2``."""
    check_protocol("mmsa-pkl", protocol, ("default",))
    if labels not in ("regression", "binary"):
        raise ConfigError(
            f"mmsa-pkl: labels {labels!r}; valid: 'regression', 'binary'."
            + did_you_mean(labels, ("regression", "binary"))
        )
    file = require_file("mmsa-pkl", path)
    splits = read_mmsa_pkl(file, dataset)
    if labels == "binary":
        for rec in splits.values():
            score = rec["regression_labels"]
            rec["binary"] = (score > 0 if dataset == "sims" else score >= 0).astype(np.int64)
    return _pkl_data(
        "mmsa-pkl",
        splits,
        "regression_labels" if labels == "regression" else "binary",
        labels,
        file,
        f"MMSA features {file.name} ({dataset}), text / audio / vision",
        {"audio": "audio_lengths", "vision": "vision_lengths"},
        ("audio -inf set to 0 (as MMSA's loader does)",)
        + (("binary labels from the scores",) if labels == "binary" else ()),
        {
            "metric_dataset": dataset,
        },
        num_classes=2 if labels == "binary" else None,
    )


def mult_pkl(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    dataset: str = "mosi",
    emotion: str | None = None,
) -> BenchData:
    """MulT's ``mosi_data.pkl`` / ``mosei_senti_data.pkl`` (continuous sentiment: regression,
    MMSA's metrics) or ``iemocap_data.pkl`` with ``emotion`` in neutral / happy / sad / angry
    (binary classification: is the emotion present), all aligned sequences."""
    check_protocol("mult-pkl", protocol, ("default",))
    file = require_file("mult-pkl", path)
    if dataset == "iemocap" and emotion not in IEMOCAP_EMOTIONS:
        raise ConfigError(
            f"mult-pkl: IEMOCAP is one binary task per emotion; option emotion={emotion!r}; "
            f"valid: {choices_text(IEMOCAP_EMOTIONS)}."
            + did_you_mean(str(emotion), IEMOCAP_EMOTIONS)
        )
    if dataset != "iemocap" and emotion is not None:
        raise ConfigError(
            f"mult-pkl: option emotion applies to dataset 'iemocap', not {dataset!r}."
        )
    splits = read_mult_pkl(file, dataset)
    if dataset == "iemocap":
        k = IEMOCAP_EMOTIONS.index(str(emotion))
        for rec in splits.values():
            rec["target"] = rec["labels"][:, k].astype(np.int64)
        return _pkl_data(
            "mult-pkl",
            splits,
            "target",
            "classification",
            file,
            f"MulT IEMOCAP features {file.name}, emotion {emotion!r} present vs absent",
            {},
            (f"one binary task: {emotion} (MulT trains the four emotions jointly)",),
            {"emotion": emotion},
            num_classes=2,
        )
    return _pkl_data(
        "mult-pkl",
        splits,
        "labels",
        "regression",
        file,
        f"MulT features {file.name} ({dataset}), aligned text / audio / vision",
        {},
        ("audio -inf set to 0 (as MulT's loader does)",),
        {
            "metric_dataset": "mosei" if dataset == "mosei_senti" else "mosi",
        },
    )
