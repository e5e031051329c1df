"""MMSA's six hosts as bench hosts (``mmsa.mult``, ``mmsa.misa``, ``mmsa.self_mm``, ``mmsa.tfn``,
``mmsa.lmf``, ``mmsa.mmim``) for ``pgm bench run``: :func:`pgm_mmsa.build_host` trained by
:class:`pgm_mmsa.recipes.HostTrainer` (each host's own losses, optimizer groups, learning rates,
clipping and batch size from MMSA's config), on any ``BenchData`` with modalities ``text``,
``audio`` and optionally ``vision``.

- Labels: binary classification labels become +-1 and the hosts run as regression on them, as
  :mod:`pgm_mmsa` does; a prediction > 0 is class 1 (MMSA's Acc-2 / weighted F1). Regression
  targets are used as they are. Blocks get ``task="regression"`` so their heads learn the same
  targets as the host.
- Utterance data (every modality ``[N, d]``, e.g. MOSI ``clean``): each sample is a context
  window of the target utterance and up to ``window - 1`` preceding utterances of the same video
  (``extras["video"]`` and ``extras["position"]``), ordered for the host as
  :class:`pgm_mmsa.data.MosiUtterances` orders them (:data:`pgm_mmsa.hosts.WINDOW_ORDER`).
  Without those extras the window is the utterance alone (disclosed in ``changes``).
- Token data (``text`` ``[N, L, d]`` with ``lengths["text"]``, e.g. MOSI ``standard``): the host
  is built for ``L`` steps; one-vector modalities are repeated over the steps; a missing
  ``vision`` is a constant zero input of width 1 (disclosed in ``changes``).
- Devices: windows are built per batch on the CPU and moved to the run's device (their
  lengths stay on the CPU, where MMSA's ``pack_padded_sequence`` reads them); the runner owns
  the step (:meth:`MmsaRun.stages` gives :meth:`pgm_mmsa.recipes.HostTrainer.stages`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pgm_mmsa.adapters import KINDS
from pgm_mmsa.data import context_windows
from pgm_plugins.bench.bench_host import batch_rows, to_device
from pgm_plugins.bench.step import Stage

__all__ = ["DEFAULT_WINDOW", "MmsaRun", "bench_hosts"]

#: context window (utterances) of utterance data; the length pgm-mmsa's step-time benchmark uses
DEFAULT_WINDOW = 8


class MmsaRun:
    """A ``HostRun`` of one MMSA host (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        data: Any,
        seed: int,
        modalities: tuple[str, ...],
        *,
        window: int = DEFAULT_WINDOW,
        text_hidden: int = 128,
    ) -> None:
        from pgm_mmsa.hosts import WINDOW_ORDER, build_host, host_info

        self.kind = kind
        have = set(modalities)
        if not {"text", "audio"} <= have or not have <= {"text", "audio", "vision"}:
            raise ValueError(
                f"mmsa.{kind} takes modalities text, audio and (optionally) vision; "
                f"{data.name} ({data.protocol}) gives {list(modalities)}."
            )
        if data.task == "classification" and (data.num_classes or 2) != 2:
            raise ValueError(
                f"mmsa.{kind} runs as regression on +-1 labels, so it takes binary "
                f"classification or regression; {data.name} has {data.num_classes} classes."
            )
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}.")
        self.order = WINDOW_ORDER[kind]
        self.task = data.task
        self.modalities = tuple(m for m in ("text", "audio", "vision") if m in have)
        changes: list[str] = []
        text = data.x["text"]
        self.tokens = text.ndim == 3
        if self.tokens:
            seq_len = int(text.shape[1])
            for m in self.modalities[1:]:
                arr = data.x[m]
                if arr.ndim == 3 and arr.shape[1] != seq_len:
                    raise ValueError(
                        f"mmsa.{kind}: {m} has {arr.shape[1]} steps, text {seq_len}; sequence "
                        "modalities must share the text's steps."
                    )
                if arr.ndim == 2:
                    changes.append(f"{m} (one vector per sample) repeated over the text's steps")
            self.ctx = None
        else:
            if any(data.x[m].ndim != 2 for m in self.modalities):
                raise ValueError(
                    f"mmsa.{kind}: mixed shapes {data.summary()['shapes']}: give every modality "
                    "as [N, d] (utterances) or the text as [N, L, d] (tokens)."
                )
            video, position = data.extras.get("video"), data.extras.get("position")
            if video is None or position is None:
                window = 1
                changes.append("no video / position extras: each utterance alone (window 1)")
            seq_len = window
            self.ctx = context_windows(video, position, window) if window > 1 else None
            if window > 1:
                changes.append(
                    f"context window of {window} utterances of the same video (target "
                    f"{'last' if self.order == 'last' else 'first'})"
                )
        widths: dict[str, int] = {m: int(data.x[m].shape[-1]) for m in self.modalities}
        if "vision" not in widths:
            widths["vision"] = 1
            changes.append("no vision: a constant zero input of width 1")
        torch.manual_seed(seed)
        self.seed = seed
        self.model: nn.Module = build_host(
            kind, widths=widths, seq_len=seq_len, text_hidden=text_hidden
        )
        self.train_model: nn.Module = self.model  # the training forward (the runner's DDP)
        self.seq_len = seq_len
        self.sites: dict[str, str] | None = None  # the adapter's default sites
        self.info = host_info(self.model)
        self.cfg = self.info.config
        self.train_samples = len(data)
        self.block_config = {"task": "regression", "num_classes": None}
        self.trainer: Any = None
        self.device = torch.device("cpu")
        self._changes = tuple(self.info.changes) + tuple(changes)
        self.changes: tuple[str, ...] = self._changes
        self.recipe = {
            "batch": int(self.cfg.get("batch_size", 32)),
            "clip": self.cfg.get("grad_clip"),
            "lr": self.cfg.get("learning_rate", self.cfg.get("lr_main")),
            "optimizer": "Adam (MMSA's groups)",
            "window": seq_len,
            "text_hidden": text_hidden,
        }

    def parts(self) -> dict[str, list[nn.Parameter]]:
        from pgm_mmsa.hosts import host_parts

        parts = host_parts(self.model)
        out = {m: [p for _, p in parts.get(m, [])] for m in ("text", "audio", "vision")}
        out["fusion"] = [p for k in ("fusion", "heads") for _, p in parts.get(k, [])]
        return out

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.device = torch.device(device)

    def optimizers(
        self, handle: Any, lr_scale: dict[str, float] | None = None
    ) -> dict[str, torch.optim.Optimizer]:
        from pgm_mmsa.recipes import HostTrainer, _adam, host_param_groups

        self.trainer = HostTrainer(
            self.model, handle, train_samples=self.train_samples, init_seed=self.seed
        )
        self.changes = self._changes + tuple(
            c for c in self.trainer.changes if c not in self._changes
        )
        if lr_scale and any(v != 1.0 for v in lr_scale.values()):
            groups = host_param_groups(self.model)
            main_lr = groups[-1]["lr"]
            parts = self.parts()
            owner = {id(p): m for m in ("text", "audio", "vision") for p in parts[m]}
            split: list[dict[str, Any]] = []
            for g in groups:
                by: dict[str, list[nn.Parameter]] = {}
                for p in g["params"]:
                    by.setdefault(owner.get(id(p), "rest"), []).append(p)
                for part, params in by.items():
                    scale = lr_scale.get(part, 1.0) if part != "rest" else 1.0
                    split.append(
                        {**g, "name": f"{g.get('name', 'host')}.{part}", "params": params}
                        | {"lr": g["lr"] * scale}
                    )
            if handle is not None:
                split = handle.param_groups(base_lr=main_lr, host_groups=split)
            self.trainer.optimizer = _adam(split)
        return self.trainer.optimizers

    def _labels(self, y: np.ndarray) -> Tensor:
        if self.task == "classification":
            return torch.from_numpy(np.where(y > 0, 1.0, -1.0).astype(np.float32))
        return torch.from_numpy(y.astype(np.float32))

    def _inputs(self, data: Any, idx: np.ndarray) -> tuple[Any, ...]:
        from pgm_mmsa.hosts import host_inputs

        if self.tokens:
            n = self.seq_len
            lengths = torch.from_numpy(
                np.asarray(data.lengths.get("text", np.full(len(data), n)))[idx].astype(np.int64)
            )
            feats: dict[str, Tensor] = {}
            for m in self.modalities:
                arr = torch.from_numpy(np.ascontiguousarray(data.x[m][idx], dtype=np.float32))
                if arr.dim() == 2:
                    arr = arr[:, None, :].expand(-1, n, -1).contiguous()
                elif self.order == "last":  # real steps at the end
                    shift = (n - lengths).tolist()
                    arr = torch.stack(
                        [torch.roll(t, s, 0) for t, s in zip(arr, shift, strict=True)]
                    )
                feats[m] = arr
            vision = feats.get("vision", torch.zeros(len(idx), n, 1))
            return host_inputs(self.kind, feats["text"], feats["audio"], vision, lengths)
        # target last, -1 = padding on the left
        ctx = idx[:, None] if self.ctx is None else self.ctx[idx]
        lengths_np = (ctx >= 0).sum(1)
        if self.order == "first":  # target first, earlier utterances after, pad right
            ctx = np.stack([np.concatenate([r[r >= 0][::-1], r[r < 0]]) for r in ctx])
        real = (ctx >= 0)[:, :, None]
        safe = np.maximum(ctx, 0)
        x = {
            m: torch.from_numpy((data.x[m][safe] * real).astype(np.float32))
            for m in self.modalities
        }
        vision = x.get("vision", torch.zeros(len(idx), ctx.shape[1], 1))
        return host_inputs(self.kind, x["text"], x["audio"], vision, torch.from_numpy(lengths_np))

    def batches(
        self, data: Any, rows: np.ndarray, batch: int, rng: np.random.Generator | None
    ) -> Iterator[tuple[Any, Tensor, np.ndarray]]:
        for idx in batch_rows(rows, batch, rng):
            inputs, labels = self._inputs(data, idx), self._labels(data.y[idx])
            yield to_device(inputs, self.device, _is_lengths), labels.to(self.device), idx

    def stages(self, inputs: Any, targets: Tensor, rows: np.ndarray) -> Iterator[Stage]:
        if self.trainer is None:
            raise RuntimeError("MmsaRun: call optimizers() before stages().")
        self.trainer.train_model = self.train_model
        return self.trainer.stages(inputs, targets, torch.from_numpy(np.asarray(rows)))

    def predict(self, inputs: Any) -> Tensor:
        self.model.eval()
        with torch.no_grad():
            out = self.model(*inputs)
        return out["M"].reshape(-1)

    def next_epoch(self) -> None:
        if self.trainer is not None:
            self.trainer.next_epoch()


def _is_lengths(t: Tensor) -> bool:
    """Window lengths stay on the CPU (MMSA packs its sequences with them)."""
    return t.dim() == 1 and t.dtype == torch.long


def _factory(kind: str) -> Any:
    def factory(
        data: Any,
        seed: int,
        modalities: tuple[str, ...],
        *,
        window: int = DEFAULT_WINDOW,
        text_hidden: int = 128,
    ) -> MmsaRun:
        return MmsaRun(kind, data, seed, modalities, window=window, text_hidden=text_hidden)

    factory.__name__ = f"mmsa_{kind}"
    return factory


def bench_hosts() -> list[tuple[str, Any, str]]:
    """``(name, factory, description)`` of every MMSA bench host."""
    return [
        (
            f"mmsa.{kind}",
            _factory(kind),
            f"MMSA {kind.upper()} with its own recipe (HostTrainer), regression on +-1; "
            "options: window, text_hidden",
        )
        for kind in KINDS.values()
    ]
