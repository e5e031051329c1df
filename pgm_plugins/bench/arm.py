"""What an arm is: a method the bench compares against the host alone, as a frozen
:class:`ArmSpec` (registered through ``pgm_register_arms``) and, per trained setting of a cell, an
:class:`ArmRun` whose hooks the runner calls. Every hook defaults to doing nothing, so an arm
implements only what its method changes:

=====================  ==========================================================================
hook                   when the runner calls it, and what for
=====================  ==========================================================================
``block_factory()``    before training: a ``factory(config) -> nn.Module`` the engine injects at
                       the host's sites (PgM, a control, uni-modal heads), or None for none
``lr_scale()``         before the optimizers are built: per-part learning-rate scales
                       (``{modality: s}`` of the host's ``parts()``; MSLR)
``on_batch(x, y, r)``  before each training step, with the batch's inputs, targets and rows
                       (e.g. a teacher's forward on the same batch)
``aux_kwargs()``       per stage: keyword arguments of the block's ``aux_loss`` (e.g. the
                       teacher features of PgM guided by uni-modal training)
``losses(terms, s)``   per stage, after the forward: add, replace or drop loss terms
``backward(t, l, s)``  per stage: run backward yourself (return True), e.g. MMPareto's
                       per-loss gradients; default False (the stepper runs ``loss.backward()``)
``after_backward(s)``  per stage, after backward and before clipping (gradient surgery, noise)
``after_step(s)``      per stage, after the optimizer's step (OGM-GE scales a modality's step)
``predict(out, x)``    at evaluation: replace the host's prediction (UME's ensemble)
``after_epoch()``      after each training epoch (a method with per-epoch state)
``record()``           when the cell is written: what the arm adds under the record's ``arm``
=====================  ==========================================================================

A run sees its cell through :class:`ArmContext` (``self.ctx``) and, once the runner has built
and injected the host, the host run and the block's handle (``self.host``, ``self.handle``,
set by :meth:`ArmRun.attach`), and the frozen first stages its spec names
(``ArmSpec.first_stage``: ``self.first_stages[name]``, a
:class:`~pgm_plugins.bench.stages.FirstStage`, trained once per host, fold and seed and cached).
The spec declares the arm's settings grid (each setting one
training, the best chosen on validation: the grid's size is the arm's tuning budget, shown in
the report), the tasks it supports, and the PgM config changes that define it (they enter the
cell digest). docs/architecture.md says where arms go; the built-ins are in
:mod:`pgm_plugins.bench.arms`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from pgm_plugins.bench.step import Stage

__all__ = ["TASKS", "ArmContext", "ArmRun", "ArmSpec"]

#: the tasks an arm can declare (``ArmSpec.tasks``)
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class ArmContext:
    """What an arm's run knows of its cell: the modalities it trains on, the task, the setting
    of its grid this training uses, and the suite's options for the arm (``options``: the
    suite's ``[arm_options.<name>]`` table)."""

    arm: str
    host: str
    modalities: tuple[str, ...]
    task: str
    num_classes: int | None
    seed: int
    setting: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


class ArmRun:
    """One training of an arm in one cell; subclass and override the hooks your method needs
    (the module docstring's table). ``self.host`` and ``self.handle`` are set by
    :meth:`attach` before the optimizers are built."""

    def __init__(self, ctx: ArmContext) -> None:
        self.ctx = ctx
        self.host: Any = None
        self.handle: Any = None
        #: first stage arm name -> its frozen model (:class:`pgm_plugins.bench.stages.FirstStage`)
        self.first_stages: dict[str, Any] = {}

    def attach(self, host: Any, handle: Any) -> None:
        """Called once the host is built, its block (if any) injected and moved to its device."""
        self.host, self.handle = host, handle

    def block_factory(self) -> Callable[[Any], nn.Module] | None:
        return None

    def lr_scale(self) -> dict[str, float] | None:
        return None

    def on_batch(self, inputs: Any, targets: Tensor, rows: Any) -> None:
        return None

    def aux_kwargs(self) -> dict[str, Any]:
        return {}

    def losses(self, terms: dict[str, Tensor], stage: Stage) -> dict[str, Tensor]:
        return terms

    def backward(self, terms: Mapping[str, Tensor], loss: Tensor, stage: Stage) -> bool:
        return False

    def after_backward(self, stage: Stage) -> None:
        return None

    def after_step(self, stage: Stage) -> None:
        return None

    def predict(self, outputs: Tensor, inputs: Any) -> Tensor:
        return outputs

    def after_epoch(self) -> None:
        return None

    def record(self) -> dict[str, Any]:
        return {}


def _one_setting(ctx: ArmContext) -> list[dict[str, Any]]:
    return [{}]


@dataclass(frozen=True)
class ArmSpec:
    """An arm as registered: ``register(ArmSpec(...))`` in ``pgm_register_arms``.

    Attributes:
        name: lower case, dotted by family (``"mine.ogm"``); ``only.<modality>`` is reserved.
        description: one line for ``pgm bench list`` and reports.
        make: ``make(ctx) -> ArmRun`` per training (default: the host alone, no hook).
        kind: a short word reports group by (``host``, ``pgm``, ``control``, ``method``, ...).
        paper: the method's source, cited in reports.
        settings: ``settings(ctx) -> list of settings`` (each a JSON-ready dict, ``{}`` for the
            defaults); one training per setting, the best on validation kept. ``ctx.setting``
            is empty when it is called.
        tasks: the tasks it supports; a suite pairing it with another task is refused.
        changes: what defines the arm beyond its code (e.g. ``PgMConfig`` changes); recorded
            and part of the cell digest.
        block: whether it injects a module at the sites (the suite's ``[block]`` settings and
            the block defaults then enter the cell digest).
        modality: train on this modality alone (the ``only.<m>`` arms).
        first_stage: the arm whose trained model this arm reuses, frozen (trained first, once
            per host, fold and seed; see :mod:`pgm_plugins.bench.stages`).
    """

    name: str
    description: str
    make: Callable[[ArmContext], ArmRun] = ArmRun
    kind: str = "method"
    paper: str = ""
    settings: Callable[[ArmContext], list[dict[str, Any]]] = _one_setting
    tasks: tuple[str, ...] = TASKS
    changes: Mapping[str, Any] = field(default_factory=dict)
    block: bool = False
    modality: str | None = None
    first_stage: str | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(
                f"arm {self.name!r}: tasks must be a non-empty subset of {list(TASKS)}; "
                f"got {list(self.tasks)}."
            )
        if not callable(self.make) or not callable(self.settings):
            raise ValueError(f"arm {self.name!r}: make and settings must be callables.")

    def grid(self, ctx: ArmContext) -> list[dict[str, Any]]:
        """The settings this arm tries in a cell (checked: a non-empty list of dicts)."""
        got = self.settings(ctx)
        if not isinstance(got, list) or not got or not all(isinstance(s, dict) for s in got):
            raise ValueError(
                f"arm {self.name!r}: settings() must return a non-empty list of dicts; got {got!r}."
            )
        return got
