"""A tiny random BERT on disk, in place of ``bert-base-uncased`` for mmf's BERT-based models.

mmf builds its ``transformer`` text encoder with ``AutoModel.from_pretrained(bert_model_name)``,
so the encoder must exist as files. :func:`tiny_bert` writes one from a ``BertConfig`` (random
weights from a fixed seed, nothing downloaded) and returns the directory to use as
``bert_model_name``. The directory is named after a digest of the config and written atomically
(a temporary sibling renamed into place), so concurrent callers and reruns are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["TINY_BERT", "default_cache_dir", "tiny_bert"]

#: the tiny encoder's ``BertConfig`` fields (about 30 k parameters)
TINY_BERT: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "pad_token_id": 0,
}


def default_cache_dir() -> Path:
    """``$PGM_MMF_CACHE``, else ``$XDG_CACHE_HOME/pgm-mmf``, else ``~/.cache/pgm-mmf``."""
    if os.environ.get("PGM_MMF_CACHE"):
        return Path(os.environ["PGM_MMF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pgm-mmf"


def tiny_bert(directory: str | Path | None = None, seed: int = 0, **overrides: Any) -> Path:
    """Write (once) a random ``BertModel`` from ``TINY_BERT | overrides``; return its directory.

    Args:
        directory: parent folder; default :func:`default_cache_dir`.
        seed: seed of the random weights (the caller's RNG state is left as it was).
        overrides: ``BertConfig`` fields replacing those of :data:`TINY_BERT`.
    """
    import torch
    from transformers import BertConfig, BertModel

    fields = TINY_BERT | overrides
    try:
        config = BertConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"tiny_bert: invalid BertConfig fields {overrides}: {exc}. Defaults: {TINY_BERT}."
        ) from exc
    digest = hashlib.sha256(
        json.dumps({"fields": fields, "seed": seed}, sort_keys=True).encode()
    ).hexdigest()[:12]
    parent = Path(directory) if directory is not None else default_cache_dir()
    target = parent / f"tiny-bert-{digest}"
    if (target / "config.json").is_file():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            BertModel(config, add_pooling_layer=True).save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: its copy is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
