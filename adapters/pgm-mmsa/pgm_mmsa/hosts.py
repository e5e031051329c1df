"""Host factories: MMSA's six models built offline from MMSA's own config, for given widths.

Every host is built by ``MMSA.get_config_regression(kind, "mosi")`` and ``MMSA.models.AMIO``,
with the changes this machine needs, each recorded in ``HostInfo.changes`` (and so in the host's
description and in every report that uses it):

- all six run as **regression on +-1** (``train_mode="regression"``, one output): the MOSI data
  here have binary labels only, Self-MM has no classification mode at all, and MMSA's metrics
  read the sign of a regression output as the binary label;
- ``feature_dims`` and ``seq_lens`` set to the given widths and window length;
- MulT: ``conv1d_kernel_size_* = 1`` for windows shorter than 5 (MMSA's kernel 5 with no padding
  cannot run on them);
- TFN, LMF: audio and vision are one vector per sample (``[B, 1, D]``, the masked mean of the
  window), as those models expect;
- MISA, Self-MM, MMIM: MMSA always builds a ``bert-base-uncased`` encoder, which cannot be loaded
  offline and cannot be fine-tuned on 2 CPU cores. It is replaced by :class:`DenseText`, one
  ``Linear(D, text_hidden)`` + GELU over dense text features (the release's 100-d text features,
  or frozen MiniLM token features, or BERT's 768-d outputs), which keeps MMSA's BERT input
  layout: ``[B, 3 + D, L]`` with rows 0-2 as MMSA's (token ids, attention mask, segment ids) and
  the features below them, so the hosts' own masking and packing by text length run unchanged.
  Self-MM's ``text_out``, MMIM's text width and MISA's ``project_t`` input follow
  ``text_hidden``.

Factories return the model in eval mode (dropout off) so that two forwards agree; train with
``model.train()`` (``HostTrainer`` does).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pgm_mmsa.adapters import KINDS, MODALITIES

__all__ = [
    "DATA_WIDTHS",
    "MOSI_WIDTHS",
    "PARTS",
    "WINDOW_ORDER",
    "DenseText",
    "HostInfo",
    "bert_layout",
    "build_host",
    "example_inputs",
    "host_info",
    "host_inputs",
    "host_parts",
    "import_mmsa",
]

#: MOSI's feature widths in MMSA's processed release (BERT text / COVAREP audio / Facet vision)
MOSI_WIDTHS = {"text": 768, "audio": 5, "vision": 20}
#: the widths of ``$PGM_DATA_DIR/mosi-utterance`` (text-CNN / openSMILE-style / 3D-CNN)
DATA_WIDTHS = {"text": 100, "audio": 73, "vision": 100}
#: where the target utterance sits in a context window: last (left padding) for hosts that read
#: the last step or an unpacked LSTM's final state, first (right padding) for hosts that pack by
#: length and take the text at position 0
WINDOW_ORDER = {
    "mult": "last",
    "tfn": "last",
    "lmf": "last",
    "misa": "first",
    "self_mm": "first",
    "mmim": "first",
}
TEXT_MODULE = {"misa": "bertmodel", "self_mm": "text_model", "mmim": "bertmodel"}

#: which of the network's parameters (name prefixes, relative to the MMSA network) belong to
#: which modality's encoder, which are modality-specific heads after the site, and the rest is
#: fusion (everything the modalities meet in)
PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "mult": {"text": ("proj_l",), "audio": ("proj_a",), "vision": ("proj_v",)},
    "misa": {
        "text": ("bertmodel.", "project_t.", "tlayer_norm."),
        "audio": ("arnn1.", "arnn2.", "alayer_norm.", "project_a."),
        "vision": ("vrnn1.", "vrnn2.", "vlayer_norm.", "project_v."),
    },
    "self_mm": {
        "text": ("text_model.",),
        "audio": ("audio_model.",),
        "vision": ("video_model.",),
        "heads": ("post_text_", "post_audio_", "post_video_"),
    },
    "tfn": {"text": ("text_subnet.",), "audio": ("audio_subnet.",), "vision": ("video_subnet.",)},
    "lmf": {"text": ("text_subnet.",), "audio": ("audio_subnet.",), "vision": ("video_subnet.",)},
    "mmim": {"text": ("bertmodel.",), "audio": ("acoustic_enc.",), "vision": ("visual_enc.",)},
}


def import_mmsa() -> Any:
    """``import MMSA`` (seconds; MMSA imports transformers), quietly."""
    import MMSA
    import MMSA.models

    return MMSA


@dataclass(frozen=True)
class HostInfo:
    """What a factory built: kind, widths, window, and every change to MMSA's model."""

    kind: str
    widths: dict[str, int]
    seq_len: int
    text_hidden: int | None
    changes: tuple[str, ...]
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  #: MMSA's config, as changed

    @property
    def description(self) -> str:
        w = ", ".join(f"{m} {d}" for m, d in self.widths.items())
        return (
            f"MMSA 2.2.1 {self.kind.upper()} ({w}; window {self.seq_len}); changes: "
            + "; ".join(self.changes)
        )


class DenseText(nn.Module):
    """In place of MMSA's ``BertTextEncoder``: a dense text module over MMSA's BERT input layout.

    Input ``[B, 3 + D, L]``: rows 0-2 as MMSA's BERT input (token ids, attention mask, segment
    ids: the hosts read the mask from row 1), rows ``3:`` the ``D`` features of each position.
    Output ``[B, L, out_features]``, as ``BertTextEncoder`` gives ``[B, L, 768]``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features)
        self.act = nn.GELU()

    def forward(self, text: Tensor) -> Tensor:
        if text.dim() != 3 or text.shape[1] != 3 + self.in_features:
            raise ValueError(
                f"DenseText expects MMSA's BERT layout with {self.in_features} feature rows, "
                f"[B, 3 + {self.in_features}, L]; got shape {tuple(text.shape)}. Build the "
                "input with pgm_mmsa.bert_layout(features, lengths)."
            )
        return self.act(self.linear(text[:, 3:, :].transpose(1, 2)))


def bert_layout(features: Tensor, lengths: Tensor | None = None) -> Tensor:
    """``[B, L, D]`` dense text -> ``[B, 3 + D, L]`` (ids 0, attention mask, segment 0, features).

    ``lengths`` (default: all ``L``) gives each sample's real positions, at the front.
    """
    b, n, _ = features.shape
    if lengths is None:
        lengths = torch.full((b,), n, dtype=torch.long)
    mask = (torch.arange(n)[None, :] < lengths.reshape(-1, 1).cpu()).to(features.dtype)
    zeros = torch.zeros(b, 1, n, dtype=features.dtype, device=features.device)
    return torch.cat(
        [zeros, mask.to(features.device)[:, None, :], zeros, features.transpose(1, 2)], dim=1
    )


class _NoPretrained:
    """Stands in for BertModel/BertTokenizer while MMSA builds a host: nothing is loaded."""

    @classmethod
    def from_pretrained(cls, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        return nn.Identity()


@contextlib.contextmanager
def _no_bert() -> Iterator[None]:
    import importlib

    table = importlib.import_module("MMSA.models.subNets.BertTextEncoder").TRANSFORMERS_MAP
    saved = dict(table)
    table.update({k: (_NoPretrained, _NoPretrained) for k in table})
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


def _check_kind(kind: str) -> str:
    kinds = list(KINDS.values())
    if kind not in kinds:
        import difflib

        near = difflib.get_close_matches(str(kind), kinds, n=1)
        raise ValueError(
            f"unknown MMSA host kind {kind!r}; supported: {', '.join(kinds)}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + "."
        )
    return kind


def _widths(widths: Mapping[str, int] | None) -> dict[str, int]:
    w = dict(MOSI_WIDTHS if widths is None else widths)
    if sorted(w) != sorted(MODALITIES) or not all(isinstance(v, int) and v > 0 for v in w.values()):
        raise ValueError(
            f"widths must give a positive int for each of {', '.join(MODALITIES)}; got {w!r}."
        )
    return {m: w[m] for m in MODALITIES}


def host_args(
    kind: str,
    widths: Mapping[str, int] | None = None,
    seq_len: int = 8,
    text_hidden: int = 128,
    dataset: str = "mosi",
) -> tuple[Any, list[str]]:
    """MMSA's config for ``kind`` with this package's changes, and the list of those changes."""
    kind, w = _check_kind(kind), _widths(widths)
    MMSA = import_mmsa()
    args = MMSA.get_config_regression(kind, dataset)
    changes = [
        "regression on +-1 labels (train_mode='regression', one output)",
        f"feature_dims {list(args.feature_dims)} -> {[w[m] for m in MODALITIES]}",
    ]
    args.train_mode = "regression"
    args.feature_dims = [w[m] for m in MODALITIES]
    pooled = kind in ("tfn", "lmf")
    args.seq_lens = [seq_len, 1 if pooled else seq_len, 1 if pooled else seq_len]
    changes.append(f"seq_lens -> {args.seq_lens}")
    if kind == "mult" and seq_len < 5:
        for c in "lav":
            args[f"conv1d_kernel_size_{c}"] = 1
        changes.append(f"conv1d_kernel_size_l/a/v 5 -> 1 (window {seq_len} < 5)")
    if pooled:
        changes.append("audio and vision given as one vector per sample ([B, 1, D], window mean)")
    if kind in TEXT_MODULE:
        changes.append(
            f"BERT ({args.pretrained}, 768 wide) replaced by DenseText: Linear({w['text']}, "
            f"{text_hidden}) + GELU on dense text features in MMSA's BERT input layout"
        )
        if kind == "self_mm":
            changes.append(f"text_out {args.text_out} -> {text_hidden}")
            args.text_out = text_hidden
        if kind == "mmim":
            args.feature_dims = [text_hidden, w["audio"], w["vision"]]
            changes.append(f"MMIM text width (feature_dims[0], d_tout) -> {text_hidden}")
        if kind == "misa":
            changes.append(f"project_t input 768 -> {text_hidden}")
    return args, changes


def build_host(
    kind: str,
    *,
    widths: Mapping[str, int] | None = None,
    seq_len: int = 8,
    text_hidden: int = 128,
    wrap: bool = True,
) -> nn.Module:
    """Build one MMSA host with random weights, offline.

    Args:
        kind: ``"mult"``, ``"misa"``, ``"self_mm"``, ``"tfn"``, ``"lmf"`` or ``"mmim"``.
        widths: input feature widths ``{"text", "audio", "vision"}`` (default MOSI's, 768/5/20).
        seq_len: window length (utterances or tokens) the host is built for.
        text_hidden: output width of :class:`DenseText` (MISA, Self-MM, MMIM).
        wrap: return MMSA's ``AMIO`` wrapper (layers under ``Model.``); False: the bare network.

    The returned model is in eval mode and carries :class:`HostInfo` as ``model.mmsa_host``.
    """
    args, changes = host_args(kind, widths, seq_len, text_hidden)
    from MMSA.models import AMIO

    w = _widths(widths)
    if kind in TEXT_MODULE:
        with _no_bert(), warnings.catch_warnings():
            # MISA's nn.TransformerEncoder(batch_first=False) warns at construction, by name
            warnings.filterwarnings(
                "ignore", message="enable_nested_tensor is True", category=UserWarning
            )
            amio = AMIO(args)
        net = amio.Model
        setattr(net, TEXT_MODULE[kind], DenseText(w["text"], text_hidden))
        if kind == "misa":
            net.project_t.project_t = nn.Linear(text_hidden, args.hidden_size)
    else:
        amio = AMIO(args)
        net = amio.Model
    info = HostInfo(
        kind,
        w,
        seq_len,
        text_hidden if kind in TEXT_MODULE else None,
        tuple(changes),
        PARTS[kind],
        json.loads(json.dumps(dict(args), default=str)),
    )
    model = amio if wrap else net
    model.mmsa_host = info  # type: ignore[assignment]
    return model.eval()


def host_info(model: nn.Module) -> HostInfo:
    """The :class:`HostInfo` a factory attached (``AMIO`` or bare)."""
    for m in (model, getattr(model, "Model", None)):
        info = getattr(m, "mmsa_host", None)
        if isinstance(info, HostInfo):
            return info
    raise ValueError(
        f"{type(model).__name__} was not built by pgm_mmsa.build_host, so its widths and "
        "changes are unknown; build it with pgm_mmsa.build_host(kind, widths=...)."
    )


def host_parts(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The host's parameters by part: ``text``, ``audio``, ``vision`` (each modality's encoder,
    up to the adapter's site), ``heads`` (modality-specific heads after the site, Self-MM) and
    ``fusion`` (everything else). Names are as in ``model.named_parameters()``; a PgM block's
    parameters (``pgm_*``) are left out. Every host parameter is in exactly one part."""
    from pgm_mmsa.adapters import _inner, host_kind

    kind = host_kind(model)
    if kind is None:
        raise ValueError(f"{type(model).__name__} is not an MMSA model.")
    net, prefix = _inner(model)
    parts: dict[str, list[tuple[str, nn.Parameter]]] = {k: [] for k in PARTS[kind]}
    parts["fusion"] = []
    for name, p in net.named_parameters():
        if name.startswith("pgm_"):
            continue
        part = next(
            (k for k, prefixes in PARTS[kind].items() if name.startswith(prefixes)), "fusion"
        )
        parts[part].append((prefix + name, p))
    return parts


# ---------------------------------------------------------------------- inputs
def _pool(x: Tensor, lengths: Tensor, order: str) -> Tensor:
    n = x.shape[1]
    pos = torch.arange(n)[None, :]
    lengths = lengths.reshape(-1, 1).cpu()
    valid = pos < lengths if order == "first" else pos >= n - lengths
    valid = valid.to(x.dtype).to(x.device)[:, :, None]
    return (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)


def host_inputs(
    kind: str, text: Tensor, audio: Tensor, vision: Tensor, lengths: Tensor | None = None
) -> tuple[Any, ...]:
    """The positional inputs of ``kind``'s forward from ``[B, L, D]`` windows.

    ``lengths`` counts each window's real steps: at the front for hosts whose
    :data:`WINDOW_ORDER` is ``"first"``, at the end for ``"last"``.
    """
    kind = _check_kind(kind)
    if lengths is None:
        lengths = torch.full((text.shape[0],), text.shape[1], dtype=torch.long)
    lengths = lengths.to(torch.long).cpu()
    if kind == "mult":
        return text, audio, vision
    if kind in ("tfn", "lmf"):
        return text, _pool(audio, lengths, "last"), _pool(vision, lengths, "last")
    bert = bert_layout(text, lengths)
    if kind == "misa":
        return bert, audio, vision
    return bert, (audio, lengths), (vision, lengths)


def example_inputs(
    kind: str,
    widths: Mapping[str, int] | None = None,
    seq_len: int = 8,
    batch: int = 4,
    seed: int = 0,
) -> tuple[Any, ...]:
    """Small random inputs for ``kind`` (full windows, no padding)."""
    w = _widths(widths)
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(batch, seq_len, w[m], generator=g) for m in MODALITIES}
    return host_inputs(kind, x["text"], x["audio"], x["vision"])


def labels_like(batch: int, seed: int = 0) -> Tensor:
    """Random +-1 labels, ``[B]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (batch,), generator=g).float() * 2 - 1
