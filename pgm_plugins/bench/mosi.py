"""CMU-MOSI utterance features, protocol ``clean`` (``$PGM_DATA_DIR/mosi-utterance/README.md``).

The release's text and video extractors were trained on its train file, so only the 752
utterances of its **test file** (31 videos) are unseen by every extractor. Protocol ``clean``:
those 752 utterances, three modalities (text 100, audio 73, video 100 features), 5-fold
cross-validation **grouped by video**, repeated over seeds, with a validation set carved **by
video** inside each training fold. Features are standardised with the training part's statistics.

Cite CMU-MOSI (Zadeh et al., 2016) and Poria et al., ACL 2017 when reporting numbers on it.
The data are read from ``data_dir`` or ``$PGM_DATA_DIR`` (default ``../shared/data`` next to the
repository), never copied into the repository.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CLEAN_FILES",
    "MosiClean",
    "MosiFold",
    "clean_folds",
    "data_root",
    "load_clean",
    "standardise",
]

#: files the clean protocol reads, relative to the data set's folder
CLEAN_FILES = {
    "text": "text/text_test0.csv",
    "audio": "audio/audio_test0.csv",
    "video": "video/video_test0.csv",
    "index": "text_test.csv",
    "transcripts": "transcripts.csv",
}
WIDTHS = {"text": 100, "audio": 73, "video": 100}
DATASET = "mosi-utterance"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``mosi-utterance/``: ``data_dir``, else ``$PGM_DATA_DIR``, else
    ``../shared/data`` relative to the repository."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("PGM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class MosiClean:
    x: dict[str, np.ndarray]  #: modality -> [752, d] float32 (raw, unstandardised)
    y: np.ndarray  #: [752] int64, 1 = positive
    video: np.ndarray  #: [752] video id per utterance
    utterance: np.ndarray  #: [752] utterance id
    digest: str  #: SHA-256 over the bytes of every file read, in CLEAN_FILES order
    path: Path


@dataclass
class MosiFold:
    train: np.ndarray  #: row indices
    valid: np.ndarray
    test: np.ndarray
    fold: int
    seed: int


def load_clean(data_dir: str | os.PathLike[str] | None = None) -> MosiClean:
    """Read the 752 test-file utterances; a missing file is a ``FileNotFoundError`` naming it and
    where it looked."""
    import pandas as pd

    root = data_root(data_dir) / DATASET
    paths = {k: root / v for k, v in CLEAN_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"MOSI clean protocol: {len(missing)} file(s) not found: {', '.join(missing)} "
            f"(looked in {root}; data_dir={data_dir!r}, PGM_DATA_DIR="
            f"{os.environ.get('PGM_DATA_DIR')!r}). Point --data-dir or PGM_DATA_DIR at the folder "
            f"that holds '{DATASET}/'."
        )
    h = hashlib.sha256()
    for key in CLEAN_FILES:
        h.update(key.encode())
        h.update(paths[key].read_bytes())
    frames = {k: pd.read_csv(paths[k], header=None) for k in ("text", "audio", "video")}
    index = pd.read_csv(paths["index"], header=None)
    transcripts = pd.read_csv(paths["transcripts"], header=None)
    n = len(index)
    x: dict[str, np.ndarray] = {}
    labels = []
    for m, frame in frames.items():
        arr = frame.to_numpy(dtype=np.float64)
        if arr.shape != (n, WIDTHS[m] + 1):
            raise ValueError(
                f"{paths[m]} has shape {arr.shape}; expected ({n}, {WIDTHS[m] + 1}) "
                f"({WIDTHS[m]} features and the label)."
            )
        x[m] = arr[:, :-1].astype(np.float32)
        labels.append(arr[:, -1].astype(np.int64))
    if not all((lab == labels[0]).all() for lab in labels):
        raise ValueError(f"labels differ between the modality files in {root}.")
    rows = index.iloc[:, 0].to_numpy(dtype=np.int64)
    utterance = transcripts.iloc[rows, 0].astype(str).to_numpy()
    video = np.array([u.rsplit("_", 1)[0] for u in utterance])
    label_t = transcripts.iloc[rows, 3].to_numpy(dtype=np.int64)
    if not (label_t == labels[0]).all():
        raise ValueError(f"labels of {paths['transcripts']} and the feature files disagree.")
    return MosiClean(x, labels[0], video, utterance, h.hexdigest(), root)


def clean_folds(
    data: MosiClean, seed: int, n_folds: int = 5, valid_fraction: float = 0.2
) -> list[MosiFold]:
    """``n_folds`` folds grouped by video for ``seed``; validation videos carved out of each
    training fold (``valid_fraction`` of its videos, at least one)."""
    rng = np.random.default_rng(seed)
    videos = np.array(sorted(set(data.video)))
    rng.shuffle(videos)
    chunks = np.array_split(videos, n_folds)
    folds = []
    for k, test_videos in enumerate(chunks):
        rest = np.array([v for v in videos if v not in set(test_videos)])
        rest = rest[rng.permutation(len(rest))]
        n_valid = max(1, round(valid_fraction * len(rest)))
        valid_videos, train_videos = set(rest[:n_valid]), set(rest[n_valid:])
        folds.append(
            MosiFold(
                train=np.flatnonzero([v in train_videos for v in data.video]),
                valid=np.flatnonzero([v in valid_videos for v in data.video]),
                test=np.flatnonzero(np.isin(data.video, test_videos)),
                fold=k,
                seed=seed,
            )
        )
    return folds


def standardise(x: dict[str, np.ndarray], train: np.ndarray) -> dict[str, np.ndarray]:
    """Standardise each modality with the training rows' mean and std."""
    out = {}
    for m, arr in x.items():
        mu = arr[train].mean(0)
        sd = arr[train].std(0) + 1e-6
        out[m] = ((arr - mu) / sd).astype(np.float32)
    return out
