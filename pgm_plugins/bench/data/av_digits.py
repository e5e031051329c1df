"""av-digits: spoken digits (FSDD) x handwritten digits (MNIST-5k), label-level pairs.

The protocol is the one of ``$PGM_DATA_DIR/av-digits/README.md``: audio split by speaker (train:
george, jackson, nicolas, yweweler; valid: lucas; test: theo), MNIST-5k split by
``mnist_5k_split.csv``, the fixed pairs of ``pairs.csv`` for evaluation. A pair shares only its
digit: there is no instance-level correspondence between the modalities, so training may re-draw
the pairs within split and digit every epoch (:func:`redraw_pairs`), and retrieval relevance is
"same digit" (:func:`retrieval_metrics`: P@1, P@10, mAP).

One test speaker (500 clips) leaves a classification number carrying that voice's luck, so the
factory also has a ``loso`` protocol: six folds, each speaker tests in turn (the README's
leave-one-speaker-out view), with MNIST-5k partitioned among the six speakers within digit
(:func:`loso_pairs`) so that no fold's test or validation image is one of its training images.

Audio features are the README's MFCCs (``python_speech_features.mfcc``, 20 coefficients, 25 ms
windows every 10 ms, c0 replaced by the log frame energy), given two ways: the per-clip mean and
standard deviation of each coefficient (40 numbers, the README's reference features) and the frame
sequence resampled to a fixed number of frames (``[T, 20]``, linear interpolation in time, plus the
clip's true frame count). Both are z-scored with the statistics of the 2,000 train clips.

:func:`av_digits` is the registered factory (a :class:`~pgm_plugins.bench.data.bench_data.
BenchData` of one row per clip and its fixed image pair); :func:`load` the loader it builds on.

Cite FSDD (Jackson et al., CC BY-SA 4.0) and MNIST (LeCun, Cortes, Burges) when reporting numbers.
The data folder is :func:`pgm_plugins.bench.data.location.locate_data`'s; the files are never
copied into the repository. ``pgm bench fetch av-digits`` downloads them (:mod:`.av_digits_fetch`).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.bench.data.bench_data import (
    BenchData,
    Fold,
    check_protocol,
    fixed_folds,
    sha256_of,
)
from pgm_plugins.bench.data.fetch import DigestError, sha256_bytes, verify_bytes
from pgm_plugins.bench.data.location import DataLocation, locate_data, missing_files_error
from pgm_plugins.errors import ConfigError

__all__ = [
    "DATASET",
    "EXPECTED_SHA256",
    "FILES",
    "LOSO_IMAGE_SEED",
    "LOSO_VALID",
    "PROTOCOLS",
    "RECORDINGS_SHA256",
    "SPEAKERS",
    "AvDigits",
    "audio_features",
    "av_digits",
    "check_recordings",
    "held_out_speaker",
    "load",
    "loso_pairs",
    "redraw_pairs",
    "retrieval_metrics",
]

DATASET = "av-digits"
#: files read besides the 3,000 recordings, relative to the data set's folder
FILES = ("mnist_5k.csv.gz", "mnist_5k_split.csv", "pairs.csv", "fsdd/speakers.csv")
SPLITS = ("train", "valid", "test")
#: speaker -> split of the README's protocol
SPEAKERS = {
    "george": "train",
    "jackson": "train",
    "nicolas": "train",
    "yweweler": "train",
    "lucas": "valid",
    "theo": "test",
}
SAMPLE_RATE = 8000
NUM_CEP = 20
#: SHA-256 of every file the loader reads besides the recordings (the data folder's SHA256SUMS)
EXPECTED_SHA256 = {
    "mnist_5k.csv.gz": "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    "mnist_5k_split.csv": "32a3cb6668991e7597e0fbb613d0411d0b236756eb28cbdea85d7725d8da7f09",
    "pairs.csv": "dda6a3404909e3167f215c256d2d36db5270083695768df666ad242f32eba543",
    "fsdd/speakers.csv": "93a9b69afe0efc08d466800896d8340ec188f03b23758cb32eba6c149257c2c5",
    "fsdd/README.md": "523de3cafa0f54707a0ab2760a2d32b640ccfe834a081d7d35c894f1fb6d79f5",
    "SHA256SUMS": "c5e3891742ae52c7575391b073a03bb055580deb0bae3f65139aa83f2ea060d8",
}
#: SHA-256 of the recordings' manifest: the lines ``"<sha256>  fsdd/recordings/<name>.wav\n"``
#: of the 3,000 FSDD v1.0.10 clips sorted by path (the recordings' lines of SHA256SUMS)
RECORDINGS_SHA256 = "8f12bbbd51d141d7b73139fc9ba83cf9aaea4b7a385284e7710430761b28b673"


@dataclass
class AvDigits:
    images: np.ndarray  #: [5000, 28, 28] float32 in [0, 1], white digit on black
    image_label: np.ndarray  #: [5000] int64
    image_split: np.ndarray  #: [5000] 'train' / 'valid' / 'test'
    audio_stats: np.ndarray  #: [3000, 40] float32: MFCC mean + sd, z-scored on train clips
    audio_frames: np.ndarray  #: [3000, T, 20] float32: MFCC frames resampled to T, z-scored
    audio_frame_count: np.ndarray  #: [3000] int64: frames before resampling
    audio_label: np.ndarray  #: [3000] int64 (clip order: pairs.csv order)
    audio_speaker: np.ndarray  #: [3000] speaker name
    audio_split: np.ndarray  #: [3000]
    audio_path: np.ndarray  #: [3000] path relative to the data set folder
    pair_image: np.ndarray  #: [3000] MNIST-5k row of each clip's fixed pair
    digest: str  #: SHA-256 over every file read (names and bytes, in a fixed order)
    path: Path
    frames: int = 32
    audio_norm: dict[str, np.ndarray] = field(default_factory=dict)  #: train mean / sd
    audio_raw: list[np.ndarray] = field(default_factory=list)  #: true [n_i, 20] MFCC frames

    def clips(self, split: str) -> np.ndarray:
        """Indices of the clips of ``split`` (``train``, ``valid``, ``test``)."""
        _check_split(split)
        return np.flatnonzero(self.audio_split == split)

    def image_rows(self, split: str) -> np.ndarray:
        """MNIST-5k rows of ``split``."""
        _check_split(split)
        return np.flatnonzero(self.image_split == split)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        from pgm_plugins.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(
            f"unknown split {split!r}; valid: {', '.join(SPLITS)}." + did_you_mean(split, SPLITS)
        )


def _missing_error(missing: list[Path], where: DataLocation) -> FileNotFoundError:
    return missing_files_error(
        "av-digits (its README and SHA256SUMS describe the expected files)",
        DATASET,
        missing,
        where,
        show=5,
    )


def audio_features(signal: np.ndarray, frames: int = 32) -> tuple[np.ndarray, np.ndarray, int]:
    """MFCCs of one 8 kHz clip with the README's settings: (frames resampled to ``[frames, 20]``,
    mean + sd ``[40]``, true frame count)."""
    seq, stats, coeffs = _features(signal, frames)
    return seq, stats, coeffs.shape[0]


def _features(signal: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resampled ``[frames, 20]``, mean + sd ``[40]``, the true ``[n, 20]`` MFCC frames)."""
    try:
        from python_speech_features import mfcc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "av-digits audio features need python_speech_features: "
            "pip install -c constraints.txt python_speech_features"
        ) from exc
    coeffs = mfcc(
        signal,
        samplerate=SAMPLE_RATE,
        winlen=0.025,
        winstep=0.01,
        numcep=NUM_CEP,
        nfilt=26,
        nfft=512,
    )
    n = coeffs.shape[0]
    stats = np.concatenate([coeffs.mean(0), coeffs.std(0)])
    if n == 1:
        seq = np.repeat(coeffs, frames, axis=0)
    else:
        src = np.linspace(0.0, 1.0, n)
        dst = np.linspace(0.0, 1.0, frames)
        seq = np.stack([np.interp(dst, src, coeffs[:, j]) for j in range(coeffs.shape[1])], 1)
    return seq.astype(np.float32), stats.astype(np.float32), coeffs.astype(np.float32)


def recordings_manifest(digests: dict[str, str]) -> str:
    """The manifest text of :data:`RECORDINGS_SHA256`: ``path -> sha256`` as sorted lines."""
    return "".join(f"{digests[p]}  {p}\n" for p in sorted(digests))


def check_recordings(root: Path, digests: dict[str, str], use_sums: bool = True) -> None:
    """Raise :class:`DigestError` unless the recordings' manifest hashes to
    :data:`RECORDINGS_SHA256`, naming the files that differ (from ``SHA256SUMS`` when the folder
    has the pinned one) with their expected and actual digests."""
    actual = sha256_bytes(recordings_manifest(digests).encode())
    if actual == RECORDINGS_SHA256:
        return
    sums = root / "SHA256SUMS"
    detail = ""
    if (
        use_sums
        and sums.is_file()
        and sha256_bytes(sums.read_bytes()) == EXPECTED_SHA256["SHA256SUMS"]
    ):
        expected = {}
        for line in sums.read_text().splitlines():
            digest, _, rel = line.partition("  ")
            expected[rel.removeprefix("./")] = digest
        bad = [
            f"{root / p}: SHA-256 {d}, expected {expected.get(p)}"
            for p, d in sorted(digests.items())
            if expected.get(p) != d
        ]
        detail = f" {len(bad)} file(s) differ: " + "; ".join(bad[:5])
        detail += f" and {len(bad) - 5} more." if len(bad) > 5 else "."
    raise DigestError(
        f"av-digits: the {len(digests)} recordings under {root / 'fsdd/recordings'} differ from "
        f"FSDD v1.0.10 (manifest SHA-256 {actual}, expected {RECORDINGS_SHA256}).{detail} "
        "Restore the original clips or fetch them again with `pgm bench fetch av-digits`; "
        "verify=False reads a modified copy on purpose."
    )


def load(
    data_dir: str | os.PathLike[str] | None = None, frames: int = 32, verify: bool = True
) -> AvDigits:
    """Read images, clips, splits and fixed pairs; compute the MFCC features (about 1-2 s).

    A missing file is a ``FileNotFoundError`` naming it and where it looked; a file whose
    SHA-256 differs from :data:`EXPECTED_SHA256` / :data:`RECORDINGS_SHA256` a
    ``DigestError`` naming it with both digests (``verify=False`` skips the check).
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}.")
    where = locate_data(data_dir)
    root = where.path / DATASET
    raw, pairs, h = _read_files(root, where, verify)
    images, image_label, image_split = _read_images(root, raw)
    clips = _read_clips(root, pairs, h, verify)
    seq_a, stats_a, raw_frames = _mfccs(root, pairs, clips, frames)
    audio_label, speaker, audio_split, pair_image = _check_pairs(pairs, image_label)
    train = audio_split == "train"
    s_mean, s_sd = stats_a[train].mean(0), stats_a[train].std(0) + 1e-6
    f_mean, f_sd = seq_a[train].mean((0, 1)), seq_a[train].std((0, 1)) + 1e-6
    return AvDigits(
        images=images,
        image_label=image_label,
        image_split=image_split.astype(str),
        audio_stats=((stats_a - s_mean) / s_sd).astype(np.float32),
        audio_frames=((seq_a - f_mean) / f_sd).astype(np.float32),
        audio_frame_count=np.array([len(c) for c in raw_frames], dtype=np.int64),
        audio_label=audio_label,
        audio_speaker=speaker,
        audio_split=audio_split,
        audio_path=np.array([r["audio"] for r in pairs]),
        pair_image=pair_image,
        digest=h.hexdigest(),
        path=root,
        frames=frames,
        audio_norm={
            "stats_mean": s_mean,
            "stats_sd": s_sd,
            "frames_mean": f_mean,
            "frames_sd": f_sd,
        },
        audio_raw=raw_frames,
    )


def _read_files(
    root: Path, where: DataLocation, verify: bool
) -> tuple[dict[str, bytes], list[dict[str, str]], Any]:
    """The bytes of :data:`FILES` (verified), the rows of ``pairs.csv`` and the digest so far;
    missing files (the listed ones, then the clips ``pairs.csv`` names) are named."""
    paths = {name: root / name for name in FILES}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise _missing_error(missing, where)
    raw = {name: paths[name].read_bytes() for name in FILES}
    if verify:
        for name in FILES:
            verify_bytes(paths[name], raw[name], EXPECTED_SHA256.get(name))
    pairs = list(csv.DictReader(io.StringIO(raw["pairs.csv"].decode())))
    missing = [root / row["audio"] for row in pairs if not (root / row["audio"]).is_file()]
    if missing:
        raise _missing_error(missing, where)
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update(raw[name])
    return raw, pairs, h


def _read_images(root: Path, raw: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-5k ``[5000, 28, 28]`` in [0, 1], its labels and the split of each row."""
    pixels = np.loadtxt(io.BytesIO(gzip.decompress(raw["mnist_5k.csv.gz"])), delimiter=",")
    pixels = pixels.astype(np.int64)
    if pixels.shape != (5000, 785):
        raise ValueError(
            f"{root / 'mnist_5k.csv.gz'} has shape {pixels.shape}; expected (5000, 785)."
        )
    images = (pixels[:, :784].reshape(-1, 28, 28) / 255.0).astype(np.float32)
    image_label = pixels[:, 784]
    split_rows = list(csv.DictReader(io.StringIO(raw["mnist_5k_split.csv"].decode())))
    image_split = np.empty(5000, dtype=object)
    for row in split_rows:
        r = int(row["row"])
        if int(row["label"]) != image_label[r]:
            raise ValueError(f"mnist_5k_split.csv row {r}: label disagrees with mnist_5k.csv.gz.")
        image_split[r] = row["split"]
    if any(s not in SPLITS for s in image_split):
        raise ValueError("mnist_5k_split.csv does not give every row a split in train/valid/test.")
    return images, image_label, image_split


def _read_clips(root: Path, pairs: list[dict[str, str]], h: Any, verify: bool) -> dict[str, bytes]:
    """The clips' bytes by path relative to ``root`` (added to the digest ``h``), checked
    against the recordings' manifest."""
    clips = {}
    for row in pairs:
        rel = str((root / row["audio"]).relative_to(root))
        clips[rel] = (root / rel).read_bytes()
        h.update(rel.encode())
        h.update(clips[rel])
    if verify:
        check_recordings(root, {rel: hashlib.sha256(b).hexdigest() for rel, b in clips.items()})
    return clips


def _mfccs(
    root: Path, pairs: list[dict[str, str]], clips: dict[str, bytes], frames: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per clip (``pairs.csv`` order): resampled frames ``[N, frames, 20]``, mean + sd
    ``[N, 40]`` and the true ``[n_i, 20]`` frames, all raw (not yet z-scored)."""
    from scipy.io import wavfile

    seqs, stats, raw_frames = [], [], []
    for row in pairs:
        path = root / row["audio"]
        rate, signal = wavfile.read(io.BytesIO(clips[str(path.relative_to(root))]))
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: sample rate {rate}; expected {SAMPLE_RATE}.")
        seq, st, coeffs = _features(signal, frames)
        seqs.append(seq)
        stats.append(st)
        raw_frames.append(coeffs)
    return np.stack(seqs), np.stack(stats), raw_frames


def _check_pairs(
    pairs: list[dict[str, str]], image_label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each clip's digit, speaker, split and paired image row, after checking the speakers'
    splits and that every pair shares its digit."""
    audio_label = np.array([int(r["digit"]) for r in pairs], dtype=np.int64)
    speaker = np.array([r["speaker"] for r in pairs])
    audio_split = np.array([r["split"] for r in pairs])
    for s, sp in zip(speaker, audio_split, strict=True):
        if SPEAKERS.get(s) != sp:
            raise ValueError(
                f"pairs.csv puts speaker {s!r} in {sp!r}; the protocol says {SPEAKERS.get(s)!r}."
            )
    pair_image = np.array([int(r["image_row"]) for r in pairs], dtype=np.int64)
    if not (image_label[pair_image] == audio_label).all():
        raise ValueError("pairs.csv pairs a clip with an image of another digit.")
    return audio_label, speaker, audio_split, pair_image


#: leave-one-speaker-out: held-out (test) speaker -> validation speaker (the next one, cyclic)
LOSO_VALID = {
    "george": "jackson",
    "jackson": "lucas",
    "lucas": "nicolas",
    "nicolas": "theo",
    "theo": "yweweler",
    "yweweler": "george",
}


def held_out_speaker(data: AvDigits, speaker: str) -> AvDigits:
    """A copy of ``data`` for one leave-one-speaker-out fold: ``speaker``'s clips are the test
    clips, ``LOSO_VALID[speaker]``'s the validation clips, the other four speakers' the train
    clips; audio re-standardised with the new train clips. Images keep their splits, so retrieval
    still queries the 1,000 test images; ``pair_image`` keeps the original fixed pairs, which pair
    the clips of four speakers with *training* images: train the fold with :func:`redraw_pairs`
    and evaluate against the image splits (retrieval), never on ``pair_image`` (classification
    uses the ``loso`` protocol of :func:`av_digits`, whose images are partitioned by speaker)."""
    _check_speaker(speaker)
    split = np.full(len(data.audio_speaker), "train", dtype=data.audio_split.dtype)
    split[data.audio_speaker == speaker] = "test"
    split[data.audio_speaker == LOSO_VALID[speaker]] = "valid"
    return replace(_restandardised(data, split == "train"), audio_split=split)


def _check_speaker(speaker: str) -> None:
    if speaker not in LOSO_VALID:
        from pgm_plugins.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(
            f"unknown speaker {speaker!r}; valid: {', '.join(LOSO_VALID)}."
            + did_you_mean(speaker, LOSO_VALID)
        )


def _restandardised(data: AvDigits, rows: np.ndarray) -> AvDigits:
    """``data`` with the audio z-scored on the clips ``rows`` (a mask or indices) instead."""
    norm = data.audio_norm
    stats = data.audio_stats * norm["stats_sd"] + norm["stats_mean"]
    seq = data.audio_frames * norm["frames_sd"] + norm["frames_mean"]
    s_mean, s_sd = stats[rows].mean(0), stats[rows].std(0) + 1e-6
    f_mean, f_sd = seq[rows].mean((0, 1)), seq[rows].std((0, 1)) + 1e-6
    return replace(
        data,
        audio_stats=((stats - s_mean) / s_sd).astype(np.float32),
        audio_frames=((seq - f_mean) / f_sd).astype(np.float32),
        audio_norm={
            "stats_mean": s_mean,
            "stats_sd": s_sd,
            "frames_mean": f_mean,
            "frames_sd": f_sd,
        },
    )


#: seed of the ``loso`` protocol's image groups (the README's split and pair seeds are 0 and 1)
LOSO_IMAGE_SEED = 2


def loso_pairs(data: AvDigits) -> tuple[np.ndarray, np.ndarray]:
    """The ``loso`` protocol's images: (``[5000]`` speaker group of each MNIST-5k row, ``[3000]``
    fixed image row of each clip).

    ``rng = numpy.random.default_rng(LOSO_IMAGE_SEED)``; for digit 0, 1, ..., 9 in that order,
    ``rng.permutation`` of that digit's 500 rows (ascending), cut by ``numpy.array_split`` into six
    consecutive groups given to the speakers in :data:`LOSO_VALID` order (george, jackson, lucas,
    nicolas, theo, yweweler: 84, 84, 83, 83, 83, 83 images); then each speaker's 50 clips of the
    digit, in file-name order, get the first 50 images of its group in that order. The MNIST-5k
    60/20/20 split is not used: every image belongs to one speaker, so an image is a training
    image of exactly the folds in which its speaker trains.
    """
    speakers = tuple(LOSO_VALID)
    rng = np.random.default_rng(LOSO_IMAGE_SEED)
    group = np.full(len(data.image_label), "", dtype=data.audio_speaker.dtype)
    pair = np.full(len(data.audio_label), -1, dtype=np.int64)
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(data.image_label == digit))
        for speaker, chunk in zip(speakers, np.array_split(rows, len(speakers)), strict=True):
            group[chunk] = speaker
            clips = np.flatnonzero((data.audio_label == digit) & (data.audio_speaker == speaker))
            clips = clips[np.argsort(data.audio_path[clips], kind="stable")]
            if len(clips) > len(chunk):
                raise ValueError(
                    f"av-digits loso: speaker {speaker} has {len(clips)} clips of digit {digit} "
                    f"and only {len(chunk)} images in its group."
                )
            pair[clips] = chunk[: len(clips)]
    return group, pair


def redraw_pairs(data: AvDigits, split: str, rng: np.random.Generator) -> np.ndarray:
    """A fresh label-level pairing of ``split``: for each clip (in ``data.clips(split)`` order), an
    image row of the same split and digit, without repetition while the digit's images last."""
    clips = data.clips(split)
    rows = data.image_rows(split)
    return _draw_within_digit(
        data.audio_label[clips], rows, data.image_label[rows], rng, f"split {split!r}"
    )


def _draw_within_digit(
    labels: np.ndarray,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    rng: np.random.Generator,
    what: str,
) -> np.ndarray:
    """For each label, an element of ``pool`` with that label, without repetition while the
    label's pool lasts (one ``rng.permutation`` per pass over it, labels in ascending order)."""
    out = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        c = np.flatnonzero(labels == digit)
        candidates = pool[pool_labels == digit]
        if len(candidates) == 0:
            raise ValueError(f"{what} has clips of digit {digit} but no images of it.")
        reps = -(-len(c) // len(candidates))
        draw = np.concatenate([rng.permutation(candidates) for _ in range(reps)])[: len(c)]
        out[c] = draw
    return out


def retrieval_metrics(
    query: np.ndarray, query_label: np.ndarray, gallery: np.ndarray, gallery_label: np.ndarray
) -> dict[str, float]:
    """Label-level retrieval (relevant = same digit) by cosine similarity: P@1, P@10, mAP.

    ``query`` ``[Q, d]``, ``gallery`` ``[G, d]``; ties in similarity are broken by gallery order.
    """
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    sim = q @ g.T
    order = np.argsort(-sim, axis=1, kind="stable")
    rel = gallery_label[order] == query_label[:, None]
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    n_rel = rel.sum(1)
    ap = np.where(n_rel > 0, (rel * hits / ranks).sum(1) / np.maximum(n_rel, 1), 0.0)
    k = min(10, rel.shape[1])
    return {
        "p@1": float(rel[:, 0].mean()),
        "p@10": float(rel[:, :k].mean()),
        "map": float(ap.mean()),
    }


# ---------------------------------------------------------------------- the factory
_AV_CACHE: dict[tuple[str, int, bool, tuple[int, ...]], AvDigits] = {}


def _av_loaded(data_dir: str | None, frames: int, verify: bool) -> AvDigits:
    """:func:`load`, kept for the process (the MFCCs of 3,000 clips take seconds): keyed by
    folder, ``frames``, ``verify`` and the files' mtimes."""
    root = locate_data(data_dir).path / DATASET
    stamp = tuple((root / f).stat().st_mtime_ns if (root / f).is_file() else -1 for f in FILES)
    key = (str(root.resolve()), frames, verify, stamp)
    if key not in _AV_CACHE:
        _AV_CACHE.clear()
        _AV_CACHE[key] = load(data_dir, frames=frames, verify=verify)
    return _AV_CACHE[key]


def av_digits(
    protocol: str | None = None,
    data_dir: str | None = None,
    held_out: str | None = None,
    frames: int | None = 32,
    audio_stats: bool = False,
    redraw: bool = True,
    verify: bool = True,
) -> BenchData:
    """Spoken (FSDD) x handwritten (MNIST-5k) digits, one row per clip and its fixed image pair:
    ``image [3000, 784]`` (pixels / 255), ``audio [3000, frames, 20]`` MFCC
    frames resampled to ``frames`` steps (``lengths["audio"]`` = ``frames``: every step is real
    after resampling; the true frame count is ``extras["frame_count"]``), or with
    ``frames=None`` the true frames ``[3000, 227, 20]`` zero-padded at the end with
    ``lengths["audio"]`` their counts (13-228), optionally
    ``audio_stats [3000, 40]`` (per-clip MFCC mean + sd). Labels: the digit (10 classes).

    Protocol ``speaker`` (the default): train george, jackson, nicolas, yweweler; valid lucas;
    test theo; images split 60/20/20 and paired as in ``pairs.csv`` (the README's protocol).

    Protocol ``loso`` (leave one speaker out): six folds, fold k in :data:`LOSO_VALID` order
    (george, jackson, lucas, nicolas, theo, yweweler): speaker k tests, ``LOSO_VALID[k]``
    validates, the other four train. The images are partitioned among the six speakers within
    digit (:func:`loso_pairs`) and every clip is paired with an image of its own speaker's group,
    so no fold tests or validates on an image it trains on (the ``speaker`` protocol's pairs
    cannot do that: four speakers' clips are paired with training images). The rows ``x`` are the
    same in every fold (audio z-scored on all 3,000 clips: an affine map per coefficient, which
    the runner's per-fold standardisation on the training rows replaces). ``held_out=<speaker>``
    gives that speaker's fold alone (protocol ``loso``; the ``speaker`` protocol has no
    ``held_out``). ``extras["image_group"]`` is the speaker group of each MNIST-5k row.

    ``redraw`` (default on): :attr:`BenchData.redraw` re-draws the training images within digit
    every epoch; valid and test keep the fixed pairs. Under ``speaker`` it draws from the training
    images of the split; under ``loso`` from the groups of the speakers of the rows it is given
    (the fold's training rows: its four training speakers). ``groups`` = speaker.
    """
    proto = check_protocol("av-digits", protocol, PROTOCOLS) if held_out is None else "loso"
    if held_out is not None:
        if protocol not in (None, "loso"):
            raise ConfigError(
                f"av-digits: held_out={held_out!r} is a fold of protocol 'loso'; protocol "
                f"{protocol!r} has no held-out speaker. Give protocol='loso' (or none) with "
                "held_out, or leave held_out out."
            )
        _check_speaker(held_out)
    if frames is not None and frames < 1:
        raise ConfigError(f"av-digits: frames must be >= 1 or None (true frames), got {frames}.")
    data = _av_loaded(data_dir, frames or 32, verify)
    if proto == "loso":
        return _loso(data, held_out, frames, audio_stats, redraw)
    train, valid, test = (data.clips(s) for s in ("train", "valid", "test"))
    flat = data.images.reshape(len(data.images), -1)
    x, audio_len = _inputs(data, flat, data.pair_image, train, frames, audio_stats)
    return BenchData(
        name="av-digits",
        protocol=proto,
        description=(
            "FSDD spoken digits x MNIST-5k images, label-level pairs, split by speaker "
            "(test theo, valid lucas); 3,000 clips with their fixed image pairs"
        ),
        x=x,
        lengths={"audio": audio_len},
        y=data.audio_label,
        task="classification",
        num_classes=10,
        folds=fixed_folds(train, valid, test),
        digest=sha256_of(data.digest, f"held_out=None;frames={frames}"),
        primary="acc",
        groups=data.audio_speaker,
        changes=(
            "pairs share only the digit (no instance-level correspondence)",
            _frames_text(frames) + "; audio z-scored with the train clips",
            *(("training image pairs re-drawn within digit every epoch",) if redraw else ()),
        ),
        extras={
            "speaker": data.audio_speaker,
            "image_row": data.pair_image,
            "frame_count": data.audio_frame_count,
        },
        redraw=_image_redraw(data, flat, train) if redraw else None,
    )


#: protocols of :func:`av_digits` (the first is the default)
PROTOCOLS = ("speaker", "loso")


def _frames_text(frames: int | None) -> str:
    if frames:
        return f"MFCC frames resampled to {frames} steps"
    return "MFCC frames at their true length, zero-padded at the end"


def _inputs(
    data: AvDigits,
    flat: np.ndarray,
    pair: np.ndarray,
    norm_rows: np.ndarray,
    frames: int | None,
    audio_stats: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``x`` (images of the pairs ``pair``, audio; true frames z-scored on ``norm_rows``) and
    the audio lengths."""
    if frames is None:
        audio, audio_len = _true_frames(data.audio_raw, norm_rows)
    else:
        n = len(data.audio_label)
        audio, audio_len = data.audio_frames.copy(), np.full(n, frames, dtype=np.int64)
    x = {"image": flat[pair], "audio": audio}
    if audio_stats:
        x["audio_stats"] = data.audio_stats.copy()
    return x, audio_len


def _loso(
    data: AvDigits, held_out: str | None, frames: int | None, audio_stats: bool, redraw: bool
) -> BenchData:
    """The ``loso`` protocol of :func:`av_digits` (every fold, or ``held_out``'s alone)."""
    every = np.arange(len(data.audio_label))
    data = _restandardised(data, every)
    group, pair = loso_pairs(data)
    flat = data.images.reshape(len(data.images), -1)
    x, audio_len = _inputs(data, flat, pair, every, frames, audio_stats)
    speakers = [held_out] if held_out else list(LOSO_VALID)
    split_text = f"held-out speaker {held_out}" if held_out else "each speaker tests in turn"
    assignment = sha256_of(group.astype("U").tobytes(), pair.astype("<i8").tobytes())
    return BenchData(
        name="av-digits",
        protocol="loso",
        description=(
            f"FSDD spoken digits x MNIST-5k images, label-level pairs, leave one speaker out "
            f"({split_text}; the next speaker validates); 3,000 clips, each paired with an "
            "image of its own speaker's image group"
        ),
        x=x,
        lengths={"audio": audio_len},
        y=data.audio_label,
        task="classification",
        num_classes=10,
        folds=_speaker_folds(data, speakers),
        digest=sha256_of(
            data.digest,
            f"protocol=loso;images={assignment};held_out={held_out};frames={frames}",
        ),
        primary="acc",
        groups=data.audio_speaker,
        changes=(
            "pairs share only the digit (no instance-level correspondence)",
            _frames_text(frames) + "; audio z-scored with all 3,000 clips (the runner "
            "standardises each fold on its training rows)",
            f"MNIST-5k partitioned among the six speakers within digit (seed {LOSO_IMAGE_SEED}; "
            "83-84 images per speaker and digit), each clip paired with an image of its "
            "speaker's group: no fold tests or validates on its training images",
            *(
                (
                    "training image pairs re-drawn every epoch within digit from the training "
                    "speakers' image groups",
                )
                if redraw
                else ()
            ),
            *((f"leave-one-speaker-out: {held_out} tests",) if held_out else ()),
        ),
        extras={
            "speaker": data.audio_speaker,
            "image_row": pair,
            "image_group": group,
            "frame_count": data.audio_frame_count,
        },
        redraw=_group_redraw(data, flat, group) if redraw else None,
    )


def _speaker_folds(data: AvDigits, speakers: list[str]) -> Callable[[int], list[Fold]]:
    """One fold per test speaker (the same for every seed): ``LOSO_VALID`` of it validates."""
    fixed = []
    for k, speaker in enumerate(speakers):
        valid = LOSO_VALID[speaker]
        fixed.append(
            Fold(
                train=np.flatnonzero(~np.isin(data.audio_speaker, [speaker, valid])),
                valid=np.flatnonzero(data.audio_speaker == valid),
                test=np.flatnonzero(data.audio_speaker == speaker),
                fold=k,
            )
        )

    def folds(seed: int) -> list[Fold]:
        return [replace(f, seed=seed) for f in fixed]

    return folds


def _group_redraw(
    data: AvDigits, flat: np.ndarray, group: np.ndarray
) -> Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]:
    """:attr:`BenchData.redraw` of the ``loso`` protocol: for the given (training) rows, fresh
    images within digit from the image groups of those rows' speakers only."""

    def redraw_images(rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        pool = np.flatnonzero(np.isin(group, np.unique(data.audio_speaker[rows])))
        drawn = _draw_within_digit(
            data.audio_label[rows], pool, data.image_label[pool], rng, "av-digits redraw"
        )
        return {"image": flat[drawn]}

    return redraw_images


def _image_redraw(
    data: AvDigits, flat: np.ndarray, train: np.ndarray
) -> Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]:
    """:attr:`BenchData.redraw` of av-digits: fresh training images within digit
    (:func:`redraw_pairs`) for the given training rows; other rows are refused."""
    train_pos = np.full(len(data.audio_label), -1, dtype=np.int64)
    train_pos[train] = np.arange(len(train))

    def redraw_images(rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = np.asarray(rows)
        bad = rows[train_pos[rows] < 0] if len(rows) else rows
        if len(bad):
            raise ValueError(
                f"av-digits redraw: rows {bad[:5].tolist()} are not training clips; re-drawing "
                "applies to the training rows of the fold only."
            )
        pairs = redraw_pairs(data, "train", rng)
        return {"image": flat[pairs[train_pos[rows]]]}

    return redraw_images


def _true_frames(raw: list[np.ndarray], train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, T_max, 20]`` true MFCC frames, z-scored with the training clips' frames, zero after
    each clip's end, and ``[N]`` frame counts."""
    lengths = np.array([len(r) for r in raw], dtype=np.int64)
    pooled = np.concatenate([raw[i] for i in train])
    mean, sd = pooled.mean(0), pooled.std(0) + 1e-6
    out = np.zeros((len(raw), int(lengths.max()), raw[0].shape[1]), dtype=np.float32)
    for i, r in enumerate(raw):
        out[i, : len(r)] = (r - mean) / sd
    return out, lengths
