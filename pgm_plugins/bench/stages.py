"""First stages: a model trained once per (host, fold, seed) and reused, frozen, by later arms.

An arm declares ``ArmSpec(first_stage="ume", ...)``: before its cells, the runner trains the
cell of arm ``ume`` (same host, fold and seed) as a prerequisite
(:class:`~pgm_plugins.bench.prerequisites.Prerequisite`, built once and cached under
``<folder>/artifacts/<digest>/``: ``model.pt``, the model with its block at the best epoch, and
``record.json``, that training's record); each training of the arm then gets it as a
:class:`FirstStage` in ``ArmRun.first_stages["ume"]``: the host rebuilt from the cell's seed,
the first stage's block injected, the trained weights loaded, moved to the run's device, in
eval mode and frozen. ``features(inputs)`` gives its site features (what a teacher passes on:
uni-modal teachers, PgM guided by uni-modal training), ``predict(inputs)`` its predictions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["MODEL_FILE", "RECORD_FILE", "FirstStage", "build_first_stage"]

MODEL_FILE = "model.pt"
RECORD_FILE = "record.json"


@dataclass
class FirstStage:
    """A frozen first-stage model (see the module docstring)."""

    arm: str
    run: Any  #: the host run, its model loaded with the first stage's weights
    handle: Any  #: the first stage's block handle (its features are the block's inputs)
    record: dict[str, Any] = field(default_factory=dict)
    _seen: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run.model.eval()
        self.run.model.requires_grad_(False)
        self.handle.block.register_forward_hook(self._tap, with_kwargs=True)

    def _tap(self, module: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
        inputs = args[0] if args else kwargs.get("inputs")
        if isinstance(inputs, Mapping):
            self._seen = {m: t.detach() for m, t in inputs.items()}

    @torch.no_grad()
    def features(self, inputs: Any) -> dict[str, Tensor]:
        """The site features of one eval forward on ``inputs`` (``[B, d]`` or ``[B, T, d]`` per
        modality, as the sites give them)."""
        self._seen = {}
        self.run.predict(inputs)
        if not self._seen:
            raise RuntimeError(
                f"first stage {self.arm!r}: its forward did not reach its block's sites."
            )
        return dict(self._seen)

    @torch.no_grad()
    def predict(self, inputs: Any) -> Tensor:
        return self.run.predict(inputs)


def build_first_stage(runner: Any, prerequisite: Any, out: Path) -> None:
    """Prerequisite build function: train the first stage's cell (``prerequisite.key``) and
    write its best model (``model.pt``) and record (``record.json``) into ``out``."""
    from pgm_plugins.bench.runner import Cell

    key = prerequisite.key
    cell = Cell(key["dataset"], key["protocol"], key["host"], key["arm"], key["fold"], key["seed"])
    out = Path(out)
    record = runner.run_cell(cell, save_model=out / MODEL_FILE)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
