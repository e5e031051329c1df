"""The bench host ``timm.av``: a timm image tower and a 1-D conv audio tower, late fusion.

For image x audio data such as ``av-digits``: ``image`` rows are square grey images flattened
(``[N, side * side]``, e.g. 784 = 28 x 28) and go through a timm tower (``timm:resnet18`` by
default, random weights, one input channel); ``audio`` rows are frame sequences ``[N, T, c]``
(MFCCs) and go through :class:`pgm_plugins.bench.hosts.AudioTower`. Each tower is projected to
``dim`` (``encoders.image`` / ``encoders.audio``, the PgM sites), the two are concatenated into
an MLP head. The recipe (AdamW, gradient clipping, parts and optimizer groups, loss) is the
late-fusion host's (:class:`pgm_plugins.bench.late_fusion.LateFusionRun`); only the encoders
and the batches differ. The same towers as ``benchmarks/av_digits_retrieval.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.hosts import AudioTower, EncoderFusion
from pgm_plugins.bench.late_fusion import LateFusionRun
from pgm_timm.hosts import create_tower, tower_width

__all__ = ["MODALITIES", "AvTowers", "AvTowersRun"]

MODALITIES = ("image", "audio")
DESCRIPTION = (
    "timm image tower (grey square images) + 1-D conv audio tower (frames), each projected to "
    "dim, concat -> MLP head; AdamW, clipping; blocks at the projections; options: tower, "
    "tower_options, dim"
)


class AvTowers(EncoderFusion):
    """``encoders.image`` (timm tower + linear), ``encoders.audio`` (conv tower + linear),
    ``head``; ``model(image=[B, 1, s, s], audio=[B, T, c])`` gives ``[B, out_dim]``."""

    def __init__(
        self,
        tower: str,
        audio_coeffs: int,
        dim: int,
        out_dim: int,
        tower_options: dict[str, Any] | None = None,
        audio_hidden: int = 128,
    ) -> None:
        super().__init__()
        image = create_tower(tower, **{"in_chans": 1, **(tower_options or {})})
        audio = AudioTower(audio_coeffs, audio_hidden)
        self.encoders = nn.ModuleDict(
            {
                "image": nn.Sequential(image, nn.Linear(tower_width(image), dim)),
                "audio": nn.Sequential(audio, nn.Linear(audio.width, dim)),
            }
        )
        self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, out_dim))


class AvTowersRun(LateFusionRun):
    """A :class:`~pgm_plugins.bench.bench_host.HostRun` of :class:`AvTowers`; the class is the
    registered factory (its keywords are the suite's ``host_options``)."""

    def __init__(
        self,
        data: BenchData,
        seed: int,
        modalities: tuple[str, ...],
        *,
        tower: str = "timm:resnet18",
        tower_options: dict[str, Any] | None = None,
        dim: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        clip: float = 5.0,
        batch: int = 100,
    ) -> None:
        shapes = {m: tuple(v.shape) for m, v in data.x.items()}
        need = "image [N, side * side] (flattened square grey images) and audio [N, T, c] (frames)"
        if any(m not in data.x for m in MODALITIES):
            raise ValueError(f"timm.av needs {need}; {data.name} has {shapes}.")
        if tuple(sorted(modalities)) != tuple(sorted(MODALITIES)):
            raise ValueError(
                f"timm.av takes the modalities {list(MODALITIES)} together; got "
                f"{list(modalities)}"
                + (
                    " (single modalities run under late_fusion)."
                    if set(modalities) < set(MODALITIES)
                    else f" ({data.name} has {shapes}; timm.av needs {need})."
                )
            )
        side = math.isqrt(data.x["image"].shape[-1])
        if data.x["image"].ndim != 2 or side * side != data.x["image"].shape[-1]:
            raise ValueError(
                f"timm.av: {data.name}'s image rows must be flattened square grey images "
                f"[N, side * side]; got shape {shapes['image']}."
            )
        if data.x["audio"].ndim != 3:
            raise ValueError(
                f"timm.av: {data.name}'s audio rows must be frame sequences [N, T, c]; got "
                f"shape {shapes['audio']}."
            )
        lengths = data.lengths.get("audio")
        frames = data.x["audio"].shape[1]
        if lengths is not None and (np.asarray(lengths) != frames).any():
            raise ValueError(
                f"timm.av pools its audio tower over every frame, but {data.name}'s audio is "
                f"padded (real frames {int(np.min(lengths))}-{int(np.max(lengths))} of {frames}); "
                "give every clip the same number of real frames (av-digits: frames=32, the "
                "default) or use late_fusion, which masks the padding."
            )
        self.side, self.tower = side, tower
        self.tower_options = dict(tower_options or {})
        super().__init__(
            data,
            seed,
            MODALITIES,
            hidden=dim,
            lr=lr,
            weight_decay=weight_decay,
            clip=clip,
            batch=batch,
        )
        del self.recipe["dropout"]
        self.recipe["dim"] = self.recipe.pop("hidden")
        self.recipe.update(tower=tower, tower_options=self.tower_options, image_side=side)
        self.changes = (f"image rows reshaped to [1, {side}, {side}]; {tower} random weights",)
        self._probe(data)

    def _probe(self, data: BenchData) -> None:
        """One eval forward of two rows, so a tower that cannot take the images fails here
        (when the runner plans the suite) and not in the first training step."""
        if len(data.y) == 0:
            return
        inputs, _, _ = next(self.batches(data, np.arange(min(2, len(data.y))), 2, None))
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(**inputs)
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise ValueError(
                f"timm.av: tower {self.tower!r} (options {self.tower_options}) cannot take "
                f"{data.name}'s [1, {self.side}, {self.side}] images: {exc}. Convolutional "
                "towers (timm:resnet18) take any size; a ViT needs tower_options with "
                f"img_size={self.side} and a patch_size that divides it."
            ) from exc
        finally:
            self.model.train(was)

    def _build(self, data: BenchData, hidden: int, out_dim: int, dropout: float) -> AvTowers:
        coeffs = int(data.x["audio"].shape[-1])
        return AvTowers(self.tower, coeffs, hidden, out_dim, self.tower_options)

    def arrays(self, data: BenchData) -> dict[str, np.ndarray]:
        """Every row's ``[1, side, side]`` image, ``[T, c]`` frames and target."""
        image = np.asarray(data.x["image"], dtype=np.float32)
        y = np.asarray(data.y)
        return {
            "x.image": image.reshape(-1, 1, self.side, self.side),
            "x.audio": np.asarray(data.x["audio"], dtype=np.float32),
            "y": y.astype(np.int64) if self.task == "classification" else y.astype(np.float32),
        }
