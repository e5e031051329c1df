"""av-digits: spoken digits (FSDD) x handwritten digits (MNIST-5k), label-level pairs.

The protocol is the one of ``$PGM_DATA_DIR/av-digits/README.md``: audio split by speaker (train:
george, jackson, nicolas, yweweler; valid: lucas; test: theo), MNIST-5k split by
``mnist_5k_split.csv``, the fixed pairs of ``pairs.csv`` for evaluation. A pair shares only its
digit: there is no instance-level correspondence between the modalities, so training may re-draw
the pairs within split and digit every epoch (:func:`redraw_pairs`), and retrieval relevance is
"same digit" (:func:`retrieval_metrics`: P@1, P@10, mAP).

Audio features are the README's MFCCs (``python_speech_features.mfcc``, 20 coefficients, 25 ms
windows every 10 ms, c0 replaced by the log frame energy), given two ways: the per-clip mean and
standard deviation of each coefficient (40 numbers, the README's reference features) and the frame
sequence resampled to a fixed number of frames (``[T, 20]``, linear interpolation in time, plus the
clip's true frame count). Both are z-scored with the statistics of the 2,000 train clips.

Cite FSDD (Jackson et al., CC BY-SA 4.0) and MNIST (LeCun, Cortes, Burges) when reporting numbers.
The data are read from ``data_dir`` or ``$PGM_DATA_DIR`` (default ``../shared/data`` next to the
repository), never copied into the repository.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "DATASET",
    "EXPECTED_SHA256",
    "FILES",
    "RECORDINGS_SHA256",
    "SPEAKERS",
    "AvDigits",
    "audio_features",
    "check_recordings",
    "data_root",
    "held_out_speaker",
    "load",
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


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``av-digits/``: ``data_dir``, else ``$PGM_DATA_DIR``, else
    ``../shared/data`` relative to the repository."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("PGM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


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


def _missing_error(missing: list[Path], root: Path, data_dir: object) -> FileNotFoundError:
    shown = ", ".join(str(p) for p in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return FileNotFoundError(
        f"av-digits: {len(missing)} file(s) not found: {shown}{more} (looked in {root}; "
        f"data_dir={data_dir!r}, PGM_DATA_DIR={os.environ.get('PGM_DATA_DIR')!r}). Point "
        f"--data-dir or PGM_DATA_DIR at the folder that holds '{DATASET}/' (its README and "
        f"SHA256SUMS describe the expected files)."
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
    from pgm_plugins.bench.download import DigestError, sha256_bytes

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
    from scipy.io import wavfile

    root = data_root(data_dir) / DATASET
    paths = {name: root / name for name in FILES}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise _missing_error(missing, root, data_dir)
    raw = {name: paths[name].read_bytes() for name in FILES}
    if verify:
        from pgm_plugins.bench.download import verify_bytes

        for name in FILES:
            verify_bytes(paths[name], raw[name], EXPECTED_SHA256.get(name))
    pairs = list(csv.DictReader(io.StringIO(raw["pairs.csv"].decode())))
    wavs = [root / row["audio"] for row in pairs]
    missing = [p for p in wavs if not p.is_file()]
    if missing:
        raise _missing_error(missing, root, data_dir)

    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update(raw[name])

    pixels = np.loadtxt(io.BytesIO(gzip.decompress(raw["mnist_5k.csv.gz"])), delimiter=",")
    pixels = pixels.astype(np.int64)
    if pixels.shape != (5000, 785):
        raise ValueError(
            f"{paths['mnist_5k.csv.gz']} has shape {pixels.shape}; expected (5000, 785)."
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

    clips = {}
    for path in wavs:
        rel = str(path.relative_to(root))
        clips[rel] = path.read_bytes()
        h.update(rel.encode())
        h.update(clips[rel])
    if verify:
        check_recordings(root, {rel: hashlib.sha256(b).hexdigest() for rel, b in clips.items()})
    seqs, stats, counts = [], [], []
    raw_frames: list[np.ndarray] = []
    for path in wavs:
        rate, signal = wavfile.read(io.BytesIO(clips[str(path.relative_to(root))]))
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: sample rate {rate}; expected {SAMPLE_RATE}.")
        seq, st, coeffs = _features(signal, frames)
        seqs.append(seq)
        stats.append(st)
        counts.append(coeffs.shape[0])
        raw_frames.append(coeffs)
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

    stats_a, seq_a = np.stack(stats), np.stack(seqs)
    train = audio_split == "train"
    s_mean, s_sd = stats_a[train].mean(0), stats_a[train].std(0) + 1e-6
    f_mean, f_sd = seq_a[train].mean((0, 1)), seq_a[train].std((0, 1)) + 1e-6
    return AvDigits(
        images=images,
        image_label=image_label,
        image_split=image_split.astype(str),
        audio_stats=((stats_a - s_mean) / s_sd).astype(np.float32),
        audio_frames=((seq_a - f_mean) / f_sd).astype(np.float32),
        audio_frame_count=np.array(counts, dtype=np.int64),
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
    still queries the 1,000 test images; ``pair_image`` keeps the original fixed pairs (train the
    fold with :func:`redraw_pairs`)."""
    if speaker not in LOSO_VALID:
        from pgm_plugins.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(
            f"unknown speaker {speaker!r}; valid: {', '.join(LOSO_VALID)}."
            + did_you_mean(speaker, LOSO_VALID)
        )
    norm = data.audio_norm
    stats = data.audio_stats * norm["stats_sd"] + norm["stats_mean"]
    seq = data.audio_frames * norm["frames_sd"] + norm["frames_mean"]
    split = np.full(len(data.audio_speaker), "train", dtype=data.audio_split.dtype)
    split[data.audio_speaker == speaker] = "test"
    split[data.audio_speaker == LOSO_VALID[speaker]] = "valid"
    train = split == "train"
    s_mean, s_sd = stats[train].mean(0), stats[train].std(0) + 1e-6
    f_mean, f_sd = seq[train].mean((0, 1)), seq[train].std((0, 1)) + 1e-6
    return replace(
        data,
        audio_stats=((stats - s_mean) / s_sd).astype(np.float32),
        audio_frames=((seq - f_mean) / f_sd).astype(np.float32),
        audio_split=split,
        audio_norm={
            "stats_mean": s_mean,
            "stats_sd": s_sd,
            "frames_mean": f_mean,
            "frames_sd": f_sd,
        },
    )


def redraw_pairs(data: AvDigits, split: str, rng: np.random.Generator) -> np.ndarray:
    """A fresh label-level pairing of ``split``: for each clip (in ``data.clips(split)`` order), an
    image row of the same split and digit, without repetition while the digit's images last."""
    clips = data.clips(split)
    rows = data.image_rows(split)
    out = np.empty(len(clips), dtype=np.int64)
    for digit in np.unique(data.audio_label[clips]):
        c = np.flatnonzero(data.audio_label[clips] == digit)
        pool = rows[data.image_label[rows] == digit]
        if len(pool) == 0:
            raise ValueError(f"split {split!r} has clips of digit {digit} but no images of it.")
        reps = -(-len(c) // len(pool))
        draw = np.concatenate([rng.permutation(pool) for _ in range(reps)])[: len(c)]
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
