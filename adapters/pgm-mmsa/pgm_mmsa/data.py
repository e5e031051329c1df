"""MOSI utterance features as inputs of the MMSA hosts.

The files are read by the core's one MOSI loader (:func:`pgm_plugins.bench.data.mosi.load_clean`
/ :func:`~pgm_plugins.bench.data.mosi.load_standard`: the data folder from ``path``,
``$PGM_DATA_DIR`` or the user cache, every file checked against its SHA-256); this module turns
them into what the hosts take. The **clean** protocol of the data README: only the 752
utterances of the release's test file (31 videos, features no extractor was trained on), folds
grouped by video. Labels are binary; the hosts run as regression on +-1 (1 = positive,
-1 = negative). A sample is a context window of the target utterance and up to ``window - 1``
preceding utterances of the same video, ordered for the host
(:data:`pgm_mmsa.hosts.WINDOW_ORDER`). The standard protocol's MiniLM token text is the core's
:func:`~pgm_plugins.bench.data.minilm.minilm_tokens`, re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgm_mmsa.hosts import DATA_WIDTHS, WINDOW_ORDER, host_inputs
from pgm_plugins.bench.data import mosi
from pgm_plugins.bench.data.minilm import MINILM_WIDTH, minilm_tokens

__all__ = [
    "MINILM_WIDTH",
    "MosiTokens",
    "MosiUtterances",
    "check_widths",
    "context_windows",
    "load_clean",
    "load_standard",
    "minilm_tokens",
    "video_folds",
]


def check_widths(host: Mapping[str, int], data: Mapping[str, int]) -> None:
    """Raise when a host built for some feature widths is fed data of other widths."""
    bad = [m for m in data if host.get(m) != data[m]]
    if bad:
        raise ValueError(
            "the host's feature widths do not match the data: "
            + ", ".join(f"{m}: host {host.get(m)}, data {data[m]}" for m in bad)
            + f". Build the host with widths={dict(data)} (pgm_mmsa.build_host(kind, widths=...))."
        )


def context_windows(videos: Sequence[Any], positions: Sequence[Any], window: int) -> np.ndarray:
    """``[N, window]`` row indices of each utterance's window of neighbouring utterances of the
    same video, target last, -1 where the video has no earlier utterance."""
    order: dict[Any, list[tuple[int, int]]] = {}
    for i, (v, p) in enumerate(zip(list(videos), list(positions), strict=True)):
        order.setdefault(v, []).append((int(p), i))
    ctx = np.full((len(videos), window), -1, dtype=np.int64)
    for rows in order.values():
        rows.sort()
        ids = [i for _, i in rows]
        for k, i in enumerate(ids):
            prev = ids[max(0, k - window + 1) : k + 1]
            ctx[i, window - len(prev) :] = prev
    return ctx


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
        return context_windows(self.videos, self.positions, window)

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


def load_clean(path: str | os.PathLike[str] | None = None, verify: bool = True) -> MosiUtterances:
    """The 752 utterances of the release's test file, read by
    :func:`pgm_plugins.bench.data.mosi.load_clean` (``path``: the data folder; a missing or
    modified file raises naming it, where it looked and how to fix it)."""
    clean = mosi.load_clean(path, verify=verify)
    data = MosiUtterances(
        clean.x["text"],
        clean.x["audio"],
        clean.x["video"],
        np.where(clean.y > 0, 1.0, -1.0),
        [str(v) for v in clean.video],
        clean.position,
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


# ---------------------------------------------------------------------- standard protocol
@dataclass
class MosiTokens:
    """The standard protocol: every utterance, SDK folds, MiniLM token text and release audio.

    The data README rules out the release's video features with these folds, so the hosts get
    no vision: a constant zero input of width 1 (``vision`` width 1), recorded here so reports
    say so. Audio (one vector per utterance) is repeated over the token positions.
    """

    tokens: Tensor  #: [N, L, 384]
    lengths: Tensor  #: [N] real tokens, at the front
    audio: np.ndarray  #: [N, 73]
    labels: np.ndarray  #: [N], +-1
    folds: dict[str, np.ndarray]  #: train / valid / test row indices

    @property
    def widths(self) -> dict[str, int]:
        return {"text": self.tokens.shape[2], "audio": self.audio.shape[1], "vision": 1}

    def batch(
        self,
        kind: str,
        index: Sequence[int],
        audio_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[tuple[Any, ...], Tensor]:
        idx = torch.as_tensor(np.asarray(index))
        text, lengths = self.tokens[idx], self.lengths[idx]
        n = text.shape[1]
        if WINDOW_ORDER[kind] == "last":  # real tokens at the end
            shift = (n - lengths).tolist()
            text = torch.stack([torch.roll(t, s, dims=0) for t, s in zip(text, shift, strict=True)])
        a = self.audio[idx.numpy()]
        if audio_stats is not None:
            a = (a - audio_stats[0]) / audio_stats[1]
        audio = torch.from_numpy(a.astype(np.float32))[:, None, :].expand(-1, n, -1).contiguous()
        vision = torch.zeros(len(idx), n, 1)
        inputs = host_inputs(kind, text, audio, vision, lengths)
        return inputs, torch.from_numpy(self.labels[idx.numpy()].astype(np.float32))


def load_standard(
    path: str | os.PathLike[str] | None = None,
    max_len: int = 40,
    cache: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> MosiTokens:
    """All 2,199 utterances with the SDK's standard folds (1,284 / 229 / 686), read by
    :func:`pgm_plugins.bench.data.mosi.load_standard`; the transcripts through
    :func:`minilm_tokens` (cached under ``cache``)."""
    std = mosi.load_standard(path, verify=verify)
    tokens, lengths = minilm_tokens(std.transcript, max_len, cache)
    labels = np.where(std.y > 0, 1.0, -1.0)
    return MosiTokens(tokens, lengths, std.audio, labels, dict(std.folds))
