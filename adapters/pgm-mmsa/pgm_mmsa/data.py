"""MOSI utterance features (``$PGM_DATA_DIR/mosi-utterance``) as inputs of the MMSA hosts.

The **clean** protocol of that folder's README: only the 752 utterances of the release's test
file (31 videos, features no extractor was trained on), folds grouped by video. Labels are
binary; the hosts run as regression on +-1 (1 = positive, -1 = negative). A sample is a
context window of the target utterance and up to ``window - 1`` preceding utterances of the same
video, ordered for the host (:data:`pgm_mmsa.hosts.WINDOW_ORDER`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgm_mmsa.hosts import DATA_WIDTHS, WINDOW_ORDER, host_inputs

__all__ = ["MosiUtterances", "check_widths", "data_dir", "load_clean", "video_folds"]

FOLDER = "mosi-utterance"


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``path``, else ``$PGM_DATA_DIR``, else ``../shared/data`` beside the repo."""
    if path is not None:
        return Path(path)
    env = os.environ.get("PGM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def check_widths(host: Mapping[str, int], data: Mapping[str, int]) -> None:
    """Raise when a host built for some feature widths is fed data of other widths."""
    bad = [m for m in data if host.get(m) != data[m]]
    if bad:
        raise ValueError(
            "the host's feature widths do not match the data: "
            + ", ".join(f"{m}: host {host.get(m)}, data {data[m]}" for m in bad)
            + f". Build the host with widths={dict(data)} (pgm_mmsa.build_host(kind, widths=...))."
        )


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return [row for row in csv.reader(f) if row]


@dataclass
class MosiUtterances:
    """The clean protocol's utterances, in the release's test-file order."""

    text: np.ndarray  #: [N, 100]
    audio: np.ndarray  #: [N, 73]
    vision: np.ndarray  #: [N, 100]
    labels: np.ndarray  #: [N], +-1
    videos: list[str]
    positions: np.ndarray  #: utterance number within its video

    @property
    def widths(self) -> dict[str, int]:
        return {
            "text": self.text.shape[1],
            "audio": self.audio.shape[1],
            "vision": self.vision.shape[1],
        }

    def __len__(self) -> int:
        return len(self.labels)

    def standardizer(self, train: Sequence[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-feature mean and std of the training rows (the openSMILE-style audio features
        span orders of magnitude)."""
        idx = np.asarray(train)
        out = {}
        for m in ("text", "audio", "vision"):
            x = getattr(self, m)[idx]
            out[m] = (x.mean(0), x.std(0) + 1e-6)
        return out

    def _context(self, window: int) -> np.ndarray:
        """``[N, window]`` row indices of each window, target last, -1 where the video has no
        earlier utterance."""
        order = {}
        for i, (v, p) in enumerate(zip(self.videos, self.positions, strict=True)):
            order.setdefault(v, []).append((int(p), i))
        ctx = np.full((len(self), window), -1, dtype=np.int64)
        for rows in order.values():
            rows.sort()
            ids = [i for _, i in rows]
            for k, i in enumerate(ids):
                prev = ids[max(0, k - window + 1) : k + 1]
                ctx[i, window - len(prev) :] = prev
        return ctx

    def batch(
        self,
        kind: str,
        index: Sequence[int],
        window: int = 1,
        stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[tuple[Any, ...], Tensor]:
        """Host inputs and ``[B]`` +-1 labels for the rows ``index``."""
        idx = np.asarray(index)
        ctx = self._context(window)[idx]  # target last, -1 = padding on the left
        lengths = (ctx >= 0).sum(1)
        if WINDOW_ORDER[kind] == "first":  # target first, earlier utterances after, pad right
            ctx = np.stack([np.concatenate([r[r >= 0][::-1], r[r < 0]]) for r in ctx])
        feats = {}
        for m in ("text", "audio", "vision"):
            x = getattr(self, m)
            if stats is not None:
                x = (x - stats[m][0]) / stats[m][1]
            padded = np.concatenate([x, np.zeros((1, x.shape[1]), x.dtype)])
            feats[m] = torch.from_numpy(padded[ctx].astype(np.float32))  # -1 -> the zero row
        inputs = host_inputs(
            kind, feats["text"], feats["audio"], feats["vision"], torch.from_numpy(lengths)
        )
        return inputs, torch.from_numpy(self.labels[idx].astype(np.float32))


def load_clean(path: str | os.PathLike[str] | None = None) -> MosiUtterances:
    """The 752 utterances of the release's test file; raises with what to do when absent."""
    root = data_dir(path) / FOLDER
    files = {
        "index": root / "text_test.csv",
        "transcripts": root / "transcripts.csv",
        "audio": root / "audio" / "audio_test0.csv",
        "vision": root / "video" / "video_test0.csv",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"MOSI utterance features not found: {', '.join(missing)}. Set PGM_DATA_DIR to the "
            f"folder that holds {FOLDER}/ (see its README)."
        )
    transcripts = _rows(files["transcripts"])
    text_rows = _rows(files["index"])
    ids = [transcripts[int(float(r[0]))][0] for r in text_rows]
    text = np.array([[float(v) for v in r[1:]] for r in text_rows], dtype=np.float32)
    audio_rows = _rows(files["audio"])
    vision_rows = _rows(files["vision"])
    audio = np.array([[float(v) for v in r[:-1]] for r in audio_rows], dtype=np.float32)
    vision = np.array([[float(v) for v in r[:-1]] for r in vision_rows], dtype=np.float32)
    labels = np.array([float(r[-1]) for r in audio_rows])
    if not (len(text) == len(audio) == len(vision)):
        raise ValueError(
            f"row counts differ: text {len(text)}, audio {len(audio)}, video {len(vision)}"
        )
    data = MosiUtterances(
        text,
        audio,
        vision,
        np.where(labels > 0, 1.0, -1.0),
        [i.rsplit("_", 1)[0] for i in ids],
        np.array([int(i.rsplit("_", 1)[1]) for i in ids]),
    )
    check_widths(DATA_WIDTHS, data.widths)
    return data


def video_folds(
    videos: Sequence[str], k: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) row splits with every video's utterances on one side."""
    names = sorted(set(videos))
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    fold_of = {v: i % k for i, v in enumerate(names)}
    f = np.array([fold_of[v] for v in videos])
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]
